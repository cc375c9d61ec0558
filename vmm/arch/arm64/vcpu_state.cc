#include "vmm/arch/arm64/vcpu_state.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "vmm/arch/arm64/reg_ids.h"
#include "vmm/arch/arm64/state_codec.h"

namespace vexstate::arm64 {

namespace {

absl::Status Annotate(const absl::Status& status, absl::string_view what) {
  return absl::Status(status.code(),
                      absl::StrCat(what, ": ", status.message()));
}

absl::StatusOr<std::string> GetReg(kvm::VcpuFd& vcpu, uint64_t id) {
  std::string bytes(RegSizeBytes(id), '\0');
  if (absl::Status s = vcpu.GetOneReg(id, bytes.data()); !s.ok()) {
    return Annotate(
        s, absl::StrFormat("vCPU %u reading %s", vcpu.index(), RegName(id)));
  }
  return bytes;
}

absl::Status SetReg(kvm::VcpuFd& vcpu, uint64_t id, const std::string& bytes) {
  if (absl::Status s = vcpu.SetOneReg(id, bytes.data()); !s.ok()) {
    return Annotate(
        s, absl::StrFormat("vCPU %u writing %s", vcpu.index(), RegName(id)));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<RegValue>> ReadRegs(
    kvm::VcpuFd& vcpu, const std::vector<uint64_t>& ids) {
  std::vector<RegValue> values;
  values.reserve(ids.size());
  for (uint64_t id : ids) {
    absl::StatusOr<std::string> bytes = GetReg(vcpu, id);
    if (!bytes.ok()) return bytes.status();
    values.push_back(RegValue{id, std::move(*bytes)});
  }
  return values;
}

absl::Status WriteRegs(kvm::VcpuFd& vcpu, const std::vector<RegValue>& values) {
  for (const RegValue& value : values) {
    if (absl::Status s = SetReg(vcpu, value.id, value.bytes); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status WithRollbackResult(const absl::Status& failure,
                                const absl::Status& rollback) {
  if (rollback.ok())
    return Annotate(failure,
                    "refused by KVM; the previous state was written back");
  return Annotate(
      failure,
      absl::StrCat(
          "refused by KVM, and writing the previous state back failed too (",
          rollback.message(), "): the state is now partly restored"));
}

// KVM_ARM_VCPU_INIT's seven feature words, without trailing zero words (a
// snapshot may list fewer words than this build's struct holds).
std::vector<uint32_t> TrimmedFeatures(const std::vector<uint32_t>& words) {
  std::vector<uint32_t> out = words;
  while (!out.empty() && out.back() == 0) out.pop_back();
  return out;
}

std::string FeatureList(const std::vector<uint32_t>& words) {
  std::string out;
  for (size_t i = 0; i < words.size(); ++i)
    absl::StrAppendFormat(&out, "%s0x%x", i == 0 ? "" : ",", words[i]);
  return out.empty() ? "none" : out;
}

}  // namespace

absl::StatusOr<uint64_t> GetU64(kvm::VcpuFd& vcpu, uint64_t id) {
  uint64_t value = 0;
  if (absl::Status s = vcpu.GetOneReg(id, &value); !s.ok()) {
    return Annotate(
        s, absl::StrFormat("vCPU %u reading %s", vcpu.index(), RegName(id)));
  }
  return value;
}

absl::Status SetU64(kvm::VcpuFd& vcpu, uint64_t id, uint64_t value) {
  if (absl::Status s = vcpu.SetOneReg(id, &value); !s.ok()) {
    return Annotate(s, absl::StrFormat("vCPU %u writing %s = 0x%x",
                                       vcpu.index(), RegName(id), value));
  }
  return absl::OkStatus();
}

absl::StatusOr<SerrorEvents> GetSerrorEvents(kvm::VcpuFd& vcpu) {
  kvm_vcpu_events events = {};
  if (absl::Status s = vcpu.GetVcpuEvents(&events); !s.ok()) {
    return Annotate(s, absl::StrFormat("vCPU %u", vcpu.index()));
  }
  SerrorEvents out;
  out.serror_pending = events.exception.serror_pending != 0;
  out.serror_has_esr = events.exception.serror_has_esr != 0;
  out.ext_dabt_pending = events.exception.ext_dabt_pending != 0;
  out.serror_esr = events.exception.serror_esr;
  return out;
}

absl::Status SetSerrorEvents(kvm::VcpuFd& vcpu, const SerrorEvents& in) {
  // Zero-initialised: KVM refuses nonzero padding and reserved words (EINVAL).
  kvm_vcpu_events events = {};
  events.exception.serror_pending = in.serror_pending;
  events.exception.serror_has_esr = in.serror_has_esr;
  events.exception.ext_dabt_pending = in.ext_dabt_pending;
  events.exception.serror_esr = in.serror_esr;
  if (absl::Status s = vcpu.SetVcpuEvents(events); !s.ok()) {
    return Annotate(
        s, absl::StrFormat(
               "vCPU %u: serror_pending=%d serror_has_esr=%d serror_esr=0x%x "
               "ext_dabt_pending=%d",
               vcpu.index(), in.serror_pending, in.serror_has_esr,
               in.serror_esr, in.ext_dabt_pending));
  }
  return absl::OkStatus();
}

absl::StatusOr<SerrorEntryView> ReadSerrorEntryView(kvm::VcpuFd& vcpu) {
  SerrorEntryView view;
  const std::pair<uint64_t, uint64_t*> regs[] = {
      {kRegPc, &view.pc},          {kRegPstate, &view.pstate},
      {kRegElrEl1, &view.elr_el1}, {kRegSpsrEl1, &view.spsr_el1},
      {kRegEsrEl1, &view.esr_el1}, {kRegVbarEl1, &view.vbar_el1},
  };
  for (const auto& [id, out] : regs) {
    absl::StatusOr<uint64_t> value = GetU64(vcpu, id);
    if (!value.ok()) return value.status();
    *out = *value;
  }
  return view;
}

absl::StatusOr<SErrorOutcome> SetSerrorAndCheck(
    kvm::VcpuFd& vcpu, const SerrorEvents& events,
    std::optional<uint64_t> expected_iss) {
  absl::StatusOr<SerrorEntryView> before = ReadSerrorEntryView(vcpu);
  if (!before.ok()) return before.status();
  if (absl::Status s = SetSerrorEvents(vcpu, events); !s.ok()) return s;
  absl::StatusOr<SerrorEvents> after = GetSerrorEvents(vcpu);
  if (!after.ok()) return after.status();
  absl::StatusOr<SerrorEntryView> after_regs = ReadSerrorEntryView(vcpu);
  if (!after_regs.ok()) return after_regs.status();
  return JudgeSerrorSet(expected_iss, *before, *after, *after_regs,
                        vcpu.index());
}

absl::Status CommitPendingException(kvm::VcpuFd& vcpu) {
  kvm_run* run = vcpu.run();
  const uint8_t saved = run->immediate_exit;
  run->immediate_exit = 1;
  const absl::Status status = vcpu.Run();
  run->immediate_exit = saved;
  if (absl::IsUnavailable(status))
    return absl::OkStatus();  // EINTR: what immediate_exit returns
  if (status.ok()) {
    return absl::InternalError(
        absl::StrFormat("vCPU %u: KVM_RUN with immediate_exit=1 entered the "
                        "guest (exit %u) instead of returning EINTR",
                        vcpu.index(), run->exit_reason));
  }
  return Annotate(
      status,
      absl::StrFormat("vCPU %u: committing a pending exception", vcpu.index()));
}

absl::Status InjectExternalAbortAndCheck(kvm::VcpuFd& vcpu) {
  absl::StatusOr<SerrorEntryView> before = ReadSerrorEntryView(vcpu);
  if (!before.ok()) return before.status();
  SerrorEvents events;
  events.ext_dabt_pending = true;
  if (absl::Status s = SetSerrorEvents(vcpu, events); !s.ok()) return s;
  if (absl::Status s = CommitPendingException(vcpu); !s.ok()) return s;
  absl::StatusOr<SerrorEntryView> after = ReadSerrorEntryView(vcpu);
  if (!after.ok()) return after.status();
  return JudgeExternalAbortEntry(*before, *after, vcpu.index());
}

absl::StatusOr<VcpuStateContext> ProbeVcpuStateContext(
    kvm::VcpuFd& vcpu, const kvm_vcpu_init& init, const SerrorCaps& caps) {
  VcpuStateContext context;
  context.target = init.target;
  context.features.assign(std::begin(init.features), std::end(init.features));
  absl::StatusOr<std::vector<uint64_t>> listed = vcpu.GetRegList();
  if (!listed.ok())
    return Annotate(listed.status(), absl::StrFormat("vCPU %u", vcpu.index()));
  context.listed_ids = std::move(*listed);
  context.saved_ids = SavedRegisterIds(context.listed_ids);
  context.has_disr =
      std::find(context.listed_ids.begin(), context.listed_ids.end(),
                kRegDisrEl1) != context.listed_ids.end();
  context.caps = caps;
  return context;
}

absl::StatusOr<v1::Arm64ExceptionState> CaptureExceptionState(
    kvm::VcpuFd& vcpu, const VcpuStateContext& context) {
  absl::StatusOr<SerrorEvents> events = GetSerrorEvents(vcpu);
  if (!events.ok()) return events.status();
  uint64_t disr = 0;
  if (context.has_disr) {
    absl::StatusOr<uint64_t> value = GetU64(vcpu, kRegDisrEl1);
    if (!value.ok()) return value.status();
    disr = *value;
  }
  return EncodeExceptionState(*events, disr);
}

absl::StatusOr<v1::VcpuState> CaptureVcpu(kvm::VcpuFd& vcpu,
                                          const VcpuStateContext& context) {
  v1::VcpuState out;
  out.set_index(vcpu.index());
  v1::Arm64VcpuState* arm64 = out.mutable_arm64();
  arm64->set_target(context.target);
  for (uint32_t word : context.features) arm64->add_features(word);
  absl::StatusOr<std::vector<RegValue>> values =
      ReadRegs(vcpu, context.saved_ids);
  if (!values.ok()) return values.status();
  EncodeRegisters(*values, arm64);
  kvm_mp_state mp = {};
  if (absl::Status s = vcpu.GetMpState(&mp); !s.ok())
    return Annotate(s, absl::StrFormat("vCPU %u", vcpu.index()));
  out.set_mp_state(mp.mp_state);
  absl::StatusOr<v1::Arm64ExceptionState> exception =
      CaptureExceptionState(vcpu, context);
  if (!exception.ok()) return exception.status();
  out.mutable_exception()->set_vcpu_index(vcpu.index());
  *out.mutable_exception()->mutable_arm64() = std::move(*exception);
  return out;
}

absl::Status RestoreVcpuRegisters(kvm::VcpuFd& vcpu, const v1::VcpuState& state,
                                  const VcpuStateContext& context) {
  const uint32_t index = vcpu.index();
  if (!state.has_arm64()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vCPU %u: the state to restore is not arm64", index));
  }
  const v1::Arm64VcpuState& in = state.arm64();
  const std::vector<uint32_t> wanted =
      TrimmedFeatures({in.features().begin(), in.features().end()});
  const std::vector<uint32_t> here = TrimmedFeatures(context.features);
  if (in.target() != context.target || wanted != here) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "vCPU %u: the state was captured from a vCPU initialised with target "
        "%u, features %s; this VM's vCPUs "
        "use target %u, features %s (KVM_ARM_VCPU_INIT), so their register "
        "sets differ",
        index, in.target(), FeatureList(wanted), context.target,
        FeatureList(here)));
  }
  if (absl::Status s = ValidateMpState(state.mp_state()); !s.ok()) {
    return Annotate(s, absl::StrFormat("vCPU %u", index));
  }
  absl::StatusOr<std::vector<RegValue>> values =
      DecodeRegisters(in, context.listed_ids);
  if (!values.ok())
    return Annotate(values.status(), absl::StrFormat("vCPU %u", index));

  // What the vCPU holds now, to write back if KVM refuses a value midway.
  std::vector<uint64_t> ids;
  ids.reserve(values->size());
  for (const RegValue& value : *values) ids.push_back(value.id);
  absl::StatusOr<std::vector<RegValue>> previous = ReadRegs(vcpu, ids);
  if (!previous.ok()) return previous.status();
  kvm_mp_state previous_mp = {};
  if (absl::Status s = vcpu.GetMpState(&previous_mp); !s.ok())
    return Annotate(s, absl::StrFormat("vCPU %u", index));

  // The snapshot's order is KVM_GET_REG_LIST's (core registers, then firmware,
  // demux and system registers), which KVM accepts on a vCPU that has not run:
  // firmware pseudo-registers can only be written before the VM's first KVM_RUN
  // (api.rst "ARM firmware pseudo-registers"), which a restore into a new VM
  // satisfies. MP state last: nothing above depends on it.
  absl::Status written = WriteRegs(vcpu, *values);
  if (written.ok()) {
    kvm_mp_state mp = {};
    mp.mp_state = state.mp_state();
    written = vcpu.SetMpState(mp);
    if (!written.ok())
      written = Annotate(
          written, absl::StrFormat("vCPU %u: mp_state %u", index, mp.mp_state));
  }
  if (written.ok()) return absl::OkStatus();
  absl::Status rollback = WriteRegs(vcpu, *previous);
  if (rollback.ok()) rollback = vcpu.SetMpState(previous_mp);
  return WithRollbackResult(written, rollback);
}

absl::Status RestoreExceptionState(kvm::VcpuFd& vcpu,
                                   const v1::Arm64ExceptionState& state,
                                   const VcpuStateContext& context,
                                   bool allow_degrade) {
  const uint32_t index = vcpu.index();
  absl::StatusOr<SerrorEvents> current = GetSerrorEvents(vcpu);
  if (!current.ok()) return current.status();
  absl::StatusOr<ExceptionRestorePlan> plan =
      PlanExceptionRestore(state, *current, context.caps, allow_degrade, index);
  if (!plan.ok()) return plan.status();
  if (plan->disr_el1 != 0 && !context.has_disr) {
    return absl::FailedPreconditionError(
        absl::StrFormat("vCPU %u: disr_el1 0x%x cannot be restored: this "
                        "host's KVM does not list DISR_EL1 (no FEAT_RAS)",
                        index, plan->disr_el1));
  }

  // DISR_EL1 first: it is a plain register write with no effect on the events;
  // then the events, last of all, against the restored registers (see
  // vcpu_state.h).
  uint64_t previous_disr = 0;
  if (context.has_disr) {
    absl::StatusOr<uint64_t> value = GetU64(vcpu, kRegDisrEl1);
    if (!value.ok()) return value.status();
    previous_disr = *value;
    if (absl::Status s = SetU64(vcpu, kRegDisrEl1, plan->disr_el1); !s.ok())
      return s;
  }
  if (!plan->set_events) return absl::OkStatus();

  absl::Status status;
  if (plan->events.ext_dabt_pending) {
    // A synchronous external abort is taken at once; do it before the SError so
    // that an SError set in the same call stays pending behind it (exception
    // entry masks SError).
    status = InjectExternalAbortAndCheck(vcpu);
  }
  if (status.ok() && plan->events.serror_pending) {
    SerrorEvents serror = plan->events;
    serror.ext_dabt_pending = false;
    absl::StatusOr<SErrorOutcome> outcome =
        SetSerrorAndCheck(vcpu, serror, plan->expected_iss);
    status = outcome.status();
  }
  if (status.ok()) return absl::OkStatus();
  // Nothing of the events can be undone (an SError cannot be cancelled); DISR
  // can.
  if (context.has_disr) {
    absl::Status rollback = SetU64(vcpu, kRegDisrEl1, previous_disr);
    if (!rollback.ok()) return WithRollbackResult(status, rollback);
  }
  return status;
}

}  // namespace vexstate::arm64
