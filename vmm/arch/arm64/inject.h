// Injecting a virtual SError or a synchronous external data abort into a paused
// arm64 vCPU, with validation.
//
// Contract: each function validates the request (exception_state.h) against the
// host's capabilities and the vCPU's current state, read with GET ioctls only,
// before its first state-changing ioctl. A refused request leaves the vCPU
// exactly as it was:
//   INVALID_ARGUMENT     the request is wrong (an ESR with bits outside
//                        ISS[24:0], e.g. bit 25 or bit 63): refused by
//                        vexstate, KVM never sees it
//   FAILED_PRECONDITION  the request is fine but this host or vCPU cannot
//                        take it now (no FEAT_RAS for an ESR, another SError
//                        pending under kRefuse, ...)
// After an accepted SET the state is read back (exception_state.h
// JudgeSerrorSet): OK means the SError is pending, or, on Linux >= 6.17 with
// SError unmasked, visibly delivered.
//
// One pending SError per PE. The Arm architecture has no queue for SErrors: the
// virtual SError is one pending bit (HCR_EL2.VSE) and one syndrome register
// (VSESR_EL2), and a physical PE likewise takes one SError exception however
// many errors are outstanding. The RAS Extension deals with several errors by
// recording them (error records keep the most severe error and set an overflow
// bit, "ERR<n>STATUS.OF"), not by delivering several SErrors. So a second
// injection while one is pending can only (a) change nothing, or (b) overwrite
// the syndrome — and (b) can hide the first error, e.g. turn an uncontainable
// "UC" syndrome into a recoverable one. vexstate therefore refuses a different
// syndrome by default (SErrorOverwrite::kRefuse, naming both), and does (a) or
// (b) only when asked (kKeepPending / kReplace). The same syndrome again is
// (a).
#ifndef VEXSTATE_VMM_ARCH_ARM64_INJECT_H_
#define VEXSTATE_VMM_ARCH_ARM64_INJECT_H_

#include "absl/status/status.h"
#include "vmm/arch/arm64/exception_state.h"
#include "vmm/injection.h"
#include "vmm/kvm/vcpu_fd.h"

namespace vexstate::arm64 {

// KVM_SET_VCPU_EVENTS serror_pending=1 (with serror_has_esr/serror_esr when
// request.esr is set), as decided by PlanSerrorInjection; fills *request.result
// when given.
absl::Status InjectSError(kvm::VcpuFd& vcpu, const SErrorRequest& request,
                          const SerrorCaps& caps);

// KVM_SET_VCPU_EVENTS ext_dabt_pending=1 (KVM_CAP_ARM_INJECT_EXT_DABT): a
// synchronous external data abort, taken at once (KVM reports it with
// ESR_EL1.DFSC = 0x10 and FAR_EL1 = the last faulting address it knows).
// Set-only: KVM never reports it pending, so it is committed into the registers
// right away and checked there (vcpu_state.h InjectExternalAbortAndCheck).
absl::Status InjectExternalAbort(kvm::VcpuFd& vcpu,
                                 const ExternalAbortRequest& request,
                                 const SerrorCaps& caps);

}  // namespace vexstate::arm64

#endif  // VEXSTATE_VMM_ARCH_ARM64_INJECT_H_
