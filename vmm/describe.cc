#include "vmm/describe.h"

#include <cstdint>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "vmm/arch/arm64/esr_decode.h"
#include "vmm/arch/x86_64/exception_names.h"
#include "vmm/arch/x86_64/mce_decode.h"

namespace vexstate {

namespace {

// ----------------------------------------------------------------------------- x86_64

// The MCG_CAP to decode MCi_STATUS with: bits 56:38 mean different things depending on it
// (SDM Vol. 3B §16.3.2.2). A state without one (an old snapshot) gets KVM's usual offer.
uint64_t McgCapForDecoding(const v1::X86MachineCheckState& mc) {
  return mc.mcg_cap() != 0 ? mc.mcg_cap() : x86::kDefaultDescribeMcgCap;
}

std::string DescribeBank(const v1::X86MachineCheckBank& bank, uint64_t mcg_cap) {
  std::string out = absl::StrFormat("bank %u: %s", bank.index(), x86::DescribeMcStatus(bank.status(), mcg_cap));
  // ADDR/MISC mean something only when ADDRV/MISCV say so; a stray value is shown anyway.
  if ((bank.status() & x86::kMciStatusAddrv) != 0 || bank.addr() != 0) {
    absl::StrAppendFormat(&out, " addr=0x%x", bank.addr());
  }
  if ((bank.status() & x86::kMciStatusMiscv) != 0 || bank.misc() != 0) {
    absl::StrAppendFormat(&out, " misc=0x%x", bank.misc());
  }
  return out;
}

bool AnyValidBank(const v1::X86MachineCheckState& mc) {
  for (const v1::X86MachineCheckBank& bank : mc.banks()) {
    if ((bank.status() & x86::kMciStatusVal) != 0) return true;
  }
  return false;
}

// "; bank 3: ...; bank 5: ..." for every bank that holds a valid error.
std::string DescribeValidBanks(const v1::X86MachineCheckState& mc) {
  std::string out;
  for (const v1::X86MachineCheckBank& bank : mc.banks()) {
    if ((bank.status() & x86::kMciStatusVal) == 0) continue;
    absl::StrAppend(&out, "; ", DescribeBank(bank, McgCapForDecoding(mc)));
  }
  return out;
}

std::string DescribeException(const v1::X86Exception& ex, const v1::X86MachineCheckState& mc) {
  const uint32_t vector = ex.vector();
  const char* when = ex.pending() ? "pending" : "being delivered (injected)";
  if (vector == x86::kVectorMc) {
    // A #MC is only meaningful with the registers the guest handler will read.
    std::string banks = DescribeValidBanks(mc);
    return absl::StrFormat("%s %s; MCG_STATUS %s%s", x86::ExceptionName(vector), when,
                           x86::DescribeMcgStatus(mc.mcg_status()),
                           banks.empty() ? "; no bank holds a valid error" : banks);
  }
  std::string_view mnemonic = x86::ExceptionMnemonic(vector);
  std::string out = absl::StrCat(mnemonic.empty() ? x86::ExceptionName(vector) : std::string(mnemonic), " ", when);
  if (ex.has_error_code()) absl::StrAppendFormat(&out, ", error code 0x%x", ex.error_code());
  if (ex.has_payload()) {
    // The payload is what delivery writes (SDM: CR2 for #PF, DR6 for #DB; KVM api.rst
    // "exception_payload").
    const char* what = vector == x86::kVectorPf ? "CR2 payload" : vector == x86::kVectorDb ? "DR6 payload" : "payload";
    absl::StrAppendFormat(&out, ", %s 0x%x", what, ex.payload());
  }
  return out;
}

void DescribeX86(const v1::X86ExceptionState& x, std::vector<std::string>* items) {
  const v1::X86MachineCheckState& mc = x.machine_check();
  const bool exception_in_flight = x.exception().pending() || x.exception().injected();
  if (exception_in_flight) items->push_back(DescribeException(x.exception(), mc));
  const bool mc_exception = exception_in_flight && x.exception().vector() == x86::kVectorMc;
  if (!mc_exception) {
    if ((mc.mcg_status() & x86::kMcgStatusMcip) != 0) {
      // The guest took the #MC and has not cleared MCIP yet: another one would shut it down.
      items->push_back(absl::StrFormat("machine check in progress (guest in its #MC handler); MCG_STATUS %s%s",
                                       x86::DescribeMcgStatus(mc.mcg_status()), DescribeValidBanks(mc)));
    } else if (AnyValidBank(mc)) {
      items->push_back(
          absl::StrCat("machine-check banks hold logged errors (no #MC in progress)", DescribeValidBanks(mc)));
    }
  }
  if (x.interrupt().injected()) {
    items->push_back(absl::StrFormat("%s %u being delivered (injected)",
                                     x.interrupt().soft() ? "software interrupt" : "interrupt",
                                     x.interrupt().vector()));
  }
  const v1::X86Nmi& nmi = x.nmi();
  if (nmi.pending()) {
    items->push_back(nmi.masked() ? "NMI pending (NMIs masked: guest in its NMI handler)" : "NMI pending");
  }
  if (nmi.injected()) items->push_back("NMI being delivered (injected)");
  if (nmi.masked() && !nmi.pending() && !nmi.injected()) {
    items->push_back("NMIs masked (guest in its NMI handler until IRET)");
  }
  if (x.has_sipi_vector()) items->push_back(absl::StrFormat("SIPI vector 0x%02x latched", x.sipi_vector()));
  const v1::X86Smi& smi = x.smi();
  if (smi.pending()) items->push_back("SMI pending");
  if (smi.smm()) items->push_back(smi.smm_inside_nmi() ? "in SMM (entered from the NMI handler)" : "in SMM");
  if (smi.latched_init() != 0) items->push_back("INIT latched while in SMM");
  if (x.triple_fault_pending()) items->push_back("triple fault pending (the vCPU will shut down)");
}

// ----------------------------------------------------------------------------- arm64

std::string DescribeSerror(const v1::Arm64ExceptionState& a) {
  if (!a.serror_has_esr()) {
    // No syndrome carried: KVM injects ISS 0x1000000 (IDS) where the host has FEAT_RAS
    // (api.rst "KVM_SET_VCPU_EVENTS", ARM64).
    const uint64_t esr = arm64::SerrorEsrAsSeenByGuest(arm64::kSerrorIssIds);
    return absl::StrFormat("SError pending, no syndrome recorded (KVM picks ISS 0x%x, IDS), ESR 0x%x: %s",
                           arm64::kSerrorIssIds, esr, arm64::DescribeEsr(esr));
  }
  const uint64_t esr = arm64::SerrorEsrAsSeenByGuest(a.serror_esr());
  std::string out = absl::StrFormat("SError pending, ESR 0x%x: %s", esr, arm64::DescribeEsr(esr));
  if (!arm64::IsValidSerrorIss(a.serror_esr())) {
    // VSESR_EL2 holds ISS[24:0] only; KVM refuses anything above (arch/arm64/kvm/guest.c).
    absl::StrAppendFormat(&out, " (serror_esr 0x%x has bits above ISS[24:0]: KVM refuses it)", a.serror_esr());
  }
  return out;
}

void DescribeArm64(const v1::Arm64ExceptionState& a, std::vector<std::string>* items) {
  if (a.serror_pending()) items->push_back(DescribeSerror(a));
  if (a.ext_dabt_pending()) items->push_back("synchronous external data abort pending (KVM_ARM_INJECT_EXT_DABT)");
  if (a.disr_el1() != 0) {
    items->push_back(absl::StrFormat("DISR_EL1 0x%x: %s", a.disr_el1(), arm64::DescribeDisr(a.disr_el1())));
  }
}

}  // namespace

std::vector<std::string> DescribeExceptionState(const v1::VcpuExceptionState& state) {
  std::vector<std::string> items;
  switch (state.arch_case()) {
    case v1::VcpuExceptionState::kX8664:
      DescribeX86(state.x86_64(), &items);
      break;
    case v1::VcpuExceptionState::kArm64:
      DescribeArm64(state.arm64(), &items);
      break;
    case v1::VcpuExceptionState::ARCH_NOT_SET:
      break;
  }
  if (items.empty()) items.push_back("nothing pending");
  std::vector<std::string> lines;
  lines.reserve(items.size());
  for (const std::string& item : items) lines.push_back(absl::StrFormat("vCPU %u: %s", state.vcpu_index(), item));
  return lines;
}

}  // namespace vexstate
