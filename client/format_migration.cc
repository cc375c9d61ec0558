#include "client/format_migration.h"

#include <cstdint>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "client/format_fields.h"
#include "client/table.h"

namespace vexstate::client {
namespace {

constexpr uint64_t kPageBytes = 4096;
constexpr int kBarWidth = 20;

std::string Mib(uint64_t bytes) { return absl::StrFormat("%.1f MiB", bytes / 1048576.0); }

bool PastPrecopy(v1::MigrationPhase phase) {
  return phase >= v1::MIGRATION_STOP_AND_COPY && phase <= v1::MIGRATION_COMPLETED;
}

}  // namespace

std::string MigrationPhaseName(v1::MigrationPhase phase) {
  if (!v1::MigrationPhase_IsValid(phase)) return absl::StrCat("PHASE(", static_cast<int>(phase), ")");
  return std::string(absl::StripPrefix(v1::MigrationPhase_Name(phase), "MIGRATION_"));
}

std::string FormatMigrationProgress(const v1::MigrationProgress& progress) {
  std::string out = MigrationPhaseName(progress.phase());
  if (progress.round() != 0) absl::StrAppend(&out, " round ", progress.round());
  std::vector<std::string> fields;
  const bool copying = progress.phase() == v1::MIGRATION_PRECOPY || progress.phase() == v1::MIGRATION_STOP_AND_COPY;
  if (copying || progress.bytes_sent() != 0) fields.push_back(absl::StrCat("sent ", Mib(progress.bytes_sent())));
  if (copying) {
    fields.push_back(absl::StrCat("remaining ", Mib(progress.pages_remaining() * kPageBytes)));
    fields.push_back(absl::StrCat("dirty ", Mib(progress.dirty_pages_per_sec() * kPageBytes), "/s"));
    fields.push_back(absl::StrCat("expected downtime ", progress.expected_downtime_ms(), " ms"));
  }
  if (!fields.empty()) absl::StrAppend(&out, ": ", absl::StrJoin(fields, ", "));
  return out;
}

std::string FormatMigrationProgressLine(const v1::MigrationProgress& progress) {
  return FormatMigrationProgress(progress) + "\n";
}

std::string FormatMigrationProgressBar(const v1::MigrationProgress& progress) {
  uint64_t total = progress.pages_sent() + progress.pages_remaining();
  int filled = 0;
  if (PastPrecopy(progress.phase())) {
    filled = kBarWidth;
  } else if (total != 0) {
    filled = static_cast<int>(progress.pages_sent() * kBarWidth / total);
  }
  return absl::StrCat("[", std::string(filled, '#'), std::string(kBarWidth - filled, '.'), "] ",
                      FormatMigrationProgress(progress));
}

// "state sent 3.1 ms, verified 9.0 ms, ..." after the pause (empty without timings).
std::string FormatAfterPause(const v1::MigrationTimings& t) {
  if (t.pause_unix_ns() == 0) return "";
  const std::pair<const char*, int64_t> steps[] = {
      {"paused", t.paused_unix_ns()},
      {"state sent", t.final_state_sent_unix_ns()},         {"digest sent", t.digest_sent_unix_ns()},
      {"verified", t.verified_unix_ns()},                   {"commit journalled", t.commit_journaled_unix_ns()},
      {"destination resumed", t.destination_resumed_unix_ns()}, {"finished", t.finished_unix_ns()},
  };
  std::vector<std::string> parts;
  for (const auto& [name, ns] : steps) {
    if (ns != 0) parts.push_back(absl::StrFormat("%s %.1f ms", name, (ns - t.pause_unix_ns()) / 1e6));
  }
  return absl::StrJoin(parts, ", ");
}

std::string FormatMigrationResult(const v1::MigrationResult& result) {
  std::vector<std::vector<std::string>> rows = {
      {"outcome", MigrationPhaseName(result.outcome())},
      {"destination", result.destination().empty() ? "-" : result.destination()},
      {"total", absl::StrCat(result.total_ms(), " ms")},
      {"downtime", absl::StrCat(result.downtime_ms(), " ms")},
      {"sent", FormatSize(result.bytes_sent())},
      {"rounds", absl::StrCat(result.rounds())},
  };
  if (std::string steps = FormatAfterPause(result.timings()); !steps.empty()) rows.push_back({"after pause", steps});
  if (result.degradations().empty()) rows.push_back({"degraded", "nothing"});
  for (const std::string& degradation : result.degradations()) rows.push_back({"degraded", degradation});
  rows.push_back({"memory sha256", result.memory_sha256().empty() ? "-" : result.memory_sha256()});
  if (!result.error().empty()) rows.push_back({"error", result.error()});
  return FormatAligned(rows);
}

std::string FormatMigrationStatus(const v1::MigrationStatus& status) {
  if (status.migration_id().empty() && status.phase() == v1::MIGRATION_PHASE_UNSPECIFIED) {
    return absl::StrCat(status.vm(), ": no migration\n");
  }
  std::vector<std::vector<std::string>> rows = {
      {"vm", status.vm()},
      {"migration", status.migration_id()},
      {"phase", MigrationPhaseName(status.phase())},
  };
  if (status.has_last_progress()) rows.push_back({"progress", FormatMigrationProgress(status.last_progress())});
  std::string out = FormatAligned(rows);
  if (status.last_progress().has_result()) out += FormatMigrationResult(status.last_progress().result());
  return out;
}

}  // namespace vexstate::client
