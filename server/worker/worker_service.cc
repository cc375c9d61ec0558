#include "server/worker/worker_service.h"

#include <memory>
#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "migration/data_service.h"
#include "migration/testing_corrupt_run.h"
#include "migration/testing_phase_delay.h"
#include "migration/tls.h"
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

// ----------------------------------------------------------------------------- migration

grpc::Status WorkerService::BeginMigration(grpc::ServerContext*, const v1::WorkerStatusRequest*,
                                           v1::MigrationRequirements* response) {
  return Reply(worker_->BeginMigration(), response);
}

grpc::Status WorkerService::MigrateOut(grpc::ServerContext* context, const v1::MigrateOutRequest* request,
                                       grpc::ServerWriter<v1::MigrateOutUpdate>* writer) {
  if (request->migration_id().empty() || request->data_endpoint().empty() || request->token().empty()) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "MigrateOut needs migration_id, data_endpoint and token");
  }
  absl::StatusOr<migration::TlsPem> tls = migration::LoadTls(migration::TlsFilesIn(request->tls_dir(), "client"));
  if (!tls.ok()) return ToGrpcStatus(tls.status());
  migration::SourceOptions options;
  options.migration_id = request->migration_id();
  options.token = request->token();
  migration::ApplyRequest(request->request(), options);
  // Called on Run's thread only. When vexd's call is gone (its deadline, or vexd died), nobody
  // can forward the verdict: cancel, so that the engine ends promptly (vexd settles the rest
  // with ConfirmMigrateOut, which waits for this migration to end).
  // TEST-ONLY (migration/testing_phase_delay.h; inactive unless its environment variable is
  // set): holds PRECOPY or STOP_AND_COPY here, after vexd was told the phase.
  auto phase_delay = std::make_shared<migration::TestingPhaseDelay>(migration::TestingPhaseDelay::FromEnvironment());
  options.on_progress = [this, writer, context, phase_delay](const v1::MigrationProgress& progress) {
    if (context->IsCancelled()) worker_->CancelMigrateOut();
    v1::MigrateOutUpdate update;
    *update.mutable_progress() = progress;
    writer->Write(update);
    // PRECOPY is held once pages are on the wire (after round 0), not before the first one.
    if (progress.phase() != v1::MIGRATION_PRECOPY || progress.pages_sent() > 0) phase_delay->At(progress.phase());
  };
  migration::SourceResult result;
  // Deadlines (SPEC §4.1: a broken link fails the migration promptly): the whole stream is
  // bounded by MigrateVmRequest.timeout_ms (default 10 min); a dead link is noticed within
  // seconds by keepalive and the write watchdog (migration/data_service.h).
  migration::SinkOptions sink_options;
  const uint32_t timeout_ms = request->request().timeout_ms() != 0 ? request->request().timeout_ms() : 10 * 60 * 1000;
  sink_options.stream_timeout = absl::Milliseconds(timeout_ms);
  absl::StatusOr<std::unique_ptr<migration::GrpcPacketSink>> sink =
      migration::GrpcPacketSink::Open(request->data_endpoint(), *tls, sink_options);
  if (sink.ok()) {
    // TEST-ONLY (migration/testing_corrupt_run.h): passes every packet through unchanged
    // unless its environment variable is set.
    migration::TestingCorruptRunSink maybe_corrupting = migration::TestingCorruptRunSink::FromEnvironment(sink->get());
    result = worker_->MigrateOut(std::move(options), maybe_corrupting, request->request().destination());
  } else {
    result.status = sink.status();  // nothing left this process: the VM never paused
  }
  v1::MigrateOutUpdate last;
  v1::MigrateOutDone& done = *last.mutable_done();
  done.set_code(static_cast<int>(result.status.code()));
  done.set_message(std::string(result.status.message()));
  done.set_final_state_sent(result.final_state_sent);
  done.set_resumed_by_source(result.resumed_by_source);
  done.set_paused_by_source(result.paused_by_source);
  if (result.pause_time != absl::InfinitePast()) done.set_pause_unix_ns(absl::ToUnixNanos(result.pause_time));
  v1::MigrationTimings& timings = *done.mutable_timings();
  auto unix_ns = [](absl::Time t) { return t == absl::InfinitePast() ? 0 : absl::ToUnixNanos(t); };
  timings.set_source_last_heartbeat_unix_ns(worker_->Info().last_heartbeat_unix_ns());
  timings.set_pause_unix_ns(unix_ns(result.pause_time));
  timings.set_paused_unix_ns(unix_ns(result.paused_time));
  timings.set_final_state_sent_unix_ns(unix_ns(result.final_state_time));
  timings.set_digest_sent_unix_ns(unix_ns(result.digest_time));
  timings.set_verified_unix_ns(unix_ns(result.verified_time));
  if (result.end_time != absl::InfinitePast()) done.set_total_ms(absl::ToInt64Milliseconds(result.total()));
  done.set_bytes_sent(result.bytes_sent);
  done.set_rounds(result.precopy_rounds);
  done.set_memory_sha256(result.memory_sha256);
  writer->Write(last);
  return grpc::Status::OK;
}

grpc::Status WorkerService::CancelMigrateOut(grpc::ServerContext*, const v1::CancelMigrateOutRequest*,
                                             v1::VmInfo* response) {
  worker_->CancelMigrateOut();
  *response = worker_->Info();
  return grpc::Status::OK;
}

grpc::Status WorkerService::ConfirmMigrateOut(grpc::ServerContext*, const v1::ConfirmMigrateOutRequest* request,
                                              v1::VmInfo* response) {
  grpc::Status status = Reply(worker_->ConfirmMigrateOut(request->committed(), request->destination()), response);
  // Committed: the VM runs on the destination and was stopped here; the worker's job is done.
  if (status.ok() && request->committed() && on_shutdown_) on_shutdown_();
  return status;
}

grpc::Status WorkerService::GetIncoming(grpc::ServerContext*, const v1::WorkerStatusRequest*,
                                        v1::IncomingStatus* response) {
  migration::MigrationDestination* incoming = worker_->incoming();
  if (incoming == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "this worker has no incoming migration");
  }
  response->set_data_endpoint(data_endpoint_);
  response->set_token(incoming->token());
  for (const std::string& d : incoming->degradations()) response->add_degradations(d);
  *response->mutable_describe() = incoming->Describe();
  return grpc::Status::OK;
}

grpc::Status WorkerService::FinishIncoming(grpc::ServerContext*, const v1::FinishRequest* request,
                                           v1::FinishResponse* response) {
  grpc::Status status = Reply(worker_->FinishIncoming(request->commit()), response);
  if (status.ok() && !request->commit() && on_shutdown_) on_shutdown_();
  return status;
}

}  // namespace vexstate::worker
