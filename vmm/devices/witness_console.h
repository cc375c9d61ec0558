// WitnessConsole: the host side of the witness guests' report channel
// (guests/common/witness_abi.h). It turns the bytes a guest writes into reports
// ("VEX EXC cpu=0 seq=1 vec=0x12 ...") and lets a caller wait for them.
//
// It is also an ExitHandler, so a VM can use it as its only device: COM1's data port (x86)
// and the console MMIO byte (arm64) feed it; reading COM1's line-status register says
// "transmitter empty" so a guest that polls it never waits; everything else reads as zero.
//
// Thread-safety: every method is thread-safe; OnPortIo/OnMmio are called by vCPU threads.
#ifndef VEXSTATE_VMM_DEVICES_WITNESS_CONSOLE_H_
#define VEXSTATE_VMM_DEVICES_WITNESS_CONSOLE_H_

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "vmm/exit_handler.h"

namespace vexstate {

struct WitnessReport {
  uint32_t vcpu = 0;  // the vCPU whose console bytes formed the line
  std::string kind;   // "EXC", "MCE", "MCB", "SERROR", ...
  std::map<std::string, uint64_t> fields;
  std::string line;   // the raw text, for messages
  absl::Time time;

  // The field's value, or `fallback` when absent.
  uint64_t Get(const std::string& key, uint64_t fallback = ~0ull) const;
  bool Has(const std::string& key) const { return fields.count(key) != 0; }
};

// Parses one line ("VEX KIND k=v ..."; hex with 0x, else decimal). INVALID_ARGUMENT if the
// line is not a report.
absl::Status ParseWitnessLine(const std::string& line, WitnessReport* report);

class WitnessConsole : public ExitHandler {
 public:
  using Listener = std::function<void(const WitnessReport&)>;

  // `listener` (optional) sees every report as it is parsed, on the vCPU thread.
  explicit WitnessConsole(Listener listener = nullptr) : listener_(std::move(listener)) {}

  void OnPortIo(uint32_t vcpu, uint16_t port, bool is_write, uint8_t* data, uint32_t size) override;
  void OnMmio(uint32_t vcpu, uint64_t gpa, bool is_write, uint8_t* data, uint32_t len) override;
  void OnVcpuStopped(uint32_t vcpu, const absl::Status& reason) override;

  // Feeds one console byte as if vCPU `vcpu` wrote it.
  void OnByte(uint32_t vcpu, uint8_t byte);

  std::vector<WitnessReport> Reports() const;
  // Reports of `kind` (from `vcpu`, if given), optionally filtered by field values.
  std::vector<WitnessReport> Find(const std::string& kind, std::optional<uint32_t> vcpu = std::nullopt,
                                  const std::map<std::string, uint64_t>& match = {}) const;
  // Waits until Find(kind, vcpu, match) has at least `count` reports. Returns them, or
  // DEADLINE_EXCEEDED listing the last lines seen, or the stop reason if a vCPU stopped with
  // an error while waiting.
  absl::StatusOr<std::vector<WitnessReport>> WaitFor(const std::string& kind, std::optional<uint32_t> vcpu,
                                                     const std::map<std::string, uint64_t>& match, size_t count,
                                                     absl::Duration timeout) const;
  uint64_t heartbeats() const;
  // When the first / latest heartbeat tick arrived (host clock): a migration's guest-visible
  // gap is the destination's first minus the source's last.
  std::optional<absl::Time> first_heartbeat() const;
  std::optional<absl::Time> last_heartbeat() const;
  // The newest bytes written (at least the last kTranscriptBytes), for logs and failure messages.
  static constexpr size_t kTranscriptBytes = 64 << 10;
  std::string Transcript() const;
  // A vCPU that stopped with an error (guest shutdown, emulation failure...), if any.
  absl::Status vcpu_error() const;

 private:
  Listener listener_;
  mutable absl::Mutex mu_;
  std::map<uint32_t, std::string> partial_ ABSL_GUARDED_BY(mu_);
  std::vector<WitnessReport> reports_ ABSL_GUARDED_BY(mu_);
  std::string transcript_ ABSL_GUARDED_BY(mu_);
  uint64_t heartbeats_ ABSL_GUARDED_BY(mu_) = 0;
  std::optional<absl::Time> first_heartbeat_ ABSL_GUARDED_BY(mu_);
  std::optional<absl::Time> last_heartbeat_ ABSL_GUARDED_BY(mu_);
  absl::Status vcpu_error_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vexstate

#endif  // VEXSTATE_VMM_DEVICES_WITNESS_CONSOLE_H_
