// The x86_64 ArchVm: VM and vCPU setup on KVM, Multiboot boot, and delegation to the state
// (vcpu_state.h) and injection (inject.h) modules.
#include <sys/utsname.h>

#include <algorithm>
#include <optional>

#include "absl/strings/str_format.h"
#include "vmm/arch/arch_vm.h"
#include "vmm/arch/x86_64/inject.h"
#include "vmm/arch/x86_64/mce_decode.h"
#include "vmm/arch/x86_64/multiboot.h"
#include "vmm/arch/x86_64/vcpu_state.h"

namespace vexstate {

namespace {

// Above 4 GiB - 16 MiB, far from RAM and the APIC window (as QEMU and Firecracker do):
// KVM needs three pages for the real-mode TSS on Intel, and one for the identity map.
constexpr uint64_t kTssAddr = 0xfffbd000;

class X86ArchVm : public ArchVm {
 public:
  X86ArchVm(const kvm::KvmSystem& kvm, const v1::HostCapabilities& host, const v1::VmConfig& config)
      : kvm_(kvm), host_(host), config_(config) {}

  v1::Arch arch() const override { return v1::ARCH_X86_64; }
  uint64_t ram_base() const override { return 0; }
  unsigned long vm_type() const override { return 0; }

  absl::Status SetUpVm(kvm::VmFd& vm) override {
    if (absl::Status s = vm.SetTssAddr(kTssAddr); !s.ok()) return s;
    if (absl::Status s = vm.CreateIrqchip(); !s.ok()) return s;
    if (!host_.exception_payload()) {
      return absl::FailedPreconditionError(
          "this host's KVM lacks KVM_CAP_EXCEPTION_PAYLOAD: pending exceptions could not be told apart from "
          "injected ones, so exception state could not be captured faithfully");
    }
    // api.rst: with the cap, KVM keeps "pending" and "injected" apart and defers CR2/DR6 in
    // the payload until delivery, so a pending #PF migrates with its address.
    if (absl::Status s = vm.EnableCap(KVM_CAP_EXCEPTION_PAYLOAD, 1); !s.ok()) return s;
    absl::StatusOr<std::vector<kvm_cpuid_entry2>> cpuid = kvm_.GetSupportedCpuid();
    if (!cpuid.ok()) return cpuid.status();
    cpuid_ = std::move(*cpuid);
    return absl::OkStatus();
  }

  absl::Status SetUpVcpu(kvm::VmFd& vm, kvm::VcpuFd& vcpu) override {
    std::vector<kvm_cpuid_entry2> cpuid = cpuid_;
    for (kvm_cpuid_entry2& entry : cpuid) {
      // The initial APIC ID is the vCPU index: the witness guest picks its stack by it.
      if (entry.function == 1) entry.ebx = (entry.ebx & 0x00ffffff) | (vcpu.index() << 24);
      if (entry.function == 0xb || entry.function == 0x1f) entry.edx = vcpu.index();
    }
    if (absl::Status s = vcpu.SetCpuid2(cpuid); !s.ok()) return s;
    if (absl::Status s = vcpu.SetupMce(mcg_cap()); !s.ok()) return s;
    return absl::OkStatus();
  }

  absl::Status FinishSetUp(kvm::VmFd& vm, absl::Span<kvm::VcpuFd* const> vcpus) override {
    absl::StatusOr<x86::VcpuStateContext> context =
        x86::ProbeVcpuStateContext(kvm_, vm, *vcpus[0], mcg_cap() & x86::kMcgCapCountMask);
    if (!context.ok()) return context.status();
    context_ = std::move(*context);
    return absl::OkStatus();
  }

  absl::Status Boot(GuestMemory& memory, absl::Span<const uint8_t> image,
                    absl::Span<kvm::VcpuFd* const> vcpus) override {
    absl::StatusOr<uint64_t> entry = x86::LoadMultibootElf(image, memory);
    if (!entry.ok()) return entry.status();
    for (kvm::VcpuFd* vcpu : vcpus) {
      if (absl::Status s = x86::SetMultibootEntryState(*vcpu, *entry); !s.ok()) return s;
    }
    return absl::OkStatus();
  }

  absl::Status CheckRestorable(const v1::Snapshot& snapshot, const RestorePolicy& policy,
                               RestoreReport* report) const override {
    for (const v1::VcpuState& vcpu : snapshot.vcpus()) {
      if (!vcpu.has_x86_64()) {
        return absl::FailedPreconditionError(absl::StrFormat("vCPU %u state is not x86_64", vcpu.index()));
      }
      if (policy.skip_exception_state) continue;
      const v1::X86MachineCheckState& mc = vcpu.exception().x86_64().machine_check();
      const uint32_t banks_needed = mc.mcg_cap() & x86::kMcgCapCountMask;
      const uint32_t banks_here = mcg_cap() & x86::kMcgCapCountMask;
      if (banks_needed > banks_here) {
        bool banks_in_use = false;
        for (const v1::X86MachineCheckBank& bank : mc.banks()) {
          if (bank.index() >= banks_here && bank.status() != 0) banks_in_use = true;
        }
        if (banks_in_use || !policy.allow_degrade) {
          return absl::FailedPreconditionError(absl::StrFormat(
              "vCPU %u uses %u MCE banks; this host gives a VM %u (KVM_CAP_MCE)%s", vcpu.index(), banks_needed,
              banks_here, banks_in_use ? ", and a bank beyond them holds an error" : ""));
        }
        report->degradations.push_back(absl::StrFormat(
            "vCPU %u: MCE banks %u..%u (all empty) dropped: this host has %u", vcpu.index(), banks_here,
            banks_needed - 1, banks_here));
      }
      if (vcpu.exception().x86_64().exception().has_payload() && !host_.exception_payload()) {
        return absl::FailedPreconditionError("a pending exception carries a payload; this host lacks "
                                             "KVM_CAP_EXCEPTION_PAYLOAD");
      }
    }
    return absl::OkStatus();
  }

  absl::StatusOr<v1::VmState> CaptureVm(kvm::VmFd& vm) override {
    absl::StatusOr<v1::X86VmState> state = x86::CaptureVm(vm);
    if (!state.ok()) return state.status();
    v1::VmState out;
    *out.mutable_x86_64() = std::move(*state);
    return out;
  }

  absl::Status RestoreVm(kvm::VmFd& vm, const v1::VmState& state) override {
    if (!state.has_x86_64()) return absl::FailedPreconditionError("VM state is not x86_64");
    return x86::RestoreVm(vm, state.x86_64());
  }

  absl::StatusOr<v1::VcpuState> CaptureVcpu(kvm::VcpuFd& vcpu) override {
    return x86::CaptureVcpu(vcpu, context_);
  }

  absl::StatusOr<v1::VcpuExceptionState> CaptureExceptionState(kvm::VcpuFd& vcpu) override {
    absl::StatusOr<v1::X86ExceptionState> state = x86::CaptureExceptionState(vcpu, context_);
    if (!state.ok()) return state.status();
    v1::VcpuExceptionState out;
    out.set_vcpu_index(vcpu.index());
    *out.mutable_x86_64() = std::move(*state);
    return out;
  }

  absl::Status RestoreVcpuRegisters(kvm::VcpuFd& vcpu, const v1::VcpuState& state) override {
    return x86::RestoreVcpuRegisters(vcpu, state, context_);
  }

  absl::Status RestoreExceptionState(kvm::VcpuFd& vcpu, const v1::VcpuExceptionState& state,
                                     const RestorePolicy& policy) override {
    if (!state.has_x86_64()) {
      return absl::InvalidArgumentError(absl::StrFormat("vCPU %u: exception state is not x86_64", vcpu.index()));
    }
    if (!policy.allow_degrade) return x86::RestoreExceptionState(vcpu, state.x86_64(), context_);
    // Degraded restore onto a host with fewer MCE banks: CheckRestorable has already refused
    // the case where a dropped bank holds an error, so the banks beyond ours are empty. The
    // guest gets this VM's MCG_CAP (set by KVM_X86_SETUP_MCE, never writable) and the banks
    // it has; the drop is in the RestoreReport.
    v1::X86ExceptionState trimmed = state.x86_64();
    v1::X86MachineCheckState* mc = trimmed.mutable_machine_check();
    const uint32_t banks_here = mcg_cap() & x86::kMcgCapCountMask;
    if ((mc->mcg_cap() & x86::kMcgCapCountMask) > banks_here) {
      for (const v1::X86MachineCheckBank& bank : mc->banks()) {
        if (bank.index() >= banks_here && bank.status() != 0) {
          return absl::FailedPreconditionError(absl::StrFormat(
              "vCPU %u: MCE bank %u holds an error (status 0x%x) and this host has only %u banks", vcpu.index(),
              bank.index(), bank.status(), banks_here));
        }
      }
      auto* banks = mc->mutable_banks();
      banks->erase(std::remove_if(banks->begin(), banks->end(),
                                  [&](const v1::X86MachineCheckBank& b) { return b.index() >= banks_here; }),
                   banks->end());
      mc->set_mcg_cap(mcg_cap());
    }
    return x86::RestoreExceptionState(vcpu, trimmed, context_);
  }

  absl::Status InjectException(kvm::VcpuFd& vcpu, const ExceptionRequest& request) override {
    return x86::InjectException(vcpu, request);
  }
  absl::Status InjectNmi(kvm::VcpuFd& vcpu, const NmiRequest&) override { return x86::InjectNmi(vcpu); }
  absl::Status InjectMachineCheck(kvm::VcpuFd& vcpu, const MachineCheckRequest& request) override {
    return x86::InjectMachineCheck(vcpu, request);
  }
  absl::Status InjectSError(kvm::VcpuFd&, const SErrorRequest&) override {
    return absl::UnimplementedError("SError is an arm64 exception; this VM is x86_64 (inject a machine check)");
  }
  absl::Status InjectExternalAbort(kvm::VcpuFd&, const ExternalAbortRequest&) override {
    return absl::UnimplementedError("external data abort is an arm64 exception; this VM is x86_64");
  }

 private:
  // MCG_CAP for KVM_X86_SETUP_MCE: the requested bank count (default: all KVM offers) and
  // every capability bit KVM supports (on this host CTL_P and SER_P).
  uint64_t mcg_cap() const {
    uint32_t banks = config_.mce_banks() != 0 ? std::min(config_.mce_banks(), host_.mce_banks()) : host_.mce_banks();
    return (host_.mce_cap_supported() & ~x86::kMcgCapCountMask) | banks;
  }

  const kvm::KvmSystem& kvm_;
  const v1::HostCapabilities host_;
  const v1::VmConfig config_;
  std::vector<kvm_cpuid_entry2> cpuid_;
  x86::VcpuStateContext context_;
};

// KVM_GET_TSC_KHZ needs a vCPU: probe it on a throwaway VM.
uint32_t ProbeTscKhz(const kvm::KvmSystem& kvm) {
  absl::StatusOr<kvm::VmFd> vm = kvm.CreateVm();
  if (!vm.ok()) return 0;
  absl::StatusOr<kvm::VcpuFd> vcpu = vm->CreateVcpu(0);
  if (!vcpu.ok()) return 0;
  absl::StatusOr<uint32_t> khz = vcpu->GetTscKhz();
  return khz.ok() ? *khz : 0;
}

}  // namespace

absl::StatusOr<v1::HostCapabilities> ProbeHost(const kvm::KvmSystem& kvm) {
  v1::HostCapabilities host;
  host.set_arch(v1::ARCH_X86_64);
  utsname uts;
  if (uname(&uts) == 0) host.set_kernel_release(uts.release);
  host.set_kvm_api_version(kvm.api_version());
  int max_vcpus = kvm.CheckExtension(KVM_CAP_MAX_VCPUS);
  host.set_max_vcpus(max_vcpus > 0 ? max_vcpus : kvm.CheckExtension(KVM_CAP_NR_VCPUS));
  host.set_vcpu_events(kvm.CheckExtension(KVM_CAP_VCPU_EVENTS) > 0);
  host.set_immediate_exit(kvm.CheckExtension(KVM_CAP_IMMEDIATE_EXIT) > 0);
  host.set_one_reg(kvm.CheckExtension(KVM_CAP_ONE_REG) > 0);
  host.set_dirty_log_ring(kvm.CheckExtension(KVM_CAP_DIRTY_LOG_RING) > 0);
  host.set_exception_payload(kvm.CheckExtension(KVM_CAP_EXCEPTION_PAYLOAD) > 0);
  host.set_mce_banks(kvm.CheckExtension(KVM_CAP_MCE));
  if (host.mce_banks() > 0) {
    absl::StatusOr<uint64_t> mce_cap = kvm.GetMceCapSupported();
    if (!mce_cap.ok()) return mce_cap.status();
    host.set_mce_cap_supported(*mce_cap);
  }
  host.set_triple_fault_event(kvm.CheckExtension(KVM_CAP_X86_TRIPLE_FAULT_EVENT) > 0);
  host.set_x86_smm(kvm.CheckExtension(KVM_CAP_X86_SMM) > 0);
  host.set_xsave(kvm.CheckExtension(KVM_CAP_XSAVE) > 0);
  host.set_xcrs(kvm.CheckExtension(KVM_CAP_XCRS) > 0);
  host.set_tsc_khz(ProbeTscKhz(kvm));
  if (!host.vcpu_events() || !host.immediate_exit()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "this host's KVM lacks %s: vexstate cannot capture exception state atomically",
        !host.vcpu_events() ? "KVM_CAP_VCPU_EVENTS" : "KVM_CAP_IMMEDIATE_EXIT"));
  }
  return host;
}

std::unique_ptr<ArchVm> CreateArchVm(const kvm::KvmSystem& kvm, const v1::HostCapabilities& host,
                                     const v1::VmConfig& config) {
  return std::make_unique<X86ArchVm>(kvm, host, config);
}

}  // namespace vexstate
