#include "client/format_event.h"

#include <map>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "client/format_fields.h"
#include "vmm/arch/arm64/esr_decode.h"
#include "vmm/arch/x86_64/exception_names.h"
#include "vmm/arch/x86_64/mce_decode.h"

namespace vexstate::client {
namespace {

// The decoded meaning of each report field that has one, in the order the line
// shows them.
std::vector<std::string> DecodeReportFields(
    const v1::GuestReportEvent& report) {
  const auto& fields = report.fields();
  auto field = [&](const char* key) -> const uint64_t* {
    auto it = fields.find(key);
    return it == fields.end() ? nullptr : &it->second;
  };
  std::vector<std::string> decoded;
  // "vec" is an x86 vector only in EXC reports (UNEXPECTED: an offset from
  // VBAR_EL1; HOLD: an arch-specific hold_mask bit).
  if (const uint64_t* vec = field("vec");
      vec != nullptr && report.kind() == "EXC") {
    decoded.push_back(
        absl::StrCat("vec: ", x86::ExceptionName(static_cast<uint32_t>(*vec))));
  }
  if (const uint64_t* esr = field("esr")) {
    decoded.push_back(absl::StrCat("esr: ", arm64::DescribeEsr(*esr)));
  }
  if (const uint64_t* disr = field("disr")) {
    decoded.push_back(absl::StrCat("disr: ", arm64::DescribeDisr(*disr)));
  }
  if (const uint64_t* mcg_status = field("mcg_status")) {
    decoded.push_back(
        absl::StrCat("mcg_status: ", x86::DescribeMcgStatus(*mcg_status)));
  }
  if (const uint64_t* status = field("status")) {
    decoded.push_back(absl::StrCat("status: ", x86::DescribeMcStatus(*status)));
  }
  return decoded;
}

std::string DescribeEventKind(const v1::Event& event, std::string* what) {
  switch (event.kind_case()) {
    case v1::Event::kLifecycle: {
      const v1::LifecycleEvent& lifecycle = event.lifecycle();
      *what = VmStateName(lifecycle.state());
      if (!lifecycle.reason().empty()) {
        absl::StrAppend(what, " (", lifecycle.reason(), ")");
      }
      return "lifecycle";
    }
    case v1::Event::kInjection:
      *what = absl::StrCat("vCPU ", event.injection().vcpu(), ": ",
                           event.injection().what());
      return "injection";
    case v1::Event::kGuestReport:
      *what = FormatGuestReport(event.guest_report());
      return "guest";
    case v1::Event::KIND_NOT_SET:
      break;
  }
  *what = "(an event kind this vexctl does not know)";
  return "unknown";
}

}  // namespace

std::string FormatGuestReport(const v1::GuestReportEvent& report) {
  std::string line(absl::StripTrailingAsciiWhitespace(report.line()));
  if (line.empty()) {
    line = absl::StrCat("VEX ", report.kind());
    // Sorted by key: a proto map has no order.
    std::map<std::string, uint64_t> fields(report.fields().begin(),
                                           report.fields().end());
    for (const auto& [key, value] : fields) {
      absl::StrAppendFormat(&line, " %s=0x%x", key, value);
    }
  }
  std::string out = absl::StrCat("vCPU ", report.vcpu(), ": ", line);
  std::vector<std::string> decoded = DecodeReportFields(report);
  if (!decoded.empty()) {
    absl::StrAppend(&out, "  [", absl::StrJoin(decoded, "; "), "]");
  }
  return out;
}

std::string FormatEvent(const v1::Event& event) {
  std::string what;
  std::string kind = DescribeEventKind(event, &what);
  return absl::StrFormat("%s  %s  %-9s  %s", FormatUnixNs(event.time_unix_ns()),
                         event.vm().empty() ? "-" : event.vm(), kind, what);
}

}  // namespace vexstate::client
