#include "client/format_vm.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "client/format_event.h"
#include "client/format_fields.h"
#include "client/table.h"
#include "vmm/arch/x86_64/mce_decode.h"

namespace vexstate::client {
namespace {

using Rows = std::vector<std::vector<std::string>>;

std::string YesNo(bool value) { return value ? "yes" : "no"; }

std::string FormatWitnessSettings(const v1::WitnessSettings& w) {
  std::string text = absl::StrFormat(
      "heartbeat %u ms, workset %u pages, %u dirty pages/s, hold mask 0x%x",
      w.heartbeat_ms(), w.workset_pages(), w.dirty_pages_per_sec(),
      w.hold_mask());
  // Only when set: most VMs never touch memory this way.
  if (w.touch_pages() != 0) absl::StrAppendFormat(&text, ", touch %u pages", w.touch_pages());
  return text;
}

}  // namespace

std::string FormatVmInfo(const v1::VmInfo& vm) {
  const v1::VmConfig& config = vm.config();
  Rows rows = {
      {"name", vm.name()},
      {"state", VmStateName(vm.state())},
      {"arch", ArchName(config.arch())},
      {"vcpus", absl::StrCat(config.vcpu_count())},
      {"memory", FormatMemory(config.memory_bytes())},
      {"guest", FormatGuest(config.guest())},
  };
  if (config.arch() == v1::ARCH_X86_64) {
    rows.push_back({"mce banks", config.mce_banks() == 0
                                     ? "all the host offers"
                                     : absl::StrCat(config.mce_banks())});
  }
  if (config.has_witness()) {
    rows.push_back({"witness", FormatWitnessSettings(config.witness())});
  }
  rows.push_back({"worker pid",
                  vm.worker_pid() == 0 ? "-" : absl::StrCat(vm.worker_pid())});
  rows.push_back({"created", FormatUnixNs(vm.created_unix_ns())});
  if (!vm.restored_from().empty()) {
    rows.push_back({"restored from", vm.restored_from()});
  }
  rows.push_back(
      {"guest exception reports", absl::StrCat(vm.guest_exception_reports())});
  if (!vm.error().empty()) rows.push_back({"error", vm.error()});
  return FormatAligned(rows);
}

std::string FormatVmStateLine(const v1::VmInfo& vm) {
  std::string line = absl::StrCat(vm.name(), ": ", VmStateName(vm.state()));
  if (!vm.error().empty()) absl::StrAppend(&line, " (", vm.error(), ")");
  return line + "\n";
}

std::string FormatVmList(const v1::ListVmsResponse& response) {
  if (response.vms().empty()) return "no VMs\n";
  Rows rows;
  for (const v1::VmInfo& vm : response.vms()) {
    const v1::VmConfig& config = vm.config();
    rows.push_back({vm.name(), ArchName(config.arch()), VmStateName(vm.state()),
                    absl::StrCat(config.vcpu_count()),
                    FormatMemory(config.memory_bytes()),
                    FormatGuest(config.guest()),
                    vm.worker_pid() == 0 ? "-" : absl::StrCat(vm.worker_pid()),
                    absl::StrCat(vm.guest_exception_reports())});
  }
  return FormatTable(
      {"NAME", "ARCH", "STATE", "VCPUS", "MEMORY", "GUEST", "PID", "REPORTS"},
      rows);
}

std::string FormatHostCapabilities(const v1::HostCapabilities& caps) {
  Rows rows = {
      {"arch", ArchName(caps.arch())},
      {"kernel", caps.kernel_release()},
      {"KVM API version", absl::StrCat(caps.kvm_api_version())},
      {"max vCPUs", absl::StrCat(caps.max_vcpus())},
      {"vcpu events", YesNo(caps.vcpu_events())},
      {"immediate exit", YesNo(caps.immediate_exit())},
      {"ONE_REG", YesNo(caps.one_reg())},
      {"dirty log ring", YesNo(caps.dirty_log_ring())},
  };
  // A host of unknown arch shows both sets.
  const bool x86 = caps.arch() != v1::ARCH_ARM64;
  const bool arm64 = caps.arch() != v1::ARCH_X86_64;
  if (x86) {
    rows.push_back({"exception payload", YesNo(caps.exception_payload())});
    rows.push_back({"MCE banks", caps.mce_banks() == 0
                                     ? "0 (no MCE support)"
                                     : absl::StrCat(caps.mce_banks())});
    rows.push_back(
        {"MCG_CAP supported",
         absl::StrFormat("0x%x (%s)", caps.mce_cap_supported(),
                         x86::DescribeMcgCap(caps.mce_cap_supported()))});
    rows.push_back({"triple fault event", YesNo(caps.triple_fault_event())});
    rows.push_back({"SMM", YesNo(caps.x86_smm())});
    rows.push_back({"XSAVE", YesNo(caps.xsave())});
    rows.push_back({"XCRS", YesNo(caps.xcrs())});
    rows.push_back({"TSC", caps.tsc_khz() == 0
                               ? "unknown"
                               : absl::StrCat(caps.tsc_khz(), " kHz")});
  }
  if (arm64) {
    rows.push_back(
        {"SError ESR injection (RAS)", YesNo(caps.arm_inject_serror_esr())});
    rows.push_back(
        {"external data abort injection", YesNo(caps.arm_inject_ext_dabt())});
    rows.push_back({"IPA size", absl::StrCat(caps.arm_ipa_size(), " bits")});
    rows.push_back(
        {"preferred target", absl::StrCat(caps.arm_preferred_target())});
  }
  return FormatAligned(rows);
}

std::string FormatGuestCommandResponse(
    const v1::GuestCommandResponse& response) {
  if (response.reports().empty()) {
    return "sent (no report; --wait-ms N waits for one)\n";
  }
  std::string out;
  for (const v1::GuestReportEvent& report : response.reports()) {
    absl::StrAppend(&out, FormatGuestReport(report), "\n");
  }
  return out;
}

}  // namespace vexstate::client
