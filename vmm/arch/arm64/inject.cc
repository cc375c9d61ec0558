#include "vmm/arch/arm64/inject.h"

#include "absl/strings/str_format.h"
#include "vmm/arch/arm64/vcpu_state.h"

namespace vexstate::arm64 {

absl::Status InjectSError(kvm::VcpuFd& vcpu, const SErrorRequest& request,
                          const SerrorCaps& caps) {
  // The request alone first: a bad ESR is refused even before the vCPU is
  // looked at.
  if (request.esr.has_value()) {
    if (absl::Status s = ValidateSerrorEsr(*request.esr); !s.ok()) {
      return absl::Status(
          s.code(), absl::StrFormat("vCPU %u: %s", vcpu.index(), s.message()));
    }
  }
  absl::StatusOr<SerrorEvents> current = GetSerrorEvents(vcpu);
  if (!current.ok()) return current.status();
  absl::StatusOr<SerrorInjectionPlan> plan =
      PlanSerrorInjection(request, *current, caps);
  if (!plan.ok()) return plan.status();
  SErrorOutcome outcome = plan->outcome;
  std::string detail = plan->detail;
  if (plan->set_events) {
    absl::StatusOr<SErrorOutcome> set =
        SetSerrorAndCheck(vcpu, plan->events, plan->expected_iss);
    if (!set.ok()) return set.status();
    if (*set == SErrorOutcome::kDelivered) {
      outcome = SErrorOutcome::kDelivered;
      detail +=
          "; KVM delivered it into the guest at once (SError unmasked, Linux "
          ">= 6.17 behaviour)";
    }
  }
  if (request.result != nullptr)
    *request.result = SErrorResult{outcome, detail};
  return absl::OkStatus();
}

absl::Status InjectExternalAbort(kvm::VcpuFd& vcpu,
                                 const ExternalAbortRequest& request,
                                 const SerrorCaps& caps) {
  if (!caps.inject_ext_dabt) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "vCPU %u: an external data abort needs KVM_CAP_ARM_INJECT_EXT_DABT, "
        "which this host's KVM lacks",
        vcpu.index()));
  }
  // Read first: fails (and changes nothing) on a vCPU KVM cannot take events
  // for, e.g. one not yet initialised with KVM_ARM_VCPU_INIT.
  absl::StatusOr<SerrorEvents> current = GetSerrorEvents(vcpu);
  if (!current.ok()) return current.status();
  return InjectExternalAbortAndCheck(vcpu);
}

}  // namespace vexstate::arm64
