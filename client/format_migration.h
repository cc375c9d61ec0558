// Human output of MigrationService responses: the progress of `vexctl migrate` (one line per
// message, or a bar redrawn in place on a terminal), its final result, and migrate-status /
// migrate-cancel.
//
// Contract: pure functions, safe from any thread. Strings documented as lines end with '\n';
// the progress bar does not (the caller redraws it in place).
#ifndef VEXSTATE_CLIENT_FORMAT_MIGRATION_H_
#define VEXSTATE_CLIENT_FORMAT_MIGRATION_H_

#include <string>

#include "vexstate/v1/migration.pb.h"

namespace vexstate::client {

// MIGRATION_PRECOPY -> "PRECOPY"; an unknown number -> "PHASE(<n>)".
std::string MigrationPhaseName(v1::MigrationPhase phase);

// "PRECOPY round 3: sent 96.0 MiB, remaining 2.0 MiB, dirty 64.0 MiB/s, expected downtime 31 ms"
// (without a newline; outside the copy phases only what is set: "PREPARE", "COMPLETED").
std::string FormatMigrationProgress(const v1::MigrationProgress& progress);
// A line for each progress message when the output is not a terminal.
std::string FormatMigrationProgressLine(const v1::MigrationProgress& progress);
// "[#######.............] " then FormatMigrationProgress, for redrawing on a terminal. The bar is
// the share of pages sent against sent + remaining (full from the stop-and-copy phase on).
std::string FormatMigrationProgressBar(const v1::MigrationProgress& progress);

// "key  value" lines: outcome, destination, total and downtime ms, bytes, rounds, each
// degradation, memory sha256, and the error of a migration that did not complete.
std::string FormatMigrationResult(const v1::MigrationResult& result);

// "key  value" lines: vm, migration id, phase, last progress; "<vm>: no migration" when vexd
// knows of none (migrate-status, migrate-cancel).
std::string FormatMigrationStatus(const v1::MigrationStatus& status);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_FORMAT_MIGRATION_H_
