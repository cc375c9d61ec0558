#include "tests/testing/witness_vm.h"

#include "absl/strings/str_format.h"
#include "guests/common/witness_abi.h"

namespace vexstate::testing {

v1::VmConfig WitnessConfig(const WitnessOptions& options) {
  v1::VmConfig config;
  config.set_name(options.name);
#if defined(__aarch64__)
  config.set_arch(v1::ARCH_ARM64);
#else
  config.set_arch(v1::ARCH_X86_64);
#endif
  config.set_vcpu_count(options.vcpus);
  config.set_memory_bytes(options.memory_bytes);
  config.mutable_guest()->set_bundled("witness");
  config.set_mce_banks(options.mce_banks);
  return config;
}

absl::Status WitnessVm::WriteControl(uint64_t offset, uint64_t value) {
  return vm_->memory().WriteU64(vm_->memory().base_gpa() + VEX_CONTROL_OFFSET + offset, value);
}

absl::StatusOr<uint64_t> WitnessVm::ReadControl(uint64_t offset) const {
  return vm_->memory().ReadU64(vm_->memory().base_gpa() + VEX_CONTROL_OFFSET + offset);
}

absl::StatusOr<std::unique_ptr<WitnessVm>> WitnessVm::Boot(const WitnessOptions& options,
                                                           absl::Duration ready_timeout) {
  std::unique_ptr<WitnessVm> w(new WitnessVm());
  w->console_ = std::make_unique<WitnessConsole>();
  absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Create(WitnessConfig(options), WitnessImage(), w->console_.get());
  if (!vm.ok()) return vm.status();
  w->vm_ = std::move(*vm);
  const std::pair<uint64_t, uint64_t> control[] = {
      {VEX_CTL_HOLD_MASK, options.hold_mask},
      {VEX_CTL_HEARTBEAT_MS, options.heartbeat_ms},
      {VEX_CTL_TSC_KHZ, w->vm_->host().tsc_khz()},
      {VEX_CTL_WORKSET_PAGES, options.workset_pages},
      {VEX_CTL_DIRTY_PAGES_PER_SEC, options.dirty_pages_per_sec},
      // Magic last: the guest uses the fields only once it sees it.
      {VEX_CTL_MAGIC, VEX_CTL_MAGIC_VALUE},
  };
  for (const auto& [offset, value] : control) {
    if (absl::Status s = w->WriteControl(offset, value); !s.ok()) return s;
  }
  if (absl::Status s = w->vm_->Resume(); !s.ok()) return s;
  for (uint32_t cpu = 0; cpu < options.vcpus; ++cpu) {
    absl::StatusOr<std::vector<WitnessReport>> ready = w->console_->WaitFor("READY", cpu, {}, 1, ready_timeout);
    if (!ready.ok()) {
      return absl::Status(ready.status().code(),
                          absl::StrFormat("witness vCPU %u never became ready: %s", cpu, ready.status().message()));
    }
  }
  return w;
}

absl::StatusOr<std::unique_ptr<WitnessVm>> WitnessVm::Restore(const v1::Snapshot& snapshot,
                                                              const RestorePolicy& policy, RestoreReport* report) {
  std::unique_ptr<WitnessVm> w(new WitnessVm());
  w->console_ = std::make_unique<WitnessConsole>();
  absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Restore(snapshot, policy, w->console_.get(), report);
  if (!vm.ok()) return vm.status();
  w->vm_ = std::move(*vm);
  return w;
}

}  // namespace vexstate::testing
