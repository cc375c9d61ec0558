#include "server/migration_calls.h"

#include <utility>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "migration/data_service.h"
#include "migration/tls.h"
#include "server/worker/grpc_status.h"

namespace vexstate::vexd {

bool IsSettled(v1::MigrationPhase phase) {
  return phase == v1::MIGRATION_COMPLETED || phase == v1::MIGRATION_FAILED || phase == v1::MIGRATION_CANCELLED;
}

std::unique_ptr<grpc::ClientContext> ContextWithDeadline(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

absl::StatusOr<std::unique_ptr<PeerClient>> PeerClient::Connect(const std::string& destination,
                                                                const std::string& tls_dir) {
  const std::string scheme = "tcp:";
  if (destination.compare(0, scheme.size(), scheme) != 0 || destination.size() <= scheme.size()) {
    return absl::InvalidArgumentError(absl::StrFormat("destination '%s' is not tcp:HOST:PORT", destination));
  }
  absl::StatusOr<migration::TlsPem> tls = migration::LoadTls(migration::TlsFilesIn(tls_dir, "client"));
  if (!tls.ok()) return tls.status();
  // Keepalive: a cut link fails the peer calls within seconds (each also has a deadline).
  grpc::ChannelArguments args;
  migration::KeepaliveChannelArgs(args);
  return std::unique_ptr<PeerClient>(new PeerClient(v1::MigrationPeer::NewStub(
      grpc::CreateCustomChannel(destination.substr(scheme.size()), migration::ClientTlsCredentials(*tls), args))));
}

absl::StatusOr<v1::FinishResponse> PeerClient::Finish(const std::string& migration_id, bool commit,
                                                      absl::Duration timeout) {
  std::unique_ptr<grpc::ClientContext> context = ContextWithDeadline(timeout);
  v1::FinishRequest request;
  request.set_migration_id(migration_id);
  request.set_commit(commit);
  v1::FinishResponse response;
  grpc::Status rpc = stub_->Finish(context.get(), request, &response);
  if (!rpc.ok()) return worker::FromGrpcStatus(rpc);
  return response;
}

absl::StatusOr<v1::FinishResponse> PeerClient::QueryIncoming(const std::string& migration_id, absl::Duration timeout) {
  std::unique_ptr<grpc::ClientContext> context = ContextWithDeadline(timeout);
  v1::QueryIncomingRequest request;
  request.set_migration_id(migration_id);
  v1::FinishResponse response;
  grpc::Status rpc = stub_->QueryIncoming(context.get(), request, &response);
  if (!rpc.ok()) return worker::FromGrpcStatus(rpc);
  return response;
}

absl::StatusOr<v1::FinishResponse> PeerClient::Settle(const std::string& migration_id, bool commit,
                                                      absl::Duration call_timeout, absl::Time give_up,
                                                      const std::function<bool()>& stop) {
  absl::StatusOr<v1::FinishResponse> answer = Finish(migration_id, commit, call_timeout);
  while (!(answer.ok() && IsSettled(answer->phase())) && absl::Now() < give_up && !(stop && stop())) {
    absl::SleepFor(absl::Milliseconds(500));
    answer = QueryIncoming(migration_id, call_timeout);
    // Verified but not yet told: say it again.
    if (answer.ok() && !IsSettled(answer->phase())) answer = Finish(migration_id, commit, call_timeout);
  }
  if (answer.ok() && !IsSettled(answer->phase())) {
    return absl::DeadlineExceededError(
        absl::StrFormat("the destination still reports phase %s", v1::MigrationPhase_Name(answer->phase())));
  }
  return answer;
}

absl::StatusOr<v1::VmInfo> ConfirmOnWorker(WorkerConnection& worker, bool committed, const std::string& destination,
                                           absl::Duration timeout) {
  std::unique_ptr<grpc::ClientContext> context = ContextWithDeadline(timeout);
  v1::ConfirmMigrateOutRequest request;
  request.set_committed(committed);
  request.set_destination(destination);
  v1::VmInfo info;
  grpc::Status rpc = worker.stub->ConfirmMigrateOut(context.get(), request, &info);
  if (!rpc.ok()) return worker::FromGrpcStatus(rpc);
  return info;
}

}  // namespace vexstate::vexd
