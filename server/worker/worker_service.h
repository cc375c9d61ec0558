// WorkerService: the VmWorker gRPC service (worker.proto) over one WorkerVm.
//
// A thin translation layer: every absl::Status from WorkerVm becomes the grpc::Status with the
// same code and message, so vexd can pass errors on unchanged.
//
// WatchEvents: with `replay`, first every event the worker still holds (its buffer keeps the
// newest EventLog::kDefaultCapacity), then new ones as they happen, in sequence order. The
// stream ends with OK after the worker's last event (VM_STOPPED) when it shuts down, with
// CANCELLED when the client cancels, and with RESOURCE_EXHAUSTED if a slow reader fell so far
// behind that events it had not yet received were dropped from the buffer (the message names
// how many; watch again with replay).
//
// Shutdown: stops the VM, answers with the final VmInfo, then calls `on_shutdown` (which must
// only schedule the process's exit: it runs on the RPC thread before the answer is sent).
//
// Migration (worker.proto): MigrateOut loads the client TLS files of the request's tls_dir,
// opens the data stream to the destination worker and streams progress, then one update with
// `done` (what MigrationSource::Run left behind). FinishIncoming(commit = false) discards the
// incoming VM and then calls `on_shutdown`, like Shutdown: a discarded worker has nothing left.
//
// Thread-safety: the service is called on gRPC's threads; WorkerVm serialises what it must.
#ifndef VEXSTATE_SERVER_WORKER_WORKER_SERVICE_H_
#define VEXSTATE_SERVER_WORKER_WORKER_SERVICE_H_

#include <functional>
#include <string>

#include "absl/time/time.h"
#include "server/worker/worker_vm.h"
#include "vexstate/v1/worker.grpc.pb.h"

namespace vexstate::worker {

class WorkerService final : public v1::VmWorker::Service {
 public:
  // `worker` must outlive the service.
  WorkerService(WorkerVm* worker, std::function<void()> on_shutdown);

  grpc::Status GetStatus(grpc::ServerContext* context, const v1::WorkerStatusRequest* request,
                         v1::WorkerStatus* response) override;
  grpc::Status Resume(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) override;
  grpc::Status Pause(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) override;
  grpc::Status Shutdown(grpc::ServerContext* context, const v1::WorkerShutdownRequest* request,
                        v1::VmInfo* response) override;

  grpc::Status InjectSError(grpc::ServerContext* context, const v1::InjectSErrorRequest* request,
                            v1::InjectResponse* response) override;
  grpc::Status InjectExternalAbort(grpc::ServerContext* context, const v1::InjectExternalAbortRequest* request,
                                   v1::InjectResponse* response) override;
  grpc::Status InjectException(grpc::ServerContext* context, const v1::InjectExceptionRequest* request,
                               v1::InjectResponse* response) override;
  grpc::Status InjectNmi(grpc::ServerContext* context, const v1::InjectNmiRequest* request,
                         v1::InjectResponse* response) override;
  grpc::Status InjectMachineCheck(grpc::ServerContext* context, const v1::InjectMachineCheckRequest* request,
                                  v1::InjectResponse* response) override;
  grpc::Status QueryPending(grpc::ServerContext* context, const v1::QueryPendingRequest* request,
                            v1::VmPending* response) override;
  grpc::Status GetExceptionState(grpc::ServerContext* context, const v1::GetExceptionStateRequest* request,
                                 v1::GetExceptionStateResponse* response) override;
  grpc::Status SetExceptionState(grpc::ServerContext* context, const v1::SetExceptionStateRequest* request,
                                 v1::SetExceptionStateResponse* response) override;
  grpc::Status SaveSnapshot(grpc::ServerContext* context, const v1::SaveSnapshotRequest* request,
                            v1::SaveSnapshotResponse* response) override;
  grpc::Status SendGuestCommand(grpc::ServerContext* context, const v1::GuestCommandRequest* request,
                                v1::GuestCommandResponse* response) override;

  grpc::Status WatchEvents(grpc::ServerContext* context, const v1::WatchWorkerEventsRequest* request,
                           grpc::ServerWriter<v1::Event>* writer) override;

  grpc::Status BeginMigration(grpc::ServerContext* context, const v1::WorkerStatusRequest* request,
                              v1::MigrationRequirements* response) override;
  grpc::Status MigrateOut(grpc::ServerContext* context, const v1::MigrateOutRequest* request,
                          grpc::ServerWriter<v1::MigrateOutUpdate>* writer) override;
  grpc::Status CancelMigrateOut(grpc::ServerContext* context, const v1::CancelMigrateOutRequest* request,
                                v1::VmInfo* response) override;
  grpc::Status ConfirmMigrateOut(grpc::ServerContext* context, const v1::ConfirmMigrateOutRequest* request,
                                 v1::VmInfo* response) override;
  grpc::Status GetIncoming(grpc::ServerContext* context, const v1::WorkerStatusRequest* request,
                           v1::IncomingStatus* response) override;
  grpc::Status FinishIncoming(grpc::ServerContext* context, const v1::FinishRequest* request,
                              v1::FinishResponse* response) override;

  // The incoming migration's data endpoint ("HOST:PORT"), for GetIncoming. Set before serving.
  void set_data_endpoint(std::string endpoint) { data_endpoint_ = std::move(endpoint); }

 private:
  // How often a waiting WatchEvents checks whether its client has gone.
  static constexpr absl::Duration kCancelPoll = absl::Milliseconds(100);

  WorkerVm* const worker_;
  const std::function<void()> on_shutdown_;
  std::string data_endpoint_;
};

}  // namespace vexstate::worker

#endif  // VEXSTATE_SERVER_WORKER_WORKER_SERVICE_H_
