// TEST-ONLY fault-injection hook: hold a migration at one phase so that a test can act there
// (CancelMigration in every phase, tests/migration/fault_stream_test.py). Off unless the
// environment variable
//
//   VEXSTATE_TESTING_PHASE_DELAY=PHASE:MS      e.g. PRECOPY:4000
//
// is set, in the environment of the SOURCE vexd (its workers inherit it). PHASE is a
// MigrationPhase name with or without its "MIGRATION_" prefix; the hold is MS milliseconds,
// taken once per migration, where the phase is under way and visible to `vexctl migrate-status`:
//   BEGIN          vexd, after the source worker answered Begin (before Prepare is sent)
//   PREPARE        vexd, after the destination answered Prepare (its incoming worker exists)
//   PRECOPY        the source worker, once pre-copy has sent pages (after round 0)
//   STOP_AND_COPY  the source worker, right after the VM was paused for the last pages
//   FINISH         vexd, after the verdict (the commit intent is journalled), before Finish(commit)
// Every hold is announced on stderr (the vexd or worker log), so a log never hides it. A
// malformed value is announced the same way and ignored. Never set it in production.
//
// Thread-safety: At() is for one thread (the migration's); FromEnvironment is thread-safe.
#ifndef VEXSTATE_MIGRATION_TESTING_PHASE_DELAY_H_
#define VEXSTATE_MIGRATION_TESTING_PHASE_DELAY_H_

#include "absl/time/time.h"
#include "vexstate/v1/migration.pb.h"

namespace vexstate::migration {

inline constexpr char kTestingPhaseDelayEnv[] = "VEXSTATE_TESTING_PHASE_DELAY";

class TestingPhaseDelay {
 public:
  // The hook as this process's environment sets it (inactive when unset).
  static TestingPhaseDelay FromEnvironment();
  // Parses "PHASE:MS"; inactive (and a line on stderr) when malformed.
  static TestingPhaseDelay Parse(const char* value);

  // Sleeps the configured time if `phase` is the configured one and this object has not
  // slept yet; otherwise returns at once.
  void At(v1::MigrationPhase phase);

  bool active() const { return phase_ != v1::MIGRATION_PHASE_UNSPECIFIED; }
  v1::MigrationPhase phase() const { return phase_; }
  absl::Duration delay() const { return delay_; }

 private:
  v1::MigrationPhase phase_ = v1::MIGRATION_PHASE_UNSPECIFIED;
  absl::Duration delay_;
  bool done_ = false;
};

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_TESTING_PHASE_DELAY_H_
