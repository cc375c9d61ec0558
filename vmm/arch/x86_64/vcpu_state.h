// Capture and restore of an x86_64 vCPU's complete state, and of the VM-wide
// x86 state, through the vmm/kvm ioctl wrappers. Conversions and validation
// live in state_codec.h.
//
// Preconditions for every function here (vexstate's pause protocol,
// vmm/vcpu_thread.h): the vCPU is out of KVM_RUN, and any pending I/O or MMIO
// exit was completed (KVM_RUN with immediate_exit=1) so no instruction is half
// done. The functions are not thread-safe with respect to the same vCPU;
// different vCPUs may be handled from different threads.
//
// Restore contract ("no partial restores", SPEC §4.5): every Restore* function
// first validates and converts all of its input (INVALID_ARGUMENT /
// FAILED_PRECONDITION, see state_codec.h) and only then issues SET ioctls, so
// bad input changes nothing. If KVM itself refuses a value the codec cannot
// judge (e.g. an EFER.LMA that contradicts CR0.PG, an MSR value KVM does not
// support), RestoreVcpuRegisters and RestoreVm write back the state read just
// before and report the refusal, saying whether that rollback succeeded.
// RestoreExceptionState validates everything KVM checks for events and
// machine-check MSRs, so it needs no rollback.
//
// MSRs. The saved set is KVM_GET_MSR_INDEX_LIST minus the machine-check MSRs
// (MCG_STATUS 0x17a and MCG_CTL 0x17b are in the list, the banks are not; all
// of them travel in the exception state), filtered to those the vCPU can read.
// Nothing else is excluded. Findings on this host (kvm_pvm, Linux 6.18; tests
// MsrWriteBackOnFreshVcpu and TscMsrsOnThisHost in vcpu_state_test.cc):
//  - 41 MSRs listed, all readable; 39 saved, 0x17a/0x17b in exception state.
//  - KVM_SET_MSRS on a freshly created vCPU (after KVM_SET_CPUID2 and
//    KVM_X86_SETUP_MCE) refuses none of the values a vCPU with guest-like state
//    reports, the KVM PV MSRs included, in index-list order. So no "refuses its
//    own value" exclusion list is needed here. Should another host refuse one,
//    the restore fails naming the MSR and writes the previous state back: state
//    is never dropped silently.
//  - Accepted but not kept: IA32_TSC_DEADLINE (0x6e0) while the LAPIC timer is
//    not in TSC-deadline mode (KVM ignores it); hence the restore order (see
//    vcpu_state.cc): LAPIC first, IA32_TSC_DEADLINE last. IA32_TSC (0x10)
//    writes are accepted and not kept by kvm_pvm at all (the guest TSC follows
//    the host TSC), and reads of IA32_TSC_DEADLINE right after a write do not
//    always return the value written: both are host limitations, not vexstate
//    choices; the TSC is still saved and written (hardware KVM keeps it; QEMU
//    migrates it the same way).
#ifndef VEXSTATE_VMM_ARCH_X86_64_VCPU_STATE_H_
#define VEXSTATE_VMM_ARCH_X86_64_VCPU_STATE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vexstate/v1/exception_state.pb.h"
#include "vexstate/v1/vcpu_state.pb.h"
#include "vmm/kvm/system.h"
#include "vmm/kvm/vcpu_fd.h"
#include "vmm/kvm/vm_fd.h"

namespace vexstate::x86 {

// Per-VM facts needed to capture/restore a vCPU. Every vCPU of a VM is set up
// identically (same CPUID, same KVM_X86_SETUP_MCE), so one probe serves all of
// them.
struct VcpuStateContext {
  // KVM_GET_MSR_INDEX_LIST filtered to MSRs this vCPU can read and that are not
  // machine-check MSRs, in index-list order.
  std::vector<uint32_t> msr_indices;
  // KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2) on the VM fd, at least
  // sizeof(kvm_xsave).
  size_t xsave_size = 0;
  // Banks set up with KVM_X86_SETUP_MCE (MCG_CAP[7:0]).
  uint32_t mce_bank_count = 0;
  // MCG_CAP as the probed vCPU reports it after KVM_X86_SETUP_MCE.
  uint64_t mcg_cap = 0;
  // MachineCheckMsrIndices(mcg_cap): what every capture reads, worked out once.
  std::vector<uint32_t> mce_msr_indices;
  // KVM_CHECK_EXTENSION(KVM_CAP_X86_SMM) on the VM fd.
  bool smm_supported = false;
};

// Probes once per VM on one created vCPU, after KVM_SET_CPUID2 and
// KVM_X86_SETUP_MCE and after KVM_ENABLE_CAP(KVM_CAP_EXCEPTION_PAYLOAD).
// FAILED_PRECONDITION if the vCPU's MCG_CAP bank count is not `mce_bank_count`
// (KVM_X86_SETUP_MCE missing or different) or if the payload cap is not enabled
// (KVM_GET_VCPU_EVENTS lacks KVM_VCPUEVENT_VALID_PAYLOAD): without it KVM folds
// a pending exception into an injected one and applies CR2/DR6 early.
absl::StatusOr<VcpuStateContext> ProbeVcpuStateContext(
    const kvm::KvmSystem& kvm, kvm::VmFd& vm, kvm::VcpuFd& vcpu,
    uint32_t mce_bank_count);

// The largest readable subset of `candidates`, in their order. KVM_GET_MSRS
// stops at the first MSR it cannot read and returns how many it read; this
// skips that one and goes on, so it costs one ioctl per unreadable MSR plus
// one.
absl::StatusOr<std::vector<uint32_t>> FilterReadableMsrs(
    kvm::VcpuFd& vcpu, const std::vector<uint32_t>& candidates);

// Full state: registers, MSRs, LAPIC, XSAVE, debug registers, TSC rate, MP
// state, and the exception state (VcpuState.exception: events + machine-check
// MSRs). KVM_GET_MP_STATE is read first: it makes KVM accept a pending
// INIT/SIPI (kvm_apic_accept_events), which may reset the registers, so
// everything read afterwards is consistent with the MP state.
absl::StatusOr<v1::VcpuState> CaptureVcpu(kvm::VcpuFd& vcpu,
                                          const VcpuStateContext& context);

// Events (KVM_GET_VCPU_EVENTS) and the machine-check MSRs (one KVM_GET_MSRS):
// two ioctls. FAILED_PRECONDITION if the vCPU's MCG_CAP is not context.mcg_cap.
absl::StatusOr<v1::X86ExceptionState> CaptureExceptionState(
    kvm::VcpuFd& vcpu, const VcpuStateContext& context);

// Everything except the exception state, in the order documented in
// vcpu_state.cc. `state` must be x86_64 (INVALID_ARGUMENT otherwise). If the
// TSC rate differs, KVM_SET_TSC_KHZ is tried first; FAILED_PRECONDITION if KVM
// refuses it. On success the vCPU has no pending exception any more
// (KVM_SET_REGS discards it): RestoreExceptionState must follow. On failure the
// registers, MP state and events read before the first SET are written back.
absl::Status RestoreVcpuRegisters(kvm::VcpuFd& vcpu, const v1::VcpuState& state,
                                  const VcpuStateContext& context);

// Machine-check MSRs (all but MCG_CAP, which must equal the vCPU's:
// FAILED_PRECONDITION naming both otherwise) in one KVM_SET_MSRS, then the
// events. MUST be called after RestoreVcpuRegisters: KVM_SET_REGS discards a
// pending exception (verified on this host), so events restored earlier are
// silently lost. A proto without machine_check leaves the machine-check MSRs as
// they are; banks not listed are left as they are.
absl::Status RestoreExceptionState(kvm::VcpuFd& vcpu,
                                   const v1::X86ExceptionState& state,
                                   const VcpuStateContext& context);

// PIC master/slave and IOAPIC (empty when the VM has no in-kernel irqchip), the
// PIT (empty when the VM has none: KVM_GET_PIT2 fails with ENXIO), kvmclock.
absl::StatusOr<v1::X86VmState> CaptureVm(kvm::VmFd& vm);

// Restores what CaptureVm captured. FAILED_PRECONDITION if the destination has
// an in-kernel irqchip or PIT and the state has not, or the other way round
// (the VMs were configured differently). Call before restoring the vCPUs.
absl::Status RestoreVm(kvm::VmFd& vm, const v1::X86VmState& state);

}  // namespace vexstate::x86

#endif  // VEXSTATE_VMM_ARCH_X86_64_VCPU_STATE_H_
