// The calls a source vexd makes to settle an outgoing migration, shared by a live migration
// (migration_service.cc) and by the settling of one found in the journal after a restart
// (migration_recovery.cc).
//
// PeerClient: the destination vexd's MigrationPeer (migration_peer.h) over mutual TLS with the
// client pair of --migration_tls_dir, with keepalive (a cut link fails a call within seconds)
// and a deadline on every call.
//
// Thread-safety: PeerClient is thread-safe (gRPC stubs are); the functions hold no state.
#ifndef VEXSTATE_SERVER_MIGRATION_CALLS_H_
#define VEXSTATE_SERVER_MIGRATION_CALLS_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "server/worker_connection.h"
#include "vexstate/v1/migration.grpc.pb.h"
#include "vexstate/v1/worker.grpc.pb.h"

namespace vexstate::vexd {

// COMPLETED, FAILED or CANCELLED: the destination has decided, for good.
bool IsSettled(v1::MigrationPhase phase);

std::unique_ptr<grpc::ClientContext> ContextWithDeadline(absl::Duration timeout);

class PeerClient {
 public:
  // `destination` is "tcp:HOST:PORT"; errors of the TLS files keep their codes.
  static absl::StatusOr<std::unique_ptr<PeerClient>> Connect(const std::string& destination,
                                                             const std::string& tls_dir);

  v1::MigrationPeer::Stub& stub() { return *stub_; }
  absl::StatusOr<v1::FinishResponse> Finish(const std::string& migration_id, bool commit, absl::Duration timeout);
  absl::StatusOr<v1::FinishResponse> QueryIncoming(const std::string& migration_id, absl::Duration timeout);
  // The destination's verdict on a migration: Finish's answer, or QueryIncoming's every 500 ms
  // (saying Finish again while the destination reports a verified but unsettled copy) until it
  // is settled, `give_up` passes or `stop` returns true. DEADLINE_EXCEEDED (or the last call's
  // error) when nobody could say.
  absl::StatusOr<v1::FinishResponse> Settle(const std::string& migration_id, bool commit, absl::Duration call_timeout,
                                            absl::Time give_up, const std::function<bool()>& stop = nullptr);

 private:
  explicit PeerClient(std::unique_ptr<v1::MigrationPeer::Stub> stub) : stub_(std::move(stub)) {}
  std::unique_ptr<v1::MigrationPeer::Stub> stub_;
};

// ConfirmMigrateOut on the source worker (worker.proto): committed stops the VM there;
// otherwise it resumes the VM if the migration paused it.
absl::StatusOr<v1::VmInfo> ConfirmOnWorker(WorkerConnection& worker, bool committed, const std::string& destination,
                                           absl::Duration timeout);

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_MIGRATION_CALLS_H_
