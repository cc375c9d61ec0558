// Expectation files of the snapshot replay corpus: what a restored witness guest must report
// after it resumes, and what the replay must do to the guest's control block first.
// The format is documented for people in tests/data/snapshots/README.md; in short:
//
//   # comment (and blank lines) are ignored
//   control hold_mask=0               a control-block write made after the restore, before
//                                     the first resume (fields: see kControlFields)
//   VEX EXC cpu=0 seq=2 vec=0x2       one expected guest report: the kind and the fields the
//                                     report must carry with exactly these values (the guest's
//                                     line may have more fields; those are not compared)
//
// Report lines use the guest's own syntax (guests/common/witness_abi.h): hex with 0x, else
// decimal. `cpu=` is required: it names the vCPU whose console must carry the report.
//
// Matching is exact: per vCPU, the guest's reports after resume, in order, must correspond
// one to one to that vCPU's expected lines, in order. A missing report, an extra one (a
// duplicate delivery included), another kind or a different value all fail. The order
// between vCPUs is not compared (they run concurrently).
#ifndef VEXSTATE_TESTS_REPLAY_EXPECTATION_H_
#define VEXSTATE_TESTS_REPLAY_EXPECTATION_H_

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vmm/devices/witness_console.h"

namespace vexstate::replay {

struct ControlWrite {
  std::string field;    // e.g. "hold_mask"
  uint64_t offset = 0;  // VEX_CTL_* byte offset in the control block
  uint64_t value = 0;
};

struct ExpectedReport {
  uint32_t vcpu = 0;
  std::string kind;  // "EXC", "MCE", "MCB", ...
  // In the order written; `cpu` is not among them (it is `vcpu`).
  std::vector<std::pair<std::string, uint64_t>> fields;
  int line = 0;  // in the file it came from (0 when built in code)

  // "VEX <kind> cpu=<vcpu> <fields>", values formatted as the guest formats them.
  std::string ToLine() const;
};

struct Expectation {
  // Comment lines written at the top of the file (without the "# ").
  std::vector<std::string> comments;
  std::vector<ControlWrite> controls;
  std::vector<ExpectedReport> reports;
};

// The control-block fields a `control` line may write, by name.
struct ControlField {
  const char* name;
  uint64_t offset;
};
extern const ControlField kControlFields[2];

// A control write by field name; INVALID_ARGUMENT for a name not in kControlFields.
absl::StatusOr<ControlWrite> MakeControlWrite(absl::string_view field, uint64_t value);

// Parses an expectation file. Errors are INVALID_ARGUMENT naming `source` and the line.
absl::StatusOr<Expectation> ParseExpectation(absl::string_view text, absl::string_view source);

// The text of an expectation file (ParseExpectation(FormatExpectation(e)) gives e back).
std::string FormatExpectation(const Expectation& expectation);

// OK if `reports` match `expectation.reports` exactly (see above); otherwise FAILED_PRECONDITION
// whose message lists, per vCPU that differs, the expected lines and the guest's lines.
absl::Status MatchReports(const Expectation& expectation, const std::vector<WitnessReport>& reports);

}  // namespace vexstate::replay

#endif  // VEXSTATE_TESTS_REPLAY_EXPECTATION_H_
