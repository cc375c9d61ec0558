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
// (VmRecord.migration) and commit_sent is written BEFORE Finish(commit) is sent.
//  * Finish(commit) sent: the VM is released only by the peer's answer (COMPLETED: stopped
//    here; FAILED/CANCELLED to Finish or QueryIncoming: resumed here). When the peer cannot be
//    reached to settle it, the VM stays paused and the result says "outcome unknown: source
//    kept paused".
//  * Finish(commit) never sent (the transfer failed, or was cancelled): vexd sends one
//    best-effort Finish(false) and resumes the VM here whatever the answer (a cut link): nobody
//    will ever send Finish(commit), so the destination can never run its copy.
//  * The final state never sent: the same, and the worker already resumed the VM (if it could
//    not, ConfirmMigrateOut(false) does).
//
// Deadlines: MigrateVmRequest.timeout_ms (default 10 min) bounds the transfer (the worker's
// data stream gets what is left of it); keepalive and a write watchdog on the data stream and
// keepalive plus per-call deadlines on the peer calls fail a dead link within seconds.
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

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
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
  };

  // `auth` and `supervisor` must outlive the service.
  MigrationServiceImpl(const Authorizer* auth, Supervisor* supervisor, Options options)
      : auth_(*auth), supervisor_(*supervisor), options_(std::move(options)) {}

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

  const Authorizer& auth_;
  Supervisor& supervisor_;
  const Options options_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Active>> active_ ABSL_GUARDED_BY(mu_);  // by VM name
  std::map<std::string, v1::MigrationStatus> last_ ABSL_GUARDED_BY(mu_);        // finished, by VM name
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_MIGRATION_SERVICE_H_
