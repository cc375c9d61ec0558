#include "vmm/arch/arm64/exception_state.h"

#include "absl/strings/str_format.h"
#include "vmm/arch/arm64/esr_decode.h"
#include "vmm/arch/arm64/reg_ids.h"

namespace vexstate::arm64 {

namespace {

// The ISS KVM gives an SError injected without an ESR on a FEAT_RAS host (IDS
// set: "implementation defined syndrome"); see esr_decode.h.
constexpr uint64_t kKvmDefaultSerrorIss = kSerrorIssIds;

// The syndrome KVM will give an SError set with `events` on a host with `caps`.
std::optional<uint64_t> SyndromeOfSet(const SerrorEvents& events,
                                      const SerrorCaps& caps) {
  if (events.serror_has_esr) return events.serror_esr;
  if (caps.inject_serror_esr) return kKvmDefaultSerrorIss;
  return std::nullopt;
}

std::string Pstate(uint64_t pstate) {
  return absl::StrFormat("0x%x (mode 0x%x, A=%d)", pstate,
                         pstate & kPstateModeMask, (pstate & kPstateA) ? 1 : 0);
}

}  // namespace

absl::Status ValidateSerrorEsr(uint64_t esr) {
  if (IsValidSerrorIss(esr)) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrFormat(
      "serror_esr 0x%x has bits outside ISS[24:0] (0x%x): VSESR_EL2 holds only "
      "the ISS; EC and IL are "
      "the architecture's (the guest reads ESR_EL1 = 0x%x for ISS 0x%x)",
      esr, esr & ~kVsesrIssMask, SerrorEsrAsSeenByGuest(esr),
      esr & kVsesrIssMask));
}

std::optional<uint64_t> PendingSyndrome(const SerrorEvents& events) {
  if (events.serror_pending && events.serror_has_esr) return events.serror_esr;
  return std::nullopt;
}

std::string DescribeSyndrome(std::optional<uint64_t> iss) {
  if (!iss.has_value())
    return "an implementation-defined syndrome (host without FEAT_RAS: no "
           "VSESR_EL2)";
  return absl::StrFormat("ISS 0x%x (ESR_EL1 0x%x: %s)", *iss,
                         SerrorEsrAsSeenByGuest(*iss),
                         DescribeEsr(SerrorEsrAsSeenByGuest(*iss)));
}

v1::Arm64ExceptionState EncodeExceptionState(const SerrorEvents& events,
                                             uint64_t disr_el1) {
  v1::Arm64ExceptionState out;
  out.set_serror_pending(events.serror_pending);
  out.set_serror_has_esr(events.serror_has_esr);
  if (events.serror_pending && events.serror_has_esr)
    out.set_serror_esr(events.serror_esr);
  out.set_ext_dabt_pending(false);
  out.set_disr_el1(disr_el1);
  return out;
}

absl::StatusOr<ExceptionRestorePlan> PlanExceptionRestore(
    const v1::Arm64ExceptionState& state, const SerrorEvents& current,
    const SerrorCaps& caps, bool allow_degrade, uint32_t vcpu) {
  // Bad values first (INVALID_ARGUMENT), then what this host or this vCPU
  // cannot take.
  if (absl::Status s = ValidateSerrorEsr(state.serror_esr()); !s.ok()) {
    return absl::Status(s.code(),
                        absl::StrFormat("vCPU %u: %s", vcpu, s.message()));
  }
  if (state.serror_esr() != 0 && !state.serror_has_esr()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vCPU %u: serror_esr 0x%x given with serror_has_esr=0: "
                        "say whether the syndrome is to be used",
                        vcpu, state.serror_esr()));
  }
  if (state.serror_esr() != 0 && !state.serror_pending()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vCPU %u: serror_esr 0x%x given without "
                        "serror_pending: KVM would drop the syndrome",
                        vcpu, state.serror_esr()));
  }

  ExceptionRestorePlan plan;
  plan.disr_el1 = state.disr_el1();
  SerrorEvents& set = plan.events;
  if (state.serror_pending()) {
    set.serror_pending = true;
    set.serror_has_esr = state.serror_has_esr();
    set.serror_esr = state.serror_esr();
    if (set.serror_has_esr && !caps.inject_serror_esr) {
      if (!allow_degrade) {
        return absl::FailedPreconditionError(
            absl::StrFormat("vCPU %u has a pending SError with %s; this host's "
                            "KVM lacks KVM_CAP_ARM_INJECT_SERROR_ESR (no "
                            "FEAT_RAS), so the syndrome cannot be restored "
                            "(allow degradation to deliver it without its ESR)",
                            vcpu, DescribeSyndrome(set.serror_esr)));
      }
      plan.degradation = absl::StrFormat(
          "vCPU %u: pending SError restored without its syndrome %s: this host "
          "lacks "
          "KVM_CAP_ARM_INJECT_SERROR_ESR; the guest sees the syndrome this "
          "host's KVM picks",
          vcpu, DescribeSyndrome(set.serror_esr));
      set.serror_has_esr = false;
      set.serror_esr = 0;
    }
  }
  if (state.ext_dabt_pending()) {
    if (!caps.inject_ext_dabt) {
      return absl::FailedPreconditionError(
          absl::StrFormat("vCPU %u has a pending external data abort; this "
                          "host's KVM lacks KVM_CAP_ARM_INJECT_EXT_DABT",
                          vcpu));
    }
    set.ext_dabt_pending = true;
  }

  // Against what the vCPU holds now: one pending SError per PE, never
  // cancelled, never silently re-labelled.
  if (current.serror_pending) {
    const std::optional<uint64_t> now = PendingSyndrome(current);
    if (!set.serror_pending) {
      return absl::FailedPreconditionError(
          absl::StrFormat("vCPU %u has a pending SError (%s) and the state to "
                          "set has none: an SError cannot be cancelled "
                          "(KVM_SET_VCPU_EVENTS cannot clear HCR_EL2.VSE); let "
                          "the guest take it",
                          vcpu, DescribeSyndrome(now)));
    }
    const std::optional<uint64_t> wanted = SyndromeOfSet(set, caps);
    if (now != wanted) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "vCPU %u already has a pending SError with %s; the state to set has "
          "%s: a PE holds one pending "
          "SError and one syndrome, and vexstate does not overwrite it "
          "silently",
          vcpu, DescribeSyndrome(now), DescribeSyndrome(wanted)));
    }
    set.serror_pending = false;  // the very same SError is there already
    set.serror_has_esr = false;
    set.serror_esr = 0;
  }
  plan.set_events = set.serror_pending || set.ext_dabt_pending;
  if (set.serror_pending) plan.expected_iss = SyndromeOfSet(set, caps);
  return plan;
}

absl::StatusOr<SerrorInjectionPlan> PlanSerrorInjection(
    const SErrorRequest& request, const SerrorEvents& current,
    const SerrorCaps& caps) {
  const uint32_t vcpu = request.vcpu;
  if (request.esr.has_value()) {
    if (absl::Status s = ValidateSerrorEsr(*request.esr); !s.ok()) {
      return absl::Status(s.code(),
                          absl::StrFormat("vCPU %u: %s", vcpu, s.message()));
    }
    if (!caps.inject_serror_esr) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "vCPU %u: an SError with ESR ISS 0x%x needs "
          "KVM_CAP_ARM_INJECT_SERROR_ESR, which this host's KVM "
          "lacks (no FEAT_RAS); inject it without an ESR",
          vcpu, *request.esr));
    }
  }
  SerrorInjectionPlan plan;
  plan.events.serror_pending = true;
  plan.events.serror_has_esr = request.esr.has_value();
  plan.events.serror_esr = request.esr.value_or(0);
  plan.expected_iss = SyndromeOfSet(plan.events, caps);
  if (!current.serror_pending) {
    plan.set_events = true;
    plan.outcome = SErrorOutcome::kPending;
    plan.detail = absl::StrFormat("vCPU %u: SError with %s made pending", vcpu,
                                  DescribeSyndrome(plan.expected_iss));
    return plan;
  }
  const std::optional<uint64_t> now = PendingSyndrome(current);
  if (now == plan.expected_iss) {
    plan.set_events = false;
    plan.outcome = SErrorOutcome::kAlreadyPending;
    plan.detail = absl::StrFormat(
        "vCPU %u: an SError with %s was already pending; nothing changed", vcpu,
        DescribeSyndrome(now));
    return plan;
  }
  switch (request.on_pending) {
    case SErrorOverwrite::kRefuse:
      return absl::FailedPreconditionError(absl::StrFormat(
          "vCPU %u already has a pending SError with %s; the request has %s. A "
          "PE holds one pending SError and "
          "VSESR_EL2 one syndrome: choose keep-pending or replace explicitly",
          vcpu, DescribeSyndrome(now), DescribeSyndrome(plan.expected_iss)));
    case SErrorOverwrite::kKeepPending:
      plan.set_events = false;
      plan.outcome = SErrorOutcome::kKeptPending;
      plan.detail = absl::StrFormat(
          "vCPU %u: the pending SError with %s was kept; the requested %s was "
          "not injected (nothing changed)",
          vcpu, DescribeSyndrome(now), DescribeSyndrome(plan.expected_iss));
      return plan;
    case SErrorOverwrite::kReplace:
      plan.set_events = true;
      plan.outcome = SErrorOutcome::kReplaced;
      plan.detail = absl::StrFormat(
          "vCPU %u: the pending SError's %s was replaced by %s", vcpu,
          DescribeSyndrome(now), DescribeSyndrome(plan.expected_iss));
      return plan;
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("vCPU %u: unknown SErrorOverwrite value %d", vcpu,
                      static_cast<int>(request.on_pending)));
}

std::optional<uint64_t> SerrorVectorAddress(uint64_t vbar_el1,
                                            uint64_t pstate) {
  const uint64_t mode = pstate & kPstateModeMask;
  if (mode & 0x10) return vbar_el1 + 0x780;  // AArch32 (M[4] = 1)
  switch (mode) {
    case kPstateModeEl0t:
      return vbar_el1 + 0x580;
    case kPstateModeEl1t:
      return vbar_el1 + 0x180;
    case kPstateModeEl1h:
      return vbar_el1 + 0x380;
    default:
      return std::nullopt;
  }
}

absl::StatusOr<SErrorOutcome> JudgeSerrorSet(
    std::optional<uint64_t> expected_iss, const SerrorEntryView& before,
    const SerrorEvents& after, const SerrorEntryView& after_regs,
    uint32_t vcpu) {
  if (after.serror_pending) {
    const std::optional<uint64_t> held = PendingSyndrome(after);
    if (expected_iss.has_value() && held.has_value() &&
        *held != *expected_iss) {
      return absl::InternalError(
          absl::StrFormat("vCPU %u: KVM_SET_VCPU_EVENTS accepted an SError "
                          "with ISS 0x%x but KVM holds ISS 0x%x",
                          vcpu, *expected_iss, *held));
    }
    return SErrorOutcome::kPending;
  }
  // Not pending after the SET. Only an SError the guest could take may be gone,
  // and only into the guest: check the exception entry in the registers (Arm
  // ARM D1.10 "Exception entry": ELR_EL1 = preferred return address, SPSR_EL1 =
  // PSTATE before, PC = vector, ESR_EL1 = syndrome). For an asynchronous
  // exception the preferred return address is the PC of the next instruction
  // not yet executed: the PC before the SET.
  const std::string values = absl::StrFormat(
      "before: PC 0x%x PSTATE %s; after: PC 0x%x ELR_EL1 0x%x SPSR_EL1 0x%x "
      "ESR_EL1 0x%x VBAR_EL1 0x%x",
      before.pc, Pstate(before.pstate), after_regs.pc, after_regs.elr_el1,
      after_regs.spsr_el1, after_regs.esr_el1, after_regs.vbar_el1);
  if (before.pstate & kPstateA) {
    return absl::InternalError(
        absl::StrFormat("vCPU %u: SError lost: KVM_SET_VCPU_EVENTS accepted "
                        "it, but it is not pending and the guest had SError "
                        "masked (PSTATE.A=1), so it cannot have taken it (%s)",
                        vcpu, values));
  }
  const std::optional<uint64_t> vector =
      SerrorVectorAddress(after_regs.vbar_el1, before.pstate);
  const EsrFields esr = DecodeEsr(after_regs.esr_el1);
  std::string mismatch;
  if (!vector.has_value()) {
    mismatch = "the vCPU was not at EL0/EL1";
  } else if (after_regs.pc != *vector) {
    mismatch = absl::StrFormat("PC is not the SError vector 0x%x", *vector);
  } else if (after_regs.elr_el1 != before.pc) {
    mismatch = "ELR_EL1 is not the PC before the SET";
  } else if ((after_regs.spsr_el1 & kPstateModeMask) !=
             (before.pstate & kPstateModeMask)) {
    mismatch = "SPSR_EL1 does not hold the mode before the SET";
  } else if (esr.ec != kEcSerror) {
    mismatch = absl::StrFormat("ESR_EL1.EC is 0x%x, not 0x2f (SError)", esr.ec);
  } else if (expected_iss.has_value() && esr.iss != *expected_iss) {
    mismatch = absl::StrFormat("ESR_EL1.ISS is 0x%x, not 0x%x", esr.iss,
                               *expected_iss);
  }
  if (!mismatch.empty()) {
    return absl::InternalError(
        absl::StrFormat("vCPU %u: SError lost: KVM_SET_VCPU_EVENTS accepted "
                        "it, it is not pending, and the registers do not show "
                        "it delivered (%s; %s)",
                        vcpu, mismatch, values));
  }
  return SErrorOutcome::kDelivered;
}

std::optional<uint64_t> SyncVectorAddress(uint64_t vbar_el1, uint64_t pstate) {
  const std::optional<uint64_t> serror = SerrorVectorAddress(vbar_el1, pstate);
  if (!serror.has_value()) return std::nullopt;
  return *serror - 0x180;  // each group of four vectors: sync 0x000, IRQ, FIQ,
                           // SError 0x180
}

absl::Status JudgeExternalAbortEntry(const SerrorEntryView& before,
                                     const SerrorEntryView& after,
                                     uint32_t vcpu) {
  const std::optional<uint64_t> vector =
      SyncVectorAddress(after.vbar_el1, before.pstate);
  const EsrFields esr = DecodeEsr(after.esr_el1);
  const uint64_t mode = before.pstate & kPstateModeMask;
  const bool from_el0 =
      mode == kPstateModeEl0t || (mode & 0x10) != 0;  // AArch64 EL0 or AArch32
  const uint32_t expected_ec = from_el0 ? kEcDabtLow : kEcDabtCur;
  std::string mismatch;
  if (!vector.has_value()) {
    mismatch = "the vCPU was not at EL0/EL1";
  } else if (after.pc != *vector) {
    mismatch =
        absl::StrFormat("PC is not the synchronous vector 0x%x", *vector);
  } else if (after.elr_el1 != before.pc) {
    mismatch = "ELR_EL1 is not the PC before the injection";
  } else if (esr.ec != expected_ec) {
    mismatch = absl::StrFormat("ESR_EL1.EC is 0x%x, not 0x%x (data abort)",
                               esr.ec, expected_ec);
  } else if ((esr.iss & 0x3f) != 0x10) {
    mismatch = absl::StrFormat(
        "ESR_EL1.DFSC is 0x%x, not 0x10 (synchronous external abort)",
        esr.iss & 0x3f);
  }
  if (mismatch.empty()) return absl::OkStatus();
  return absl::InternalError(
      absl::StrFormat("vCPU %u: external data abort not delivered: %s (before: "
                      "PC 0x%x PSTATE %s; after: PC 0x%x ELR_EL1 0x%x "
                      "ESR_EL1 0x%x VBAR_EL1 0x%x)",
                      vcpu, mismatch, before.pc, Pstate(before.pstate),
                      after.pc, after.elr_el1, after.esr_el1, after.vbar_el1));
}

}  // namespace vexstate::arm64
