#include "server/worker/worker_service.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "server/worker/grpc_status.h"

namespace vexstate::worker {

namespace {

// Copies a result into the response, or turns its error into the same gRPC status.
template <typename T>
grpc::Status Reply(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

}  // namespace

WorkerService::WorkerService(WorkerVm* worker, std::function<void()> on_shutdown)
    : worker_(worker), on_shutdown_(std::move(on_shutdown)) {}

grpc::Status WorkerService::GetStatus(grpc::ServerContext*, const v1::WorkerStatusRequest*,
                                      v1::WorkerStatus* response) {
  *response->mutable_vm() = worker_->Info();
  *response->mutable_host() = worker_->host();
  return grpc::Status::OK;
}

grpc::Status WorkerService::Resume(grpc::ServerContext*, const v1::VmRef*, v1::VmInfo* response) {
  return Reply(worker_->Resume(), response);
}

grpc::Status WorkerService::Pause(grpc::ServerContext*, const v1::VmRef*, v1::VmInfo* response) {
  return Reply(worker_->Pause(), response);
}

grpc::Status WorkerService::Shutdown(grpc::ServerContext*, const v1::WorkerShutdownRequest*, v1::VmInfo* response) {
  *response = worker_->Stop("stopped by request (Shutdown)");
  if (on_shutdown_) on_shutdown_();
  return grpc::Status::OK;
}

grpc::Status WorkerService::InjectSError(grpc::ServerContext*, const v1::InjectSErrorRequest* request,
                                         v1::InjectResponse* response) {
  return Reply(worker_->InjectSError(*request), response);
}

grpc::Status WorkerService::InjectExternalAbort(grpc::ServerContext*, const v1::InjectExternalAbortRequest* request,
                                                v1::InjectResponse* response) {
  return Reply(worker_->InjectExternalAbort(*request), response);
}

grpc::Status WorkerService::InjectException(grpc::ServerContext*, const v1::InjectExceptionRequest* request,
                                            v1::InjectResponse* response) {
  return Reply(worker_->InjectException(*request), response);
}

grpc::Status WorkerService::InjectNmi(grpc::ServerContext*, const v1::InjectNmiRequest* request,
                                      v1::InjectResponse* response) {
  return Reply(worker_->InjectNmi(*request), response);
}

grpc::Status WorkerService::InjectMachineCheck(grpc::ServerContext*, const v1::InjectMachineCheckRequest* request,
                                               v1::InjectResponse* response) {
  return Reply(worker_->InjectMachineCheck(*request), response);
}

grpc::Status WorkerService::QueryPending(grpc::ServerContext*, const v1::QueryPendingRequest*,
                                         v1::VmPending* response) {
  return Reply(worker_->QueryPending(), response);
}

grpc::Status WorkerService::GetExceptionState(grpc::ServerContext*, const v1::GetExceptionStateRequest* request,
                                              v1::GetExceptionStateResponse* response) {
  return Reply(worker_->GetExceptionState(*request), response);
}

grpc::Status WorkerService::SetExceptionState(grpc::ServerContext*, const v1::SetExceptionStateRequest* request,
                                              v1::SetExceptionStateResponse* response) {
  return Reply(worker_->SetExceptionState(*request), response);
}

grpc::Status WorkerService::SaveSnapshot(grpc::ServerContext*, const v1::SaveSnapshotRequest* request,
                                         v1::SaveSnapshotResponse* response) {
  return Reply(worker_->SaveSnapshot(*request), response);
}

grpc::Status WorkerService::SendGuestCommand(grpc::ServerContext*, const v1::GuestCommandRequest* request,
                                             v1::GuestCommandResponse* response) {
  return Reply(worker_->SendGuestCommand(*request), response);
}

grpc::Status WorkerService::WatchEvents(grpc::ServerContext* context, const v1::WatchWorkerEventsRequest* request,
                                        grpc::ServerWriter<v1::Event>* writer) {
  EventLog& log = worker_->events();
  uint64_t cursor = request->replay() ? 0 : log.last_sequence();
  bool first_read = true;
  // The sync API has no cancellation callback: wait in short slices and look.
  while (!context->IsCancelled()) {
    EventLog::Batch batch = log.Read(cursor, kCancelPoll);
    // A replay starts wherever the buffer starts; any other gap is events this reader lost.
    if (batch.missed > 0 && !(first_read && request->replay())) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          absl::StrFormat("event watcher fell behind: %u events after #%u were dropped from the "
                                          "worker's buffer before they were sent; watch again with replay",
                                          batch.missed, cursor));
    }
    first_read = false;
    for (const v1::Event& event : batch.events) {
      if (!writer->Write(event)) return grpc::Status(grpc::StatusCode::CANCELLED, "event watcher went away");
      cursor = event.sequence();
    }
    if (batch.closed) return grpc::Status::OK;
  }
  return grpc::Status(grpc::StatusCode::CANCELLED, "event watch cancelled by the client");
}

}  // namespace vexstate::worker
