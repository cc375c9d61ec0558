#include "server/migration_peer.h"

#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpcpp/client_context.h"
#include "grpcpp/server_builder.h"
#include "migration/compatibility.h"
#include "migration/data_service.h"
#include "migration/tls.h"
#include "server/listen.h"
#include "server/logging.h"
#include "server/worker/grpc_status.h"
#include "vmm/arch/arch_vm.h"
#include "vmm/kvm/system.h"

namespace vexstate::vexd {
namespace {

std::unique_ptr<grpc::ClientContext> WithDeadline(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

template <typename T>
grpc::Status Reply(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return worker::ToGrpcStatus(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

}  // namespace

absl::StatusOr<v1::HostCapabilities> MigrationPeerImpl::Host() {
  absl::MutexLock lock(&mu_);
  if (!host_.has_value()) {
    absl::StatusOr<kvm::KvmSystem> kvm = kvm::KvmSystem::Open();
    if (!kvm.ok()) return kvm.status();
    absl::StatusOr<v1::HostCapabilities> host = ProbeHost(*kvm);
    if (!host.ok()) return host.status();
    if (options_.max_mce_banks != 0 && host->mce_banks() > options_.max_mce_banks) {
      host->set_mce_banks(options_.max_mce_banks);
    }
    host_ = std::move(*host);
  }
  return *host_;
}

grpc::Status MigrationPeerImpl::Prepare(grpc::ServerContext*, const v1::PrepareRequest* request,
                                        v1::PrepareResponse* response) {
  return Reply(DoPrepare(*request), response);
}

absl::StatusOr<v1::PrepareResponse> MigrationPeerImpl::DoPrepare(const v1::PrepareRequest& request) {
  if (absl::Status valid = IncomingOutcomes::ValidateId(request.migration_id()); !valid.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("Prepare: ", valid.message()));
  }
  if (!request.requirements().has_config()) return absl::InvalidArgumentError("Prepare: requirements.config is unset");
  // One id, one migration, for good: a replayed or duplicated Prepare must not make a second
  // incoming VM (with a fresh token) for a migration that is under way, committed or discarded.
  bool reused = false;
  {
    absl::MutexLock lock(&mu_);
    reused = !prepared_.insert(request.migration_id()).second;
  }
  // The recorded outcome remembers a settled id across restarts of this vexd.
  if (reused || supervisor_.Incoming(request.migration_id()).ok() ||
      supervisor_.SettledIncoming(request.migration_id()).has_value()) {
    return absl::AlreadyExistsError(
        absl::StrFormat("Prepare: migration id %s was already used on this host (a replayed or duplicated Prepare)",
                        request.migration_id()));
  }
  absl::StatusOr<v1::HostCapabilities> host = Host();
  if (!host.ok()) return host.status();
  v1::VmConfig config = supervisor_.ClampConfig(request.requirements().config());
  if (!request.vm_name().empty()) config.set_name(request.vm_name());
  // Compatibility first (SPEC §4.4): refused here, the source has not paused yet.
  std::vector<std::string> degradations;
  if (absl::Status s =
          migration::CheckCompatibility(request.requirements(), *host, request.allow_degrade(), &degradations);
      !s.ok()) {
    Log("migration %s: refused VM %s: %s", request.migration_id(), config.name(), s.message());
    return s;
  }
  std::vector<std::string> args = {"--migration_id", request.migration_id(),
                                   "--data_listen",  absl::StrCat(options_.data_host, ":0"),
                                   "--tls_dir",      options_.tls_dir};
  if (request.allow_degrade()) args.push_back("--allow_degrade");
  v1::MigrationJournal journal;
  journal.set_migration_id(request.migration_id());
  journal.set_phase(v1::MIGRATION_PREPARE);
  absl::StatusOr<std::shared_ptr<WorkerConnection>> worker =
      supervisor_.ReceiveVm(config, std::move(args), std::move(journal));
  if (!worker.ok()) return worker.status();
  std::unique_ptr<grpc::ClientContext> context = WithDeadline(options_.worker_call_timeout);
  v1::IncomingStatus incoming;
  grpc::Status rpc = (*worker)->stub->GetIncoming(context.get(), v1::WorkerStatusRequest(), &incoming);
  if (!rpc.ok()) {
    Discard(request.migration_id(), config.name(), *worker);
    return worker::FromGrpcStatus(rpc);
  }
  v1::PrepareResponse response;
  response.set_data_endpoint(incoming.data_endpoint());
  response.set_token(incoming.token());
  for (std::string& d : degradations) response.add_degradations(std::move(d));
  *response.mutable_destination_host() = *host;
  Log("migration %s: VM %s prepared, data endpoint %s", request.migration_id(), config.name(),
      incoming.data_endpoint());
  return response;
}

grpc::Status MigrationPeerImpl::Finish(grpc::ServerContext*, const v1::FinishRequest* request,
                                       v1::FinishResponse* response) {
  return Reply(DoFinish(*request), response);
}

absl::StatusOr<v1::FinishResponse> MigrationPeerImpl::DoFinish(const v1::FinishRequest& request) {
  const std::string& id = request.migration_id();
  // Settled here before (possibly before a restart of either vexd): the same answer again.
  if (std::optional<v1::FinishResponse> settled = supervisor_.SettledIncoming(id)) return *settled;
  absl::StatusOr<std::pair<std::string, std::shared_ptr<WorkerConnection>>> incoming = supervisor_.Incoming(id);
  if (!incoming.ok()) {
    if (incoming.status().code() != absl::StatusCode::kNotFound) return incoming.status();
    // Unknown here: nothing of it can run (see the header). A commit cannot be honoured.
    if (request.commit()) return incoming.status();
    v1::FinishResponse discarded;
    discarded.set_phase(v1::MIGRATION_FAILED);
    return discarded;
  }
  const auto& [name, worker] = *incoming;
  if (request.commit()) {
    // Exactly once: journalled before the worker can run the VM, so that a worker dying from
    // here on is not mistaken for a discard.
    absl::Status noted = supervisor_.NoteIncomingCommit(name);
    if (noted.code() == absl::StatusCode::kFailedPrecondition) {
      // The worker died before it was handed the commit: the VM never ran here.
      Log("migration %s: %s", id, noted.message());
      supervisor_.DiscardIncoming(name).IgnoreError();
      v1::FinishResponse failed;
      failed.set_phase(v1::MIGRATION_FAILED);
      return failed;
    }
    if (!noted.ok()) return noted;
  }
  std::unique_ptr<grpc::ClientContext> context = WithDeadline(options_.worker_call_timeout);
  v1::FinishRequest ask = request;
  v1::FinishResponse answer;
  grpc::Status rpc = worker->stub->FinishIncoming(context.get(), ask, &answer);
  if (!rpc.ok()) return supervisor_.ExplainWorkerFailure(name, worker::FromGrpcStatus(rpc));
  if (answer.phase() == v1::MIGRATION_COMPLETED) {
    supervisor_.CommitIncoming(name, answer);
    Log("migration %s: VM %s committed: running here", id, name);
    return answer;
  }
  Discard(id, name, worker);
  answer.set_phase(request.commit() ? v1::MIGRATION_FAILED : answer.phase());
  return answer;
}

void MigrationPeerImpl::Discard(const std::string& id, const std::string& name,
                                const std::shared_ptr<WorkerConnection>& worker) {
  {
    std::unique_ptr<grpc::ClientContext> context = WithDeadline(options_.worker_call_timeout);
    v1::FinishRequest request;
    request.set_commit(false);
    v1::FinishResponse answer;
    // The worker may be gone already (a failed commit): removing it below is what counts.
    worker->stub->FinishIncoming(context.get(), request, &answer).ok();
  }
  absl::Status removed = supervisor_.DiscardIncoming(name);
  if (!removed.ok()) Log("VM %s: removing the discarded incoming VM (migration %s): %s", name, id, removed.message());
}

grpc::Status MigrationPeerImpl::QueryIncoming(grpc::ServerContext*, const v1::QueryIncomingRequest* request,
                                              v1::FinishResponse* response) {
  if (std::optional<v1::FinishResponse> settled = supervisor_.SettledIncoming(request->migration_id())) {
    *response = *settled;
    return grpc::Status::OK;
  }
  absl::StatusOr<std::pair<std::string, std::shared_ptr<WorkerConnection>>> incoming =
      supervisor_.Incoming(request->migration_id());
  if (!incoming.ok()) return worker::ToGrpcStatus(incoming.status());
  std::unique_ptr<grpc::ClientContext> context = WithDeadline(options_.worker_call_timeout);
  v1::IncomingStatus status;
  grpc::Status rpc = incoming->second->stub->GetIncoming(context.get(), v1::WorkerStatusRequest(), &status);
  if (!rpc.ok()) return rpc;
  *response = status.describe();
  // The worker runs the VM but vexd did not take note (it restarted during the commit).
  if (response->phase() == v1::MIGRATION_COMPLETED) supervisor_.CommitIncoming(incoming->first, *response);
  return grpc::Status::OK;
}

// ----------------------------------------------------------------------------- server

absl::StatusOr<std::unique_ptr<MigrationPeerServer>> MigrationPeerServer::Start(const std::string& listen,
                                                                                const std::string& tls_dir,
                                                                                Supervisor* supervisor) {
  if (listen.empty()) return std::unique_ptr<MigrationPeerServer>();
  absl::StatusOr<ListenAddress> address = ParseListenAddress(listen);
  if (!address.ok()) return address.status();
  if (address->kind != ListenAddress::Kind::kTcp) {
    return absl::InvalidArgumentError(absl::StrFormat("--migration_listen %s: must be tcp:HOST:PORT", listen));
  }
  if (tls_dir.empty()) return absl::InvalidArgumentError("--migration_listen needs --migration_tls_dir");
  absl::StatusOr<migration::TlsPem> tls = migration::LoadTls(migration::TlsFilesIn(tls_dir, "server"));
  if (!tls.ok()) return tls.status();
  // The client pair is what this vexd presents to its peers: check it now, not at the first
  // migration.
  if (absl::Status s = migration::LoadTls(migration::TlsFilesIn(tls_dir, "client")).status(); !s.ok()) return s;
  MigrationPeerImpl::Options options;
  options.data_host =
      address->host.find(':') != std::string::npos ? absl::StrCat("[", address->host, "]") : address->host;
  options.tls_dir = tls_dir;
  options.max_mce_banks = supervisor->max_mce_banks();
  std::unique_ptr<MigrationPeerServer> server(
      new MigrationPeerServer(std::make_unique<MigrationPeerImpl>(supervisor, std::move(options))));
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address->grpc_address, migration::ServerTlsCredentials(*tls), &port);
  builder.RegisterService(server->service_.get());
  migration::KeepaliveServerArgs(builder);  // accept the sources' keepalive pings (data_service.h)
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || port == 0) {
    return absl::UnavailableError(absl::StrFormat("--migration_listen: cannot listen on %s", listen));
  }
  Log("migration peer serving on tcp:%s:%d (mutual TLS, %s)", address->host, port, tls_dir);
  return server;
}

void MigrationPeerServer::Shutdown() {
  if (server_ != nullptr) server_->Shutdown(absl::ToChronoTime(absl::Now() + absl::Seconds(2)));
}

}  // namespace vexstate::vexd
