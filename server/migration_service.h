// MigrationService (migration.proto): the orchestrator-facing side of live migration, on vexd's
// normal listeners, operator role. This vexd is the source; the destination is another vexd's
// MigrationPeer ("tcp:HOST:PORT" of its --migration_listen, mutual TLS with --migration_tls_dir).
//
// MigrateVm walks the phases and streams MigrationProgress; its last message carries `result`:
//   Begin    the VM's worker: BeginMigration (requirements)
//   Prepare  the peer: compatibility check, incoming worker, data endpoint + token — a refusal
//            here leaves the VM untouched (it never paused)
//   Perform  the VM's worker: MigrateOut (pre-copy, pause, final state, digest) to that endpoint
//   Finish   the peer: Finish(commit) if the destination verified the copy, else Finish(false)
//   Confirm  COMPLETED: the source worker stops the VM ("migrated to ...") and vexd forgets it
//            (gone from ListVms, record removed). FAILED/CANCELLED: the VM runs (or stays paused
//            if it was paused before) here; nothing remains on the destination.
// Exactly once (SPEC §4.1; the rule in migration.proto): the destination never runs a VM before
// Finish(commit). After MigrateOut sent the final state, the source worker holds the VM paused
// until vexd confirms the outcome (ConfirmMigrateOut). The phase is journalled
// (VmRecord.migration), and so is the commit intent (commit_sent) BEFORE Finish(commit) is
// sent: as soon as the worker reports stop-and-copy, so that the fsync overlaps the last pages
// and the destination's verification instead of delaying Finish(commit).
//  * Finish(commit) sent: the VM is released only by the peer's answer (COMPLETED: stopped
//    here; FAILED/CANCELLED to Finish or QueryIncoming: resumed here). When the peer cannot be
//    reached to settle it, the VM stays paused and the result says "outcome unknown: source
//    kept paused".
//  * Finish(commit) never sent (the transfer failed, or was cancelled): vexd sends one
//    best-effort Finish(false) and resumes the VM here once the destination confirmed the
//    discard, or, without an answer (a cut link), once the commit intent is withdrawn from the
//    journal: nobody will ever send Finish(commit), so the destination can never run its copy.
//    (If the intent cannot be withdrawn, the VM stays paused: "outcome unknown".)
//  * The final state never sent: the same, and the worker already resumed the VM (if it could
//    not, ConfirmMigrateOut(false) does).
//
// Deadlines: MigrateVmRequest.timeout_ms (default 10 min) bounds the transfer (the worker's
// data stream gets what is left of it); keepalive and a write watchdog on the data stream and
// keepalive plus per-call deadlines on the peer calls fail a dead link within seconds.
//
// A vexd restarted mid-migration (migration_recovery.cc; RecoverJournaled, in the background so
// that start-up never waits for the peer): each outgoing migration in the journal is settled
// with the destination over the same mutual TLS, and shows in QueryMigration meanwhile.
//  * commit_sent (the intent): Finish(commit) again (the destination commits a verified copy,
//    answers a settled one from its record, and discards an unverified one: FAILED), then
//    QueryIncoming, retried with backoff. COMPLETED: the source worker stops the VM and vexd forgets it.
//    FAILED/CANCELLED: the VM resumes here (if the migration paused it) and the journal entry is
//    cleared. No answer within settle_timeout: the VM stays paused and listed, its error says
//    "outcome unknown" and why, and vexd keeps asking until it gets an answer.
//  * pre-commit (PRECOPY, STOP_AND_COPY, or FINISH without commit_sent): the worker's transfer is
//    cancelled, the destination is told Finish(false) (best effort: it can never run a copy
//    without Finish(commit)), and the VM resumes here if the migration paused it.
//  * the source worker is gone too: nothing can run here; the entry is settled the same way, so
//    the record says where the VM went.
//
// CancelMigration: before Finish(commit) was sent, cancels (in Begin: Prepare is never sent; in
// Prepare: the destination is told to discard; from pre-copy on: the engine's Cancel); after it,
// FAILED_PRECONDITION. VEXSTATE_TESTING_PHASE_DELAY (migration/testing_phase_delay.h) holds a
// phase for tests. QueryMigration: the VM's migration in progress, else its last one.
//
// Thread-safety: thread-safe; one migration per VM at a time (ALREADY_EXISTS otherwise).
#ifndef VEXSTATE_SERVER_MIGRATION_SERVICE_H_
#define VEXSTATE_SERVER_MIGRATION_SERVICE_H_

#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "server/auth.h"
#include "server/supervisor.h"
#include "vexstate/v1/migration.grpc.pb.h"

namespace vexstate::vexd {

class MigrationServiceImpl final : public v1::MigrationService::Service {
 public:
  struct Options {
    std::string tls_dir;                                 // --migration_tls_dir (empty: MigrateVm is refused)
    absl::Duration prepare_timeout = absl::Seconds(90);  // the peer launches a worker
    absl::Duration peer_call_timeout = absl::Seconds(30);
    absl::Duration worker_call_timeout = absl::Seconds(30);
    // How long a lost Finish answer is asked after with QueryIncoming.
    absl::Duration settle_timeout = absl::Seconds(20);
    // FAULT INJECTION, for tests only (vexd's --testing_delay_before_finish_ms and
    // --testing_delay_before_confirm_ms; zero, the default, disables them): how long a migration
    // waits, with a log line, after the destination verified the copy (the commit intent is
    // journalled) and before Finish(commit) is sent,
    // and after the destination committed and before the source worker is told.
    absl::Duration testing_delay_before_finish = absl::ZeroDuration();
    absl::Duration testing_delay_before_confirm = absl::ZeroDuration();
  };

  // `auth` and `supervisor` must outlive the service.
  MigrationServiceImpl(const Authorizer* auth, Supervisor* supervisor, Options options)
      : auth_(*auth), supervisor_(*supervisor), options_(std::move(options)) {}
  ~MigrationServiceImpl() override { Shutdown(); }

  // Starts settling, in the background, every outgoing migration the journal holds (see above).
  // Call once, after the Supervisor has started.
  void RecoverJournaled();
  // Stops the background settling and waits for it (before the Supervisor shuts down): a VM
  // not settled yet stays as it is, for the next vexd. Idempotent.
  void Shutdown();

  grpc::Status MigrateVm(grpc::ServerContext* context, const v1::MigrateVmRequest* request,
                         grpc::ServerWriter<v1::MigrationProgress>* writer) override;
  grpc::Status CancelMigration(grpc::ServerContext* context, const v1::CancelMigrationRequest* request,
                               v1::MigrationStatus* response) override;
  grpc::Status QueryMigration(grpc::ServerContext* context, const v1::QueryMigrationRequest* request,
                              v1::MigrationStatus* response) override;

 private:
  class Run;
  struct Active {
    v1::MigrationStatus status;
    std::shared_ptr<WorkerConnection> worker;
    bool cancelled = false;
    bool commit_sent = false;
  };

  // migration_recovery.cc: one journalled migration, on its own thread.
  void SettleJournaled(const std::string& vm, v1::MigrationJournal journal, std::shared_ptr<Active> active);
  void SettlePreCommit(const std::string& vm, const v1::MigrationJournal& journal, Active& active);
  void SettleCommitted(const std::string& vm, v1::MigrationJournal journal, Active& active);
  // The destination can never run the VM: ConfirmMigrateOut(false) (resumes it if the migration
  // paused it), the journal entry cleared, `what` announced with the VM's state here.
  void KeepHere(const std::string& vm, Active& active, const std::string& peer, const std::string& what);
  // The VM's run state as vexd sees it now (UNSPECIFIED when unknown), for lifecycle events.
  v1::VmRunState StateOf(const std::string& vm);

  const Authorizer& auth_;
  Supervisor& supervisor_;
  const Options options_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Active>> active_ ABSL_GUARDED_BY(mu_);  // by VM name
  std::map<std::string, v1::MigrationStatus> last_ ABSL_GUARDED_BY(mu_);        // finished, by VM name
  absl::Notification stopping_;
  std::vector<std::thread> recoveries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_MIGRATION_SERVICE_H_
