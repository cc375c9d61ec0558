// WitnessVm: a Vm running the bundled witness guest, with its console, for tests and demos.
//
// Boot() creates the VM, writes the control block (guests/common/witness_abi.h), runs it and
// waits until every vCPU reported READY. Restore() builds one from a snapshot (paused, so a
// test can edit memory — e.g. release a hold — before Resume()).
#ifndef VEXSTATE_TESTS_TESTING_WITNESS_VM_H_
#define VEXSTATE_TESTS_TESTING_WITNESS_VM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "vexstate/v1/snapshot.pb.h"
#include "vmm/devices/witness_console.h"
#include "vmm/vm.h"

namespace vexstate::testing {

struct WitnessOptions {
  std::string name = "witness";
  uint32_t vcpus = 1;
  uint64_t memory_bytes = 16ull << 20;
  uint64_t hold_mask = 0;
  uint64_t heartbeat_ms = 0;
  uint64_t workset_pages = 0;
  uint64_t dirty_pages_per_sec = 0;
  uint32_t mce_banks = 0;  // 0: all the host offers
};

// The bundled witness guest for this build's arch.
absl::Span<const uint8_t> WitnessImage();
v1::VmConfig WitnessConfig(const WitnessOptions& options);

class WitnessVm {
 public:
  static absl::StatusOr<std::unique_ptr<WitnessVm>> Boot(const WitnessOptions& options,
                                                         absl::Duration ready_timeout = absl::Seconds(20));
  static absl::StatusOr<std::unique_ptr<WitnessVm>> Restore(const v1::Snapshot& snapshot,
                                                            const RestorePolicy& policy = {},
                                                            RestoreReport* report = nullptr);

  Vm& vm() { return *vm_; }
  WitnessConsole& console() { return *console_; }
  // Writes one u64 of the control block (offset: VEX_CTL_*).
  absl::Status WriteControl(uint64_t offset, uint64_t value);
  absl::StatusOr<uint64_t> ReadControl(uint64_t offset) const;

 private:
  WitnessVm() = default;
  // Declared first, destroyed last: the vCPU threads of vm_ write into it until they stop.
  std::unique_ptr<WitnessConsole> console_;
  std::unique_ptr<Vm> vm_;
};

}  // namespace vexstate::testing

#endif  // VEXSTATE_TESTS_TESTING_WITNESS_VM_H_
