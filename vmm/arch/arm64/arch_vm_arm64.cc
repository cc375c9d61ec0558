// The arm64 ArchVm: VM and vCPU setup on KVM, flat-binary boot, the capability
// probe, and delegation to the state (vcpu_state.h) and injection (inject.h)
// modules.
//
// A VM here has no in-kernel GIC and no devices but what the ExitHandler serves
// through MMIO exits: the witness guests need nothing else (they poll; they
// never wait for an interrupt).
#include <sys/utsname.h>

#include <algorithm>
#include <cstring>

#include "absl/strings/str_format.h"
#include "vmm/arch/arch_vm.h"
#include "vmm/arch/arm64/boot.h"
#include "vmm/arch/arm64/inject.h"
#include "vmm/arch/arm64/vcpu_state.h"

namespace vexstate {

namespace {

// KVM_CREATE_VM's type 0 means a 40-bit IPA space (api.rst "KVM_CREATE_VM",
// Arm64: "0 - Implies default size, 40bits (for backward compatibility)"),
// which KVM refuses on a host whose limit is lower; there the host's limit is
// asked for explicitly (KVM_VM_TYPE_ARM_IPA_SIZE). 0 from
// KVM_CAP_ARM_VM_IPA_SIZE: a kernel that predates the capability, where 40
// bits is all there is.
constexpr uint32_t kDefaultIpaBits = 40;

unsigned long VmTypeFor(uint32_t host_ipa_bits) {
  if (host_ipa_bits == 0 || host_ipa_bits >= kDefaultIpaBits) return 0;
  return KVM_VM_TYPE_ARM_IPA_SIZE(host_ipa_bits);
}

// Bits of IPA needed to address [0, end).
uint32_t BitsFor(uint64_t end) {
  uint32_t bits = 0;
  while (bits < 64 && (uint64_t{1} << bits) < end) ++bits;
  return bits;
}

arm64::SerrorCaps CapsOf(const v1::HostCapabilities& host) {
  arm64::SerrorCaps caps;
  caps.inject_serror_esr = host.arm_inject_serror_esr();
  caps.inject_ext_dabt = host.arm_inject_ext_dabt();
  return caps;
}

class Arm64ArchVm : public ArchVm {
 public:
  Arm64ArchVm(const v1::HostCapabilities& host, const v1::VmConfig& config)
      : host_(host), config_(config) {}

  v1::Arch arch() const override { return v1::ARCH_ARM64; }
  uint64_t ram_base() const override { return kRamBase; }
  unsigned long vm_type() const override {
    return VmTypeFor(host_.arm_ipa_size());
  }

  absl::Status SetUpVm(kvm::VmFd& vm) override {
    const uint32_t ipa_bits =
        host_.arm_ipa_size() == 0
            ? kDefaultIpaBits
            : std::min(host_.arm_ipa_size(), kDefaultIpaBits);
    const uint64_t ram_end = kRamBase + config_.memory_bytes();
    if (BitsFor(ram_end) > ipa_bits) {
      return absl::FailedPreconditionError(
          absl::StrFormat("guest RAM ends at 0x%x, beyond this VM's %u-bit IPA "
                          "space (KVM_CAP_ARM_VM_IPA_SIZE %u)",
                          ram_end, ipa_bits, host_.arm_ipa_size()));
    }
    // The target KVM wants for this host's CPU (api.rst
    // "KVM_ARM_PREFERRED_TARGET"); any other makes KVM_ARM_VCPU_INIT fail.
    kvm_vcpu_init init = {};
    if (absl::Status s = vm.ArmPreferredTarget(&init); !s.ok()) return s;
    std::memset(init.features, 0, sizeof(init.features));
    // PSCI 0.2 (api.rst "KVM_ARM_VCPU_INIT": KVM_ARM_VCPU_PSCI_0_2): the guest
    // may power off or reset through SMCCC calls, which KVM turns into
    // KVM_EXIT_SYSTEM_EVENT. No vCPU starts powered off
    // (KVM_ARM_VCPU_POWER_OFF): the witness guests start every vCPU at once.
    init.features[0] |= 1u << KVM_ARM_VCPU_PSCI_0_2;
    init_ = init;
    return absl::OkStatus();
  }

  absl::Status SetUpVcpu(kvm::VmFd&, kvm::VcpuFd& vcpu) override {
    if (absl::Status s = vcpu.ArmVcpuInit(init_); !s.ok()) {
      return absl::Status(
          s.code(), absl::StrFormat("vCPU %u: target %u, features[0] 0x%x: %s",
                                    vcpu.index(), init_.target,
                                    init_.features[0], s.message()));
    }
    return absl::OkStatus();
  }

  absl::Status FinishSetUp(kvm::VmFd&,
                           absl::Span<kvm::VcpuFd* const> vcpus) override {
    absl::StatusOr<arm64::VcpuStateContext> context =
        arm64::ProbeVcpuStateContext(*vcpus[0], init_, CapsOf(host_));
    if (!context.ok()) return context.status();
    context_ = std::move(*context);
    return absl::OkStatus();
  }

  absl::Status Boot(GuestMemory& memory, absl::Span<const uint8_t> image,
                    absl::Span<kvm::VcpuFd* const> vcpus) override {
    absl::StatusOr<uint64_t> entry = arm64::LoadFlatImage(image, memory);
    if (!entry.ok()) return entry.status();
    for (kvm::VcpuFd* vcpu : vcpus) {
      if (absl::Status s = arm64::SetEntryState(*vcpu, *entry); !s.ok())
        return s;
    }
    return absl::OkStatus();
  }

  // Everything that can be judged from the snapshot and this host's
  // capabilities, before a VM exists. What needs a vCPU (the register list) is
  // checked by RestoreVcpuRegisters, still before any register is written.
  absl::Status CheckRestorable(const v1::Snapshot& snapshot,
                               const RestorePolicy& policy,
                               RestoreReport* report) const override {
    const arm64::SerrorCaps caps = CapsOf(host_);
    for (const v1::VcpuState& vcpu : snapshot.vcpus()) {
      if (!vcpu.has_arm64()) {
        return absl::FailedPreconditionError(
            absl::StrFormat("vCPU %u state is not arm64", vcpu.index()));
      }
      if (vcpu.arm64().target() != host_.arm_preferred_target()) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "vCPU %u was captured on a host whose KVM target is %u; this "
            "host's is %u (KVM_ARM_PREFERRED_TARGET)",
            vcpu.index(), vcpu.arm64().target(), host_.arm_preferred_target()));
      }
      if (policy.skip_exception_state) continue;
      if (vcpu.exception().arch_case() != v1::VcpuExceptionState::kArm64 &&
          vcpu.exception().arch_case() !=
              v1::VcpuExceptionState::ARCH_NOT_SET) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "vCPU %u exception state is not arm64", vcpu.index()));
      }
      // Against a fresh vCPU (nothing pending): the same rules
      // RestoreExceptionState applies.
      absl::StatusOr<arm64::ExceptionRestorePlan> plan =
          arm64::PlanExceptionRestore(vcpu.exception().arm64(),
                                      arm64::SerrorEvents{}, caps,
                                      policy.allow_degrade, vcpu.index());
      if (!plan.ok()) return plan.status();
      if (!plan->degradation.empty())
        report->degradations.push_back(plan->degradation);
    }
    return absl::OkStatus();
  }

  absl::StatusOr<v1::VmState> CaptureVm(kvm::VmFd&) override {
    v1::VmState out;
    out.mutable_arm64();  // no VM-wide state: no in-kernel GIC, no devices
    return out;
  }

  absl::Status RestoreVm(kvm::VmFd&, const v1::VmState& state) override {
    if (state.arch_case() != v1::VmState::kArm64 &&
        state.arch_case() != v1::VmState::ARCH_NOT_SET) {
      return absl::FailedPreconditionError("VM state is not arm64");
    }
    return absl::OkStatus();
  }

  absl::StatusOr<v1::VcpuState> CaptureVcpu(kvm::VcpuFd& vcpu) override {
    return arm64::CaptureVcpu(vcpu, context_);
  }

  absl::StatusOr<v1::VcpuExceptionState> CaptureExceptionState(
      kvm::VcpuFd& vcpu) override {
    absl::StatusOr<v1::Arm64ExceptionState> state =
        arm64::CaptureExceptionState(vcpu, context_);
    if (!state.ok()) return state.status();
    v1::VcpuExceptionState out;
    out.set_vcpu_index(vcpu.index());
    *out.mutable_arm64() = std::move(*state);
    return out;
  }

  absl::Status RestoreVcpuRegisters(kvm::VcpuFd& vcpu,
                                    const v1::VcpuState& state) override {
    return arm64::RestoreVcpuRegisters(vcpu, state, context_);
  }

  absl::Status RestoreExceptionState(kvm::VcpuFd& vcpu,
                                     const v1::VcpuExceptionState& state,
                                     const RestorePolicy& policy) override {
    if (policy.skip_exception_state) return absl::OkStatus();
    if (!state.has_arm64()) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "vCPU %u: exception state is not arm64", vcpu.index()));
    }
    return arm64::RestoreExceptionState(vcpu, state.arm64(), context_,
                                        policy.allow_degrade);
  }

  absl::Status InjectException(kvm::VcpuFd&, const ExceptionRequest&) override {
    return absl::UnimplementedError(
        "x86 exception vectors do not exist on arm64 (inject an SError or an "
        "external abort)");
  }
  absl::Status InjectNmi(kvm::VcpuFd&, const NmiRequest&) override {
    return absl::UnimplementedError(
        "NMI is an x86_64 interrupt; this VM is arm64");
  }
  absl::Status InjectMachineCheck(kvm::VcpuFd&,
                                  const MachineCheckRequest&) override {
    return absl::UnimplementedError(
        "machine check is an x86_64 exception; this VM is arm64 (inject an "
        "SError)");
  }
  absl::Status InjectSError(kvm::VcpuFd& vcpu,
                            const SErrorRequest& request) override {
    return arm64::InjectSError(vcpu, request, CapsOf(host_));
  }
  absl::Status InjectExternalAbort(
      kvm::VcpuFd& vcpu, const ExternalAbortRequest& request) override {
    return arm64::InjectExternalAbort(vcpu, request, CapsOf(host_));
  }

 private:
  // Guest RAM starts at 1 GiB, as on QEMU's virt machine
  // (guests/common/witness_abi.h VEX_ARM64_RAM_BASE); below it sit the MMIO
  // devices (the console at 0x09000000).
  static constexpr uint64_t kRamBase = 0x40000000;

  const v1::HostCapabilities host_;
  const v1::VmConfig config_;
  kvm_vcpu_init init_ = {};
  arm64::VcpuStateContext context_;
};

// KVM_ARM_PREFERRED_TARGET needs a VM: ask a throwaway one.
absl::StatusOr<uint32_t> ProbePreferredTarget(const kvm::KvmSystem& kvm,
                                              uint32_t ipa_bits) {
  absl::StatusOr<kvm::VmFd> vm = kvm.CreateVm(VmTypeFor(ipa_bits));
  if (!vm.ok()) return vm.status();
  kvm_vcpu_init init = {};
  if (absl::Status s = vm->ArmPreferredTarget(&init); !s.ok()) return s;
  return init.target;
}

}  // namespace

absl::StatusOr<v1::HostCapabilities> ProbeHost(const kvm::KvmSystem& kvm) {
  v1::HostCapabilities host;
  host.set_arch(v1::ARCH_ARM64);
  utsname uts;
  if (uname(&uts) == 0) host.set_kernel_release(uts.release);
  host.set_kvm_api_version(kvm.api_version());
  const int max_vcpus = kvm.CheckExtension(KVM_CAP_MAX_VCPUS);
  host.set_max_vcpus(max_vcpus > 0 ? max_vcpus
                                   : kvm.CheckExtension(KVM_CAP_NR_VCPUS));
  host.set_vcpu_events(kvm.CheckExtension(KVM_CAP_VCPU_EVENTS) > 0);
  host.set_immediate_exit(kvm.CheckExtension(KVM_CAP_IMMEDIATE_EXIT) > 0);
  host.set_one_reg(kvm.CheckExtension(KVM_CAP_ONE_REG) > 0);
  host.set_dirty_log_ring(kvm.CheckExtension(KVM_CAP_DIRTY_LOG_RING) > 0);
  host.set_arm_inject_serror_esr(
      kvm.CheckExtension(KVM_CAP_ARM_INJECT_SERROR_ESR) > 0);
  host.set_arm_inject_ext_dabt(kvm.CheckExtension(KVM_CAP_ARM_INJECT_EXT_DABT) >
                               0);
  const int ipa = kvm.CheckExtension(KVM_CAP_ARM_VM_IPA_SIZE);
  host.set_arm_ipa_size(ipa > 0 ? ipa : 0);
  if (!host.vcpu_events() || !host.immediate_exit() || !host.one_reg()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("this host's KVM lacks %s: vexstate cannot capture "
                        "arm64 vCPU state atomically and completely",
                        !host.vcpu_events()      ? "KVM_CAP_VCPU_EVENTS"
                        : !host.immediate_exit() ? "KVM_CAP_IMMEDIATE_EXIT"
                                                 : "KVM_CAP_ONE_REG"));
  }
  absl::StatusOr<uint32_t> target =
      ProbePreferredTarget(kvm, host.arm_ipa_size());
  if (!target.ok()) {
    return absl::Status(target.status().code(),
                        absl::StrFormat("probing KVM_ARM_PREFERRED_TARGET: %s",
                                        target.status().message()));
  }
  host.set_arm_preferred_target(*target);
  return host;
}

std::unique_ptr<ArchVm> CreateArchVm(const kvm::KvmSystem&,
                                     const v1::HostCapabilities& host,
                                     const v1::VmConfig& config) {
  return std::make_unique<Arm64ArchVm>(host, config);
}

}  // namespace vexstate
