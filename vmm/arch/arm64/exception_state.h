// The arm64 exception state codec: KVM's view (the arm64 fields of struct
// kvm_vcpu_events, plus DISR_EL1) <-> v1::Arm64ExceptionState, and every rule
// vexstate applies before KVM sees a value. The ioctls live in vcpu_state.cc
// and inject.cc; this file decides what they do.
//
// Contract: pure functions; no KVM, no I/O; thread-safe; builds and is
// unit-tested on every host (struct kvm_vcpu_events differs per arch, so KVM's
// fields are mirrored in SerrorEvents).
//
// KVM semantics honoured here (Linux Documentation/virt/kvm/api.rst,
// "KVM_GET_VCPU_EVENTS" and "KVM_SET_VCPU_EVENTS", ARM64;
// arch/arm64/kvm/guest.c):
//  - GET: serror_pending is HCR_EL2.VSE; serror_has_esr is the HOST
//    capability (KVM_CAP_ARM_INJECT_SERROR_ESR, FEAT_RAS), not a property of
//    the pending SError; serror_esr (VSESR_EL2's ISS) is meaningful only when
//    both are set. ext_dabt_pending is never reported.
//  - SET: serror_pending=1 with serror_has_esr=1 sets VSESR_EL2 to serror_esr,
//    which must fit ISS[24:0] (EINVAL otherwise, and always EINVAL on a host
//    without FEAT_RAS); serror_pending=1 without an ESR makes KVM pick ISS
//    0x1000000 (IDS: implementation defined). serror_pending=0 does NOT clear
//    a pending SError: an SError cannot be cancelled. ext_dabt_pending=1
//    injects a synchronous external data abort (KVM_CAP_ARM_INJECT_EXT_DABT).
//  - SET may be committed at once: from Linux 6.17, KVM may deliver the SError
//    into the guest during the SET when the guest can take it (PSTATE.A
//    clear), so a GET right after reads serror_pending=0. JudgeSerrorSet()
//    tells that apart from a lost SError.
//
// DISR_EL1 (FEAT_RAS; the guest reads VDISR_EL2): an SError the guest deferred
// with `esb` while SError was masked lands here, so it is exception state. It
// has exactly one place in a snapshot: Arm64ExceptionState.disr_el1. The
// register list (state_codec.h) never carries it, so a restore writes it once,
// with the exception state, after the other registers, and can never write two
// conflicting values. A restore that leaves the exception state out
// (RestorePolicy.skip_exception_state) leaves DISR_EL1 at its reset value 0
// too: a deferred SError is exception state like a pending one.
#ifndef VEXSTATE_VMM_ARCH_ARM64_EXCEPTION_STATE_H_
#define VEXSTATE_VMM_ARCH_ARM64_EXCEPTION_STATE_H_

#include <cstdint>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vexstate/v1/exception_state.pb.h"
#include "vmm/injection.h"

namespace vexstate::arm64 {

// The arm64 fields of struct kvm_vcpu_events (exception.*).
struct SerrorEvents {
  bool serror_pending = false;
  bool serror_has_esr = false;
  bool ext_dabt_pending = false;
  uint64_t serror_esr = 0;
};

// What the destination host's KVM can take (HostCapabilities).
struct SerrorCaps {
  bool inject_serror_esr = false;  // KVM_CAP_ARM_INJECT_SERROR_ESR
  bool inject_ext_dabt = false;    // KVM_CAP_ARM_INJECT_EXT_DABT
};

// INVALID_ARGUMENT unless `esr` fits VSESR_EL2's ISS[24:0] (names the value and
// the bits outside). Checked by vexstate so that KVM never sees such a value.
absl::Status ValidateSerrorEsr(uint64_t esr);

// The syndrome a pending SError carries as far as vexstate can know it: the ESR
// when the host reports one (serror_has_esr), else nothing (a host without
// FEAT_RAS has no VSESR_EL2).
std::optional<uint64_t> PendingSyndrome(const SerrorEvents& events);

// "ISS 0x1234 (ESR_EL1 0xbe001234: EC=0x2f ...)" or "an implementation-defined
// syndrome" when unknown: for messages.
std::string DescribeSyndrome(std::optional<uint64_t> iss);

// GET + DISR_EL1 -> proto. Normalised: serror_esr is 0 unless serror_pending
// and serror_has_esr; ext_dabt_pending is always false (KVM never reports it).
v1::Arm64ExceptionState EncodeExceptionState(const SerrorEvents& events,
                                             uint64_t disr_el1);

// What RestoreExceptionState does with a validated state.
struct ExceptionRestorePlan {
  uint64_t disr_el1 = 0;
  // Issue KVM_SET_VCPU_EVENTS with `events` (false when nothing is to be
  // injected, or the very same SError is already pending).
  bool set_events = false;
  SerrorEvents events;
  // The ISS the SError must carry after the SET (for JudgeSerrorSet), when
  // known.
  std::optional<uint64_t> expected_iss;
  // Non-empty when the ESR was dropped under allow_degrade: says which, and
  // why.
  std::string degradation;
};

// Validates `state` for vCPU `vcpu` against the host and the vCPU's current
// events (`current`, read just before; all-false for a fresh vCPU) and plans
// the SET. Nothing is written.
//  INVALID_ARGUMENT     serror_esr with bits outside ISS[24:0]; a nonzero
//                       serror_esr without serror_has_esr, or without
//                       serror_pending (KVM would ignore it).
//  FAILED_PRECONDITION  a pending SError with an ESR on a host without
//                       KVM_CAP_ARM_INJECT_SERROR_ESR (unless `allow_degrade`:
//                       then delivered without the ESR and `degradation` says
//                       so); ext_dabt_pending on a host without
//                       KVM_CAP_ARM_INJECT_EXT_DABT; `current` has a pending
//                       SError and the state has none (an SError cannot be
//                       cancelled) or another syndrome (both named; a PE holds
//                       one pending SError).
// `serror_has_esr` without `serror_pending` is what every capture on a FEAT_RAS
// host holds (the capability, see above) and is accepted anywhere.
absl::StatusOr<ExceptionRestorePlan> PlanExceptionRestore(
    const v1::Arm64ExceptionState& state, const SerrorEvents& current,
    const SerrorCaps& caps, bool allow_degrade, uint32_t vcpu);

// What InjectSError does, decided from the request and the current events.
struct SerrorInjectionPlan {
  bool set_events = false;  // false: nothing changes (outcome says why)
  SerrorEvents events;      // for the SET
  std::optional<uint64_t> expected_iss;
  SErrorOutcome outcome =
      SErrorOutcome::kPending;  // kPending, kReplaced, kAlreadyPending,
                                // kKeptPending
  std::string detail;
};

// INVALID_ARGUMENT for an ESR outside ISS[24:0]; FAILED_PRECONDITION for an ESR
// on a host without KVM_CAP_ARM_INJECT_SERROR_ESR, and, under
// SErrorOverwrite::kRefuse, when another syndrome is pending (the message names
// both). The same syndrome already pending is OK with nothing to do
// (kAlreadyPending).
absl::StatusOr<SerrorInjectionPlan> PlanSerrorInjection(
    const SErrorRequest& request, const SerrorEvents& current,
    const SerrorCaps& caps);

// The registers that show whether KVM delivered an SError into the guest during
// a SET.
struct SerrorEntryView {
  uint64_t pc = 0;
  uint64_t pstate = 0;
  uint64_t elr_el1 = 0;
  uint64_t spsr_el1 = 0;
  uint64_t esr_el1 = 0;
  uint64_t vbar_el1 = 0;
};

// The SError vector for an exception taken to EL1 from the state in `pstate`
// (Arm ARM D1.10.2 "Exception vectors"): VBAR_EL1 + 0x180 from EL1t, + 0x380
// from EL1h, + 0x580 from AArch64 EL0, + 0x780 from AArch32. nullopt for a
// PSTATE at EL2/EL3 (not a guest's EL1 exception).
std::optional<uint64_t> SerrorVectorAddress(uint64_t vbar_el1, uint64_t pstate);

// After a SET with serror_pending=1, decides from a GET and the registers read
// before and after whether KVM holds the SError (kPending), delivered it into
// the guest (kDelivered), or lost it.
//  - GET says pending: kPending, provided the ISS is `expected_iss` (when
//    both are known).
//  - GET says not pending: that is Linux >= 6.17 committing the SError at
//    once, and is accepted only if the guest could take it (PSTATE.A clear
//    before the SET) AND the registers show the exception entry: PC at the
//    SError vector for the mode `before` was in, ELR_EL1 = the PC before,
//    SPSR_EL1's mode = the mode before, ESR_EL1.EC = 0x2f (SError) with ISS =
//    `expected_iss` when known. Anything else, in particular a masked SError
//    reading back as not pending, is INTERNAL ("lost"), with every value in
//    the message: vexstate never reports success for an SError nobody holds.
absl::StatusOr<SErrorOutcome> JudgeSerrorSet(
    std::optional<uint64_t> expected_iss, const SerrorEntryView& before,
    const SerrorEvents& after, const SerrorEntryView& after_regs,
    uint32_t vcpu);

// The synchronous vector for an exception taken to EL1 from `pstate`: VBAR_EL1
// + 0x000 from EL1t, + 0x200 from EL1h, + 0x400 from AArch64 EL0, + 0x600 from
// AArch32; nullopt otherwise.
std::optional<uint64_t> SyncVectorAddress(uint64_t vbar_el1, uint64_t pstate);

// After an external data abort was injected and committed (vcpu_state.h
// InjectExternalAbortAndCheck): OK only if the registers show its entry (Arm
// ARM D1.10): PC at the synchronous vector for the mode before, ELR_EL1 = the
// PC before, ESR_EL1.EC = 0x25 (data abort, same EL) or 0x24 (from EL0) with
// DFSC 0x10 (synchronous external abort). INTERNAL otherwise, with every value
// in the message.
absl::Status JudgeExternalAbortEntry(const SerrorEntryView& before,
                                     const SerrorEntryView& after,
                                     uint32_t vcpu);

}  // namespace vexstate::arm64

#endif  // VEXSTATE_VMM_ARCH_ARM64_EXCEPTION_STATE_H_
