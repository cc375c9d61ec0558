#include "client/format_snapshot.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "client/format_exception.h"
#include "client/format_fields.h"
#include "client/format_vm.h"
#include "client/table.h"

namespace vexstate::client {

std::string FormatSaveSnapshot(const v1::SaveSnapshotResponse& response) {
  return FormatAligned({
      {"saved", response.path()},
      {"size", FormatSize(response.bytes())},
      {"memory stored", FormatSize(response.memory_bytes_stored())},
      {"sha256", response.sha256()},
  });
}

std::string FormatRestoreSnapshot(const v1::RestoreSnapshotResponse& response) {
  std::string out = FormatVmStateLine(response.vm());
  for (const std::string& degradation : response.degradations()) {
    absl::StrAppend(&out, "degraded: ", degradation, "\n");
  }
  return out;
}

std::string FormatInspectSnapshot(const v1::InspectSnapshotResponse& response) {
  const v1::VmConfig& config = response.config();
  const v1::HostCapabilities& source = response.source_host();
  std::string out = FormatAligned({
      {"format version", absl::StrCat(response.format_version())},
      {"producer", response.producer()},
      {"captured", FormatUnixNs(response.captured_unix_ns())},
      {"size", FormatSize(response.file_bytes())},
      {"memory stored", FormatSize(response.memory_bytes_stored())},
      {"sha256", response.sha256()},
      {"vm", config.name()},
      {"arch", ArchName(config.arch())},
      {"vcpus", absl::StrCat(config.vcpu_count())},
      {"memory", FormatMemory(config.memory_bytes())},
      {"guest", FormatGuest(config.guest())},
      {"source host",
       absl::StrCat(
           ArchName(source.arch()), ", Linux ",
           source.kernel_release().empty() ? "?" : source.kernel_release())},
  });
  absl::StrAppend(&out, "pending:\n");
  out += response.vcpus().empty() ? "  no vCPUs\n"
                                  : FormatPendingLines(response.vcpus(), "  ");
  return out;
}

}  // namespace vexstate::client
