// Capture and restore of an arm64 vCPU's complete state through the vmm/kvm
// ioctl wrappers: every register of KVM_GET_REG_LIST (KVM_GET/SET_ONE_REG, by
// id, with the size the id encodes), the MP state, and the exception state
// (KVM_GET/SET_VCPU_EVENTS + DISR_EL1). What the values mean and which are
// acceptable is decided in state_codec.h and exception_state.h; this file
// issues the ioctls in the right order.
//
// Preconditions for every function here (vexstate's pause protocol,
// vmm/vcpu_thread.h): the vCPU was initialised with KVM_ARM_VCPU_INIT (ONE_REG
// and the events fail before that), it is out of KVM_RUN, and a pending MMIO
// exit was completed (KVM_RUN with immediate_exit=1), so PC already points past
// the access. Not thread-safe for one vCPU; different vCPUs may be handled from
// different threads.
//
// Restore order (Vm::Restore): memory, then RestoreVcpuRegisters, then
// RestoreExceptionState: events after registers. QEMU states the rule in
// target/arm/kvm64.c kvm_arch_put_registers ("Setting VCPU events should be
// triggered after syncing the registers to avoid overwriting potential changes
// made by KVM upon calling KVM_SET_VCPU_EVENTS ioctl"): an external abort
// writes ESR_EL1/FAR_EL1 and, once committed, PC/PSTATE/ELR_EL1/SPSR_EL1; from
// Linux 6.17 an SError set while the guest has SError unmasked is delivered
// the same way during the SET. Registers written afterwards would undo that,
// and the event would be lost; KVM also decides how to deliver it from the
// PSTATE and VBAR_EL1 it holds, which must already be the restored ones.
//
// No partial restores (SPEC §4.5): each Restore* function validates all of its
// input before its first SET ioctl; if KVM then refuses a value, the values
// read just before are written back and the status says whether that worked.
#ifndef VEXSTATE_VMM_ARCH_ARM64_VCPU_STATE_H_
#define VEXSTATE_VMM_ARCH_ARM64_VCPU_STATE_H_

#include <cstdint>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vexstate/v1/exception_state.pb.h"
#include "vexstate/v1/vcpu_state.pb.h"
#include "vmm/arch/arm64/exception_state.h"
#include "vmm/kvm/vcpu_fd.h"

namespace vexstate::arm64 {

// Per-VM facts for capture/restore. Every vCPU of a VM is initialised alike, so
// one probe (on any initialised vCPU) serves all.
struct VcpuStateContext {
  // The KVM_ARM_VCPU_INIT arguments the vCPUs were created with.
  uint32_t target = 0;
  std::vector<uint32_t> features;
  // KVM_GET_REG_LIST as the probed vCPU reported it.
  std::vector<uint64_t> listed_ids;
  // listed_ids without DISR_EL1 (state_codec.h SavedRegisterIds): what a
  // capture saves.
  std::vector<uint64_t> saved_ids;
  // DISR_EL1 is in the list (FEAT_RAS hosts; 6.1 lists it everywhere).
  bool has_disr = false;
  SerrorCaps caps;
};

absl::StatusOr<VcpuStateContext> ProbeVcpuStateContext(
    kvm::VcpuFd& vcpu, const kvm_vcpu_init& init, const SerrorCaps& caps);

// Registers (context.saved_ids, in that order), MP state and exception state.
absl::StatusOr<v1::VcpuState> CaptureVcpu(kvm::VcpuFd& vcpu,
                                          const VcpuStateContext& context);

// KVM_GET_VCPU_EVENTS and DISR_EL1 (0 when the host does not list it).
absl::StatusOr<v1::Arm64ExceptionState> CaptureExceptionState(
    kvm::VcpuFd& vcpu, const VcpuStateContext& context);

// Every register of `state` (validated by state_codec.h DecodeRegisters first),
// in the snapshot's order, then KVM_SET_MP_STATE. INVALID_ARGUMENT if `state`
// is not arm64; FAILED_PRECONDITION if it was made with other KVM_ARM_VCPU_INIT
// features.
absl::Status RestoreVcpuRegisters(kvm::VcpuFd& vcpu, const v1::VcpuState& state,
                                  const VcpuStateContext& context);

// DISR_EL1, then KVM_SET_VCPU_EVENTS (exception_state.h PlanExceptionRestore
// decides; the vCPU's current events are read first), then the read-back check
// (JudgeSerrorSet). Must follow RestoreVcpuRegisters.
absl::Status RestoreExceptionState(kvm::VcpuFd& vcpu,
                                   const v1::Arm64ExceptionState& state,
                                   const VcpuStateContext& context,
                                   bool allow_degrade);

// The building blocks inject.cc shares.
absl::StatusOr<SerrorEvents> GetSerrorEvents(kvm::VcpuFd& vcpu);
absl::Status SetSerrorEvents(kvm::VcpuFd& vcpu, const SerrorEvents& events);
absl::StatusOr<SerrorEntryView> ReadSerrorEntryView(kvm::VcpuFd& vcpu);
absl::StatusOr<uint64_t> GetU64(kvm::VcpuFd& vcpu, uint64_t id);
absl::Status SetU64(kvm::VcpuFd& vcpu, uint64_t id, uint64_t value);
// SET, then GET and JudgeSerrorSet. `events` must have serror_pending set.
absl::StatusOr<SErrorOutcome> SetSerrorAndCheck(
    kvm::VcpuFd& vcpu, const SerrorEvents& events,
    std::optional<uint64_t> expected_iss);
// KVM_RUN with immediate_exit=1 on a paused vCPU (from the calling thread): KVM
// commits an exception it holds as "pending" (kvm_pend_exception: not visible
// through any GET) into the registers before returning EINTR, and never enters
// the guest (api.rst "immediate_exit"; the commit on return to userspace is in
// arch/arm64/kvm/arm.c kvm_arch_vcpu_ioctl_run).
absl::Status CommitPendingException(kvm::VcpuFd& vcpu);
// KVM_SET_VCPU_EVENTS(ext_dabt_pending=1), CommitPendingException, then
// JudgeExternalAbortEntry. Without the commit, Linux < 6.17 would hold the
// abort only in a flag no GET reports, and a capture taken before the next
// KVM_RUN would lose it.
absl::Status InjectExternalAbortAndCheck(kvm::VcpuFd& vcpu);

}  // namespace vexstate::arm64

#endif  // VEXSTATE_VMM_ARCH_ARM64_VCPU_STATE_H_
