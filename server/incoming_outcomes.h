// IncomingOutcomes: this host's final word on each incoming migration it settled, on disk, so
// that a source asking (Finish, QueryIncoming) after either vexd restarted gets the answer this
// host gave instead of "unknown".
//
// One file per migration: <state_dir>/migrations/<id>.outcome, a FinishResponse (binary proto),
// written atomically (atomic_file.h). FAILED is written when an incoming VM that never ran is
// discarded, BEFORE its record is removed: without the record and this file, nobody could tell
// a discarded copy from one never heard of. COMPLETED is written when the VM runs here. Files
// are kept (a few bytes each): an orchestrator may ask long after.
//
// Migration ids name files: 1 to 64 characters of [0-9A-Za-z_-] (the source's ids are 16 hex
// digits).
//
// Thread-safety: const methods are thread-safe; writes of one id are the caller's to serialise
// (vexd writes an id's outcome under its VM's lock).
#ifndef VEXSTATE_SERVER_INCOMING_OUTCOMES_H_
#define VEXSTATE_SERVER_INCOMING_OUTCOMES_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "vexstate/v1/migration.pb.h"

namespace vexstate::vexd {

class IncomingOutcomes {
 public:
  explicit IncomingOutcomes(std::string dir) : dir_(std::move(dir)) {}

  // INVALID_ARGUMENT naming the offending character or length.
  static absl::Status ValidateId(absl::string_view id);

  // Makes `outcome` the final answer for migration `id` (the directory is created if needed).
  absl::Status Record(const std::string& id, const v1::FinishResponse& outcome) const;
  // The recorded answer; nullopt when none (or `id` is not a valid id).
  std::optional<v1::FinishResponse> Find(const std::string& id) const;

 private:
  std::string PathOf(const std::string& id) const { return dir_ + "/" + id + ".outcome"; }
  const std::string dir_;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_INCOMING_OUTCOMES_H_
