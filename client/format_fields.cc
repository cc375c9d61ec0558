#include "client/format_fields.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"

namespace vexstate::client {

std::string VmStateName(v1::VmRunState state) {
  const std::string& name = v1::VmRunState_Name(state);
  if (name.empty()) return absl::StrCat("STATE(", static_cast<int>(state), ")");
  return std::string(absl::StripPrefix(name, "VM_"));
}

std::string ArchName(v1::Arch arch) {
  if (arch == v1::ARCH_UNSPECIFIED) return "-";
  const std::string& name = v1::Arch_Name(arch);
  if (name.empty()) return absl::StrCat("arch(", static_cast<int>(arch), ")");
  return absl::AsciiStrToLower(absl::StripPrefix(name, "ARCH_"));
}

std::string FormatUnixNs(int64_t unix_ns) {
  if (unix_ns == 0) return "-";
  return absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::FromUnixNanos(unix_ns),
                          absl::UTCTimeZone());
}

std::string FormatMemory(uint64_t bytes) {
  constexpr uint64_t kMiB = uint64_t{1} << 20;
  if (bytes != 0 && bytes % kMiB == 0) {
    return absl::StrCat(bytes / kMiB, " MiB");
  }
  return absl::StrCat(bytes, " bytes");
}

std::string FormatSize(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return absl::StrCat(bytes, " bytes");
  double value = static_cast<double>(bytes) / 1024;
  int unit = 0;
  while (value >= 1024 && unit + 1 < 4) {
    value /= 1024;
    ++unit;
  }
  return absl::StrFormat("%.1f %s (%u bytes)", value, kUnits[unit], bytes);
}

std::string FormatGuest(const v1::GuestImage& guest) {
  switch (guest.source_case()) {
    case v1::GuestImage::kBundled:
      return absl::StrCat(guest.bundled(), " (bundled)");
    case v1::GuestImage::kPath:
      return guest.path();
    case v1::GuestImage::SOURCE_NOT_SET:
      break;
  }
  return "-";
}

}  // namespace vexstate::client
