#include "client/format_exception.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "client/format_fields.h"
#include "client/table.h"
#include "vmm/arch/arm64/esr_decode.h"
#include "vmm/arch/x86_64/exception_names.h"
#include "vmm/arch/x86_64/mce_decode.h"
#include "vmm/describe.h"

namespace vexstate::client {
namespace {

using Rows = std::vector<std::vector<std::string>>;

std::string Bit(bool value) { return value ? "1" : "0"; }

std::string Hex(uint64_t value) { return absl::StrFormat("0x%x", value); }

std::string ExceptionField(const v1::X86Exception& ex) {
  if (!ex.pending() && !ex.injected()) return "none";
  std::string out = absl::StrFormat(
      "%s vector=%u (%s)", ex.pending() ? "pending" : "injected", ex.vector(),
      x86::ExceptionName(ex.vector()));
  if (ex.has_error_code()) {
    absl::StrAppendFormat(&out, " error_code=0x%x", ex.error_code());
  }
  if (ex.has_payload()) {
    absl::StrAppendFormat(&out, " payload=0x%x", ex.payload());
  }
  return out;
}

void AppendX86Rows(const v1::X86ExceptionState& x, Rows* rows) {
  const v1::X86Interrupt& irq = x.interrupt();
  const v1::X86Nmi& nmi = x.nmi();
  const v1::X86Smi& smi = x.smi();
  const v1::X86MachineCheckState& mc = x.machine_check();
  std::string interrupt =
      irq.injected() ? absl::StrCat("injected vector=", Hex(irq.vector()),
                                    " soft=", Bit(irq.soft()))
                     : "none";
  if (irq.shadow() != 0) {
    absl::StrAppendFormat(&interrupt, " shadow=0x%x", irq.shadow());
  }
  rows->push_back({"exception", ExceptionField(x.exception())});
  rows->push_back({"interrupt", interrupt});
  rows->push_back({"nmi", absl::StrCat("pending=", Bit(nmi.pending()),
                                       " injected=", Bit(nmi.injected()),
                                       " masked=", Bit(nmi.masked()))});
  rows->push_back(
      {"smi",
       absl::StrCat("smm=", Bit(smi.smm()), " pending=", Bit(smi.pending()),
                    " smm_inside_nmi=", Bit(smi.smm_inside_nmi()),
                    " latched_init=", smi.latched_init())});
  rows->push_back(
      {"sipi", x.has_sipi_vector() ? Hex(x.sipi_vector()) : "none"});
  rows->push_back(
      {"triple fault", x.triple_fault_pending() ? "pending" : "none"});
  rows->push_back({"kvm flags", Hex(x.kvm_flags())});
  rows->push_back(
      {"MCG_CAP", absl::StrCat(Hex(mc.mcg_cap()), " (",
                               x86::DescribeMcgCap(mc.mcg_cap()), ")")});
  rows->push_back({"MCG_STATUS",
                   absl::StrCat(Hex(mc.mcg_status()), " (",
                                x86::DescribeMcgStatus(mc.mcg_status()), ")")});
  rows->push_back({"MCG_CTL", Hex(mc.mcg_ctl())});
  rows->push_back({"MCG_EXT_CTL", Hex(mc.mcg_ext_ctl())});
  // As in vmm/describe.cc: MCi_STATUS bits 56:38 depend on MCG_CAP; a state
  // without one (an old snapshot) is decoded with KVM's usual offer.
  const uint64_t mcg_cap =
      mc.mcg_cap() != 0 ? mc.mcg_cap() : x86::kDefaultDescribeMcgCap;
  int zero_banks = 0;
  for (const v1::X86MachineCheckBank& bank : mc.banks()) {
    if (bank.status() == 0 && bank.addr() == 0 && bank.misc() == 0) {
      ++zero_banks;
      continue;
    }
    rows->push_back(
        {absl::StrCat("bank ", bank.index()),
         absl::StrFormat("status=0x%016x (%s) addr=0x%x misc=0x%x ctl=0x%x",
                         bank.status(),
                         x86::DescribeMcStatus(bank.status(), mcg_cap),
                         bank.addr(), bank.misc(), bank.ctl())});
  }
  if (zero_banks > 0) {
    rows->push_back(
        {"other banks",
         absl::StrCat(zero_banks, " with status, addr and misc 0")});
  }
}

void AppendArm64Rows(const v1::Arm64ExceptionState& a, Rows* rows) {
  rows->push_back({"serror_pending", Bit(a.serror_pending())});
  rows->push_back(
      {"serror_has_esr",
       absl::StrCat(
           Bit(a.serror_has_esr()),
           " (read from KVM: whether the host can carry a syndrome)")});
  std::string esr = Hex(a.serror_esr());
  if (a.serror_esr() != 0) {
    const uint64_t seen = arm64::SerrorEsrAsSeenByGuest(a.serror_esr());
    absl::StrAppendFormat(&esr, " (guest's ESR_EL1 0x%x: %s)", seen,
                          arm64::DescribeEsr(seen));
  }
  rows->push_back({"serror_esr", esr});
  rows->push_back({"ext_dabt_pending", Bit(a.ext_dabt_pending())});
  rows->push_back(
      {"DISR_EL1", absl::StrCat(Hex(a.disr_el1()), " (",
                                arm64::DescribeDisr(a.disr_el1()), ")")});
}

std::string ArchOf(const v1::VcpuExceptionState& state) {
  switch (state.arch_case()) {
    case v1::VcpuExceptionState::kX8664:
      return "x86_64";
    case v1::VcpuExceptionState::kArm64:
      return "arm64";
    case v1::VcpuExceptionState::ARCH_NOT_SET:
      break;
  }
  return "no arch";
}

}  // namespace

std::string FormatPendingLines(
    const google::protobuf::RepeatedPtrField<v1::VcpuExceptionState>& vcpus,
    absl::string_view indent) {
  std::string out;
  for (const v1::VcpuExceptionState& vcpu : vcpus) {
    for (const std::string& line : DescribeExceptionState(vcpu)) {
      absl::StrAppend(&out, indent, line, "\n");
    }
  }
  return out;
}

std::string FormatInjectResponse(const v1::InjectResponse& response) {
  std::string out;
  for (const std::string& line : DescribeExceptionState(response.state())) {
    absl::StrAppend(&out, line, "\n");
  }
  if (!response.note().empty()) {
    absl::StrAppend(&out, "note: ", response.note(), "\n");
  }
  return out;
}

std::string FormatQueryPending(const v1::QueryPendingResponse& response) {
  if (response.vms().empty()) return "no VMs\n";
  std::string out;
  for (const v1::VmPending& vm : response.vms()) {
    absl::StrAppend(&out, vm.vm(), " (", VmStateName(vm.state()), ", read ",
                    FormatUnixNs(vm.read_unix_ns()), ")\n");
    out += vm.vcpus().empty() ? "  no vCPUs\n"
                              : FormatPendingLines(vm.vcpus(), "  ");
  }
  return out;
}

std::string FormatVcpuExceptionState(const v1::VcpuExceptionState& state) {
  std::string out =
      absl::StrCat("vCPU ", state.vcpu_index(), " (", ArchOf(state), ")\n");
  // The pending items first; DescribeExceptionState's "vCPU <n>: " is in the
  // header already.
  const std::string prefix = absl::StrCat("vCPU ", state.vcpu_index(), ": ");
  for (const std::string& line : DescribeExceptionState(state)) {
    absl::StrAppend(&out, "  ", absl::StripPrefix(line, prefix), "\n");
  }
  Rows rows;
  if (state.has_x86_64()) AppendX86Rows(state.x86_64(), &rows);
  if (state.has_arm64()) AppendArm64Rows(state.arm64(), &rows);
  for (std::vector<std::string>& row : rows) row.front().insert(0, "  ");
  return out + FormatAligned(rows);
}

std::string FormatExceptionState(
    const v1::GetExceptionStateResponse& response) {
  if (response.vcpus().empty()) return "no vCPUs\n";
  std::string out;
  for (const v1::VcpuExceptionState& vcpu : response.vcpus()) {
    if (!out.empty()) out += "\n";
    out += FormatVcpuExceptionState(vcpu);
  }
  return out;
}

}  // namespace vexstate::client
