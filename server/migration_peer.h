// MigrationPeer (migration.proto): the destination side of live migration, served host to host
// on --migration_listen with mutual TLS (vexd_main.cc).
//
// Prepare: checks the VM's requirements against this host (HostCapabilities with
// --max_mce_banks applied) BEFORE the source pauses; then launches a hidden worker in incoming
// mode (supervisor.h) whose MigrationData endpoint listens on `data_host`, and answers with that
// endpoint and the worker's one-time token. Finish(commit) has the worker verify, restore and
// run the VM, which then becomes an ordinary VM here; Finish(false) discards it and forgets it.
// QueryIncoming answers from the worker (MigrationDestination::Describe).
//
// A migration id is accepted by Prepare once: while this vexd runs, while its incoming VM exists,
// and, once settled, for good (its recorded outcome); a replayed or duplicated Prepare is
// ALREADY_EXISTS.
//
// Exactly once (SPEC §4.1): FAILED means "this host will never run that copy". A migration this
// host settled is answered from its recorded outcome (incoming_outcomes.h), also after a restart
// of either vexd: a discarded one FAILED, a committed one COMPLETED. An incoming VM whose worker
// died before it was handed Finish(commit) is discarded (FAILED); see supervisor.h. An id this
// vexd does not know at all is answered FAILED by Finish(false) (nothing of it can run: an
// incoming VM's record, which names its migration, is written before its token ever leaves this
// host and removed only after its outcome is recorded) and NOT_FOUND by QueryIncoming.
//
// Thread-safety: thread-safe (gRPC calls the handlers concurrently).
#ifndef VEXSTATE_SERVER_MIGRATION_PEER_H_
#define VEXSTATE_SERVER_MIGRATION_PEER_H_

#include <memory>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/server.h"
#include "server/supervisor.h"
#include "vexstate/v1/migration.grpc.pb.h"

namespace vexstate::vexd {

class MigrationPeerImpl final : public v1::MigrationPeer::Service {
 public:
  struct Options {
    std::string data_host;  // where incoming workers listen (port 0)
    std::string tls_dir;    // tools/make_certs.sh files
    uint32_t max_mce_banks = 0;
    absl::Duration worker_call_timeout = absl::Seconds(30);
  };

  // `supervisor` must outlive the service.
  MigrationPeerImpl(Supervisor* supervisor, Options options) : supervisor_(*supervisor), options_(std::move(options)) {}

  grpc::Status Prepare(grpc::ServerContext* context, const v1::PrepareRequest* request,
                       v1::PrepareResponse* response) override;
  grpc::Status Finish(grpc::ServerContext* context, const v1::FinishRequest* request,
                      v1::FinishResponse* response) override;
  grpc::Status QueryIncoming(grpc::ServerContext* context, const v1::QueryIncomingRequest* request,
                             v1::FinishResponse* response) override;

 private:
  absl::StatusOr<v1::PrepareResponse> DoPrepare(const v1::PrepareRequest& request);
  absl::StatusOr<v1::FinishResponse> DoFinish(const v1::FinishRequest& request);
  // This host as a destination: probed once, --max_mce_banks applied.
  absl::StatusOr<v1::HostCapabilities> Host();
  // Discards and forgets the incoming VM `name`.
  void Discard(const std::string& id, const std::string& name, const std::shared_ptr<WorkerConnection>& worker);

  Supervisor& supervisor_;
  const Options options_;
  absl::Mutex mu_;
  std::optional<v1::HostCapabilities> host_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> prepared_ ABSL_GUARDED_BY(mu_);  // every migration id Prepare was asked for
};

// The gRPC server of --migration_listen: MigrationPeerImpl over mutual TLS.
class MigrationPeerServer {
 public:
  // Null (and OK) when `listen` is empty. `listen` is "tcp:HOST:PORT" (port 0 picks one);
  // `tls_dir` is required with it. `supervisor` must outlive the server.
  static absl::StatusOr<std::unique_ptr<MigrationPeerServer>> Start(const std::string& listen,
                                                                    const std::string& tls_dir, Supervisor* supervisor);
  void Shutdown();

 private:
  explicit MigrationPeerServer(std::unique_ptr<MigrationPeerImpl> service) : service_(std::move(service)) {}

  std::unique_ptr<MigrationPeerImpl> service_;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_MIGRATION_PEER_H_
