#include "vmm/arch/x86_64/inject.h"

#include "absl/strings/str_format.h"
#include "vmm/arch/x86_64/exception_names.h"
#include "vmm/arch/x86_64/mce_decode.h"
#include "vmm/arch/x86_64/msr_index.h"

namespace vexstate::x86 {

namespace {

constexpr uint64_t kCr4Mce = 1ull << 6;

absl::Status RefuseIfExceptionPending(const kvm_vcpu_events& events, uint32_t vcpu) {
  if (events.exception.pending || events.exception.injected) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "vCPU %u already has exception %u (%s) %s: a second one would turn into a double fault; let the "
        "guest take the first",
        vcpu, events.exception.nr, ExceptionMnemonic(events.exception.nr),
        events.exception.pending ? "pending" : "being delivered"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateExceptionRequest(const ExceptionRequest& request) {
  const uint32_t v = request.vector;
  if (v > 31) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vector %u is not an exception vector (0-31); interrupts are not injected this way", v));
  }
  if (v == kVectorNmi) {
    return absl::InvalidArgumentError("vector 2 is the NMI: inject it as an NMI (it has its own blocking rules)");
  }
  if (v == kVectorMc) {
    return absl::InvalidArgumentError(
        "vector 18 (#MC) needs machine-check bank state: inject it as a machine check (bank, status, ...)");
  }
  if (ExceptionClass(v) == ExceptionType::kReserved) {
    return absl::InvalidArgumentError(absl::StrFormat("vector %u is reserved by the architecture", v));
  }
  if (ExceptionHasErrorCode(v) && !request.error_code.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vector %u (%s) pushes an error code: give one (the guest handler pops it)", v, ExceptionMnemonic(v)));
  }
  if (!ExceptionHasErrorCode(v) && request.error_code.has_value()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vector %u (%s) has no error code: the guest handler would misread its stack", v, ExceptionMnemonic(v)));
  }
  if (request.payload.has_value() && v != kVectorPf && v != kVectorDb) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vector %u (%s) has no payload: only #PF (CR2) and #DB (DR6) do", v, ExceptionMnemonic(v)));
  }
  return absl::OkStatus();
}

absl::Status ValidateMachineCheckRequest(const MachineCheckRequest& request, uint32_t bank_count) {
  if (request.bank >= bank_count) {
    return absl::InvalidArgumentError(
        absl::StrFormat("MCE bank %u out of range: this vCPU has %u banks (0-%u)", request.bank, bank_count,
                        bank_count == 0 ? 0 : bank_count - 1));
  }
  if ((request.status & kMciStatusVal) == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "MCi_STATUS 0x%016x has VAL (bit 63) clear: it would describe no error", request.status));
  }
  if (IsUncorrected(request.status) && (request.mcg_status & kMcgStatusMcip) == 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "uncorrected error (MCi_STATUS.UC) needs MCG_STATUS.MCIP (bit 2) set; got MCG_STATUS 0x%x "
        "(typical: 0x5 = RIPV|MCIP)",
        request.mcg_status));
  }
  return absl::OkStatus();
}

absl::Status InjectException(kvm::VcpuFd& vcpu, const ExceptionRequest& request) {
  if (absl::Status s = ValidateExceptionRequest(request); !s.ok()) return s;
  kvm_vcpu_events events;
  if (absl::Status s = vcpu.GetVcpuEvents(&events); !s.ok()) return s;
  if (absl::Status s = RefuseIfExceptionPending(events, vcpu.index()); !s.ok()) return s;
  if (request.payload.has_value() && (events.flags & KVM_VCPUEVENT_VALID_PAYLOAD) == 0) {
    return absl::FailedPreconditionError(
        "a payload needs KVM_CAP_EXCEPTION_PAYLOAD enabled on the VM (it is not): without it KVM "
        "would write CR2/DR6 at once instead of on delivery");
  }
  // Re-set exactly what GET returned, plus the new pending exception: only the exception
  // changes. SIPI is left out (GET never marks it valid; setting it would clobber it).
  events.flags &= ~KVM_VCPUEVENT_VALID_SIPI_VECTOR;
  events.exception.pending = 1;
  events.exception.injected = 0;
  events.exception.nr = request.vector;
  events.exception.has_error_code = request.error_code.has_value();
  events.exception.error_code = request.error_code.value_or(0);
  events.exception_has_payload = request.payload.has_value();
  events.exception_payload = request.payload.value_or(0);
  if (absl::Status s = vcpu.SetVcpuEvents(events); !s.ok()) return s;
  kvm_vcpu_events check;
  if (absl::Status s = vcpu.GetVcpuEvents(&check); !s.ok()) return s;
  if (!check.exception.pending || check.exception.nr != request.vector) {
    return absl::InternalError(absl::StrFormat(
        "KVM_SET_VCPU_EVENTS accepted exception %u but it does not read back as pending (pending=%u nr=%u)",
        request.vector, check.exception.pending, check.exception.nr));
  }
  return absl::OkStatus();
}

absl::Status InjectNmi(kvm::VcpuFd& vcpu) {
  // KVM queues at most one NMI while another is being handled (NMIs blocked); a second
  // KVM_NMI then collapses into the same pending NMI, as on hardware (SDM Vol 3A §6.7.1).
  return vcpu.Nmi();
}

absl::Status InjectMachineCheck(kvm::VcpuFd& vcpu, const MachineCheckRequest& request) {
  std::vector<uint32_t> indices = {kMsrMcgCap, kMsrMcgStatus, kMsrMcgCtl};
  std::vector<uint64_t> values;
  if (absl::Status s = vcpu.GetMsrs(indices, &values); !s.ok()) return s;
  const uint64_t mcg_cap = values[0], mcg_status = values[1], mcg_ctl = values[2];
  const uint32_t bank_count = mcg_cap & kMcgCapCountMask;
  if (absl::Status s = ValidateMachineCheckRequest(request, bank_count); !s.ok()) return s;
  std::vector<uint64_t> bank_ctl;
  if (absl::Status s = vcpu.GetMsrs({McCtlMsr(request.bank)}, &bank_ctl); !s.ok()) return s;
  // KVM (kvm_vcpu_x86_set_mce) silently ignores an error whose bank or global reporting is
  // disabled: refuse instead of pretending it was injected.
  if ((mcg_cap & kMcgCapCtlP) && mcg_ctl != ~0ull) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the guest disabled machine-check reporting (MCG_CTL 0x%x is not all ones): KVM would drop it", mcg_ctl));
  }
  if (bank_ctl[0] != ~0ull) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the guest disabled bank %u (MC%u_CTL 0x%x is not all ones): KVM would drop it", request.bank, request.bank,
        bank_ctl[0]));
  }
  if (IsUncorrected(request.status)) {
    kvm_sregs sregs;
    if (absl::Status s = vcpu.GetSregs(&sregs); !s.ok()) return s;
    if ((sregs.cr4 & kCr4Mce) == 0) {
      return absl::FailedPreconditionError(
          "the guest has CR4.MCE clear: KVM would turn an uncorrected machine check into a shutdown");
    }
    if (mcg_status & kMcgStatusMcip) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "the guest is still handling a machine check (MCG_STATUS 0x%x has MCIP): a second uncorrected "
          "error would shut it down",
          mcg_status));
    }
    kvm_vcpu_events events;
    if (absl::Status s = vcpu.GetVcpuEvents(&events); !s.ok()) return s;
    if (absl::Status s = RefuseIfExceptionPending(events, vcpu.index()); !s.ok()) return s;
  }
  kvm_x86_mce mce = {};
  mce.status = request.status;
  mce.addr = request.addr;
  mce.misc = request.misc;
  mce.mcg_status = request.mcg_status;
  mce.bank = static_cast<uint8_t>(request.bank);
  if (absl::Status s = vcpu.SetMce(mce); !s.ok()) return s;
  std::vector<uint64_t> status_after;
  if (absl::Status s = vcpu.GetMsrs({McStatusMsr(request.bank)}, &status_after); !s.ok()) return s;
  if ((status_after[0] & kMciStatusVal) == 0) {
    return absl::InternalError(absl::StrFormat(
        "KVM_X86_SET_MCE returned 0 but MC%u_STATUS reads 0x%x: the error was not recorded", request.bank,
        status_after[0]));
  }
  return absl::OkStatus();
}

}  // namespace vexstate::x86
