#include "client/client.h"

#include <optional>
#include <thread>
#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "client/file_contents.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace vexstate::client {
namespace {

// MigrateVmRequest.timeout_ms = 0 means this on vexd's side (migration.proto).
constexpr absl::Duration kDefaultMigrationTimeout = absl::Minutes(10);

// Cancels a call once no Touch() has come for `idle` while the channel is
// connected (a call still waiting for its connection is left to fail on its
// own, e.g. UNAVAILABLE, rather than being mistaken for a quiet stream).
// Destroy it before the context.
class IdleWatchdog {
 public:
  IdleWatchdog(grpc::Channel* channel, grpc::ClientContext* context,
               absl::Duration idle)
      : channel_(channel),
        context_(context),
        idle_(idle),
        deadline_(absl::Now() + idle) {
    if (idle != absl::InfiniteDuration()) {
      thread_ = std::thread([this] { Run(); });
    }
  }
  ~IdleWatchdog() {
    {
      absl::MutexLock lock(&mu_);
      done_ = true;
    }
    if (thread_.joinable()) thread_.join();
  }

  void Touch() {
    absl::MutexLock lock(&mu_);
    deadline_ = absl::Now() + idle_;
  }
  bool fired() const {
    absl::MutexLock lock(&mu_);
    return fired_;
  }

 private:
  void Run() {
    absl::MutexLock lock(&mu_);
    while (!done_) {
      if (absl::Now() >= deadline_) {
        if (channel_->GetState(/*try_to_connect=*/false) ==
            GRPC_CHANNEL_READY) {
          fired_ = true;
          context_->TryCancel();
          return;
        }
        deadline_ = absl::Now() + idle_;
      }
      mu_.AwaitWithDeadline(absl::Condition(&done_), deadline_);
    }
  }

  grpc::Channel* const channel_;
  grpc::ClientContext* const context_;
  const absl::Duration idle_;
  mutable absl::Mutex mu_;
  absl::Time deadline_ ABSL_GUARDED_BY(mu_);
  bool done_ ABSL_GUARDED_BY(mu_) = false;
  bool fired_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

// Reads a PEM file named in ConnectOptions; errors say which option named it.
absl::StatusOr<std::string> ReadPem(const std::string& path,
                                    absl::string_view what) {
  absl::StatusOr<std::string> pem = ReadFileContents(path);
  if (!pem.ok()) {
    return absl::Status(
        pem.status().code(),
        absl::StrCat("TLS ", what, ": ", pem.status().message()));
  }
  return pem;
}

absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> ChannelCredentials(
    const ConnectOptions& options) {
  if (options.tls_ca_file.empty() && options.tls_cert_file.empty()) {
    return grpc::InsecureChannelCredentials();
  }
  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem(options.tls_ca_file, "CA");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert =
        ReadPem(options.tls_cert_file, "certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(options.tls_key_file, "key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  return grpc::SslCredentials(ssl);
}

}  // namespace

absl::Status FromGrpcStatus(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  // grpc::StatusCode and absl::StatusCode share their numbering (both follow
  // google.rpc.Code).
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()),
                      status.error_message());
}

void WatchCanceller::Cancel() {
  absl::MutexLock lock(&mu_);
  cancelled_ = true;
  if (context_ != nullptr) context_->TryCancel();
}

bool WatchCanceller::cancelled() const {
  absl::MutexLock lock(&mu_);
  return cancelled_;
}

bool WatchCanceller::Attach(grpc::ClientContext* context) {
  absl::MutexLock lock(&mu_);
  if (cancelled_) return false;
  context_ = context;
  return true;
}

void WatchCanceller::Detach() {
  absl::MutexLock lock(&mu_);
  context_ = nullptr;
}

absl::StatusOr<VexClient> VexClient::Connect(const ConnectOptions& options) {
  absl::StatusOr<ConnectOptions> resolved =
      ResolveConnectOptions(options, ProcessEnvironment());
  if (!resolved.ok()) return resolved.status();
  absl::StatusOr<std::string> target = GrpcTarget(resolved->target);
  if (!target.ok()) return target.status();
  absl::StatusOr<std::shared_ptr<grpc::ChannelCredentials>> credentials =
      ChannelCredentials(*resolved);
  if (!credentials.ok()) return credentials.status();
  grpc::ChannelArguments arguments;
  if (!resolved->tls_server_name.empty()) {
    arguments.SetSslTargetNameOverride(resolved->tls_server_name);
  }
  return VexClient(grpc::CreateCustomChannel(*target, *credentials, arguments),
                   resolved->token, resolved->deadline);
}

VexClient::VexClient(std::shared_ptr<grpc::Channel> channel, std::string token,
                     absl::Duration deadline)
    : channel_(std::move(channel)),
      token_(std::move(token)),
      deadline_(deadline),
      vm_(v1::VmService::NewStub(channel_)),
      exception_(v1::ExceptionService::NewStub(channel_)),
      snapshot_(v1::SnapshotService::NewStub(channel_)),
      event_(v1::EventService::NewStub(channel_)),
      migration_(v1::MigrationService::NewStub(channel_)) {}

VexClient::~VexClient() = default;

std::unique_ptr<grpc::ClientContext> VexClient::NewContext(
    absl::Duration deadline) const {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!token_.empty()) {
    context->AddMetadata("authorization", absl::StrCat("Bearer ", token_));
  }
  if (deadline != absl::InfiniteDuration()) {
    context->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  }
  return context;
}

template <typename Stub, typename Request, typename Response>
absl::StatusOr<Response> VexClient::Unary(
    Stub* stub,
    grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                 Response*),
    const Request& request, absl::Duration deadline) const {
  std::unique_ptr<grpc::ClientContext> context = NewContext(deadline);
  Response response;
  grpc::Status status = (stub->*method)(context.get(), request, &response);
  if (!status.ok()) return FromGrpcStatus(status);
  return response;
}

absl::StatusOr<v1::VmInfo> VexClient::CreateVm(
    const v1::CreateVmRequest& request) const {
  return Unary(vm_.get(), &v1::VmService::Stub::CreateVm, request, deadline_);
}
absl::StatusOr<v1::VmInfo> VexClient::StartVm(const v1::VmRef& request) const {
  return Unary(vm_.get(), &v1::VmService::Stub::StartVm, request, deadline_);
}
absl::StatusOr<v1::VmInfo> VexClient::PauseVm(const v1::VmRef& request) const {
  return Unary(vm_.get(), &v1::VmService::Stub::PauseVm, request, deadline_);
}
absl::StatusOr<v1::VmInfo> VexClient::ResumeVm(const v1::VmRef& request) const {
  return Unary(vm_.get(), &v1::VmService::Stub::ResumeVm, request, deadline_);
}
absl::StatusOr<v1::VmInfo> VexClient::StopVm(const v1::VmRef& request) const {
  return Unary(vm_.get(), &v1::VmService::Stub::StopVm, request, deadline_);
}
absl::StatusOr<v1::VmInfo> VexClient::DeleteVm(const v1::VmRef& request) const {
  return Unary(vm_.get(), &v1::VmService::Stub::DeleteVm, request, deadline_);
}
absl::StatusOr<v1::VmInfo> VexClient::GetVm(const v1::VmRef& request) const {
  return Unary(vm_.get(), &v1::VmService::Stub::GetVm, request, deadline_);
}
absl::StatusOr<v1::ListVmsResponse> VexClient::ListVms(
    const v1::ListVmsRequest& request) const {
  return Unary(vm_.get(), &v1::VmService::Stub::ListVms, request, deadline_);
}
absl::StatusOr<v1::HostCapabilities> VexClient::GetHostCapabilities(
    const v1::GetHostCapabilitiesRequest& request) const {
  return Unary(vm_.get(), &v1::VmService::Stub::GetHostCapabilities, request,
               deadline_);
}
absl::StatusOr<v1::GuestCommandResponse> VexClient::SendGuestCommand(
    const v1::GuestCommandRequest& request) const {
  // vexd holds the call while the guest works: allow for that on top of the
  // deadline.
  return Unary(vm_.get(), &v1::VmService::Stub::SendGuestCommand, request,
               deadline_ + absl::Milliseconds(request.wait_ms()));
}

absl::StatusOr<v1::InjectResponse> VexClient::InjectSError(
    const v1::InjectSErrorRequest& request) const {
  return Unary(exception_.get(), &v1::ExceptionService::Stub::InjectSError,
               request, deadline_);
}
absl::StatusOr<v1::InjectResponse> VexClient::InjectExternalAbort(
    const v1::InjectExternalAbortRequest& request) const {
  return Unary(exception_.get(),
               &v1::ExceptionService::Stub::InjectExternalAbort, request,
               deadline_);
}
absl::StatusOr<v1::InjectResponse> VexClient::InjectException(
    const v1::InjectExceptionRequest& request) const {
  return Unary(exception_.get(), &v1::ExceptionService::Stub::InjectException,
               request, deadline_);
}
absl::StatusOr<v1::InjectResponse> VexClient::InjectNmi(
    const v1::InjectNmiRequest& request) const {
  return Unary(exception_.get(), &v1::ExceptionService::Stub::InjectNmi,
               request, deadline_);
}
absl::StatusOr<v1::InjectResponse> VexClient::InjectMachineCheck(
    const v1::InjectMachineCheckRequest& request) const {
  return Unary(exception_.get(),
               &v1::ExceptionService::Stub::InjectMachineCheck, request,
               deadline_);
}
absl::StatusOr<v1::QueryPendingResponse> VexClient::QueryPending(
    const v1::QueryPendingRequest& request) const {
  return Unary(exception_.get(), &v1::ExceptionService::Stub::QueryPending,
               request, deadline_);
}
absl::StatusOr<v1::GetExceptionStateResponse> VexClient::GetExceptionState(
    const v1::GetExceptionStateRequest& request) const {
  return Unary(exception_.get(), &v1::ExceptionService::Stub::GetExceptionState,
               request, deadline_);
}
absl::StatusOr<v1::SetExceptionStateResponse> VexClient::SetExceptionState(
    const v1::SetExceptionStateRequest& request) const {
  return Unary(exception_.get(), &v1::ExceptionService::Stub::SetExceptionState,
               request, deadline_);
}

absl::StatusOr<v1::SaveSnapshotResponse> VexClient::SaveSnapshot(
    const v1::SaveSnapshotRequest& request) const {
  return Unary(snapshot_.get(), &v1::SnapshotService::Stub::SaveSnapshot,
               request, deadline_);
}
absl::StatusOr<v1::RestoreSnapshotResponse> VexClient::RestoreSnapshot(
    const v1::RestoreSnapshotRequest& request) const {
  return Unary(snapshot_.get(), &v1::SnapshotService::Stub::RestoreSnapshot,
               request, deadline_);
}
absl::StatusOr<v1::InspectSnapshotResponse> VexClient::InspectSnapshot(
    const v1::InspectSnapshotRequest& request) const {
  return Unary(snapshot_.get(), &v1::SnapshotService::Stub::InspectSnapshot,
               request, deadline_);
}

absl::Status VexClient::WatchEvents(
    const v1::WatchEventsRequest& request,
    const std::function<bool(const v1::Event&)>& on_event,
    const WatchOptions& options) const {
  std::unique_ptr<grpc::ClientContext> context =
      NewContext(absl::InfiniteDuration());
  if (options.canceller != nullptr &&
      !options.canceller->Attach(context.get())) {
    return absl::OkStatus();
  }
  absl::Cleanup detach = [&] {
    if (options.canceller != nullptr) options.canceller->Detach();
  };
  // Declared after the context, so destroyed (its thread joined) before it.
  IdleWatchdog watchdog(channel_.get(), context.get(), options.stop_when_idle);
  std::unique_ptr<grpc::ClientReader<v1::Event>> reader =
      event_->WatchEvents(context.get(), request);
  v1::Event event;
  bool stopped_by_caller = false;
  while (reader->Read(&event)) {
    watchdog.Touch();
    if (!on_event(event)) {
      stopped_by_caller = true;
      context->TryCancel();
      while (reader->Read(&event)) {
      }
      break;
    }
  }
  grpc::Status status = reader->Finish();
  bool cancelled_here =
      stopped_by_caller || watchdog.fired() ||
      (options.canceller != nullptr && options.canceller->cancelled());
  if (cancelled_here && status.error_code() == grpc::StatusCode::CANCELLED) {
    return absl::OkStatus();
  }
  return FromGrpcStatus(status);
}

absl::StatusOr<v1::MigrationResult> VexClient::MigrateVm(
    const v1::MigrateVmRequest& request,
    const std::function<void(const v1::MigrationProgress&)>& on_progress)
    const {
  const absl::Duration migration_timeout =
      request.timeout_ms() != 0 ? absl::Milliseconds(request.timeout_ms())
                                : kDefaultMigrationTimeout;
  std::unique_ptr<grpc::ClientContext> context =
      NewContext(deadline_ + migration_timeout);
  std::unique_ptr<grpc::ClientReader<v1::MigrationProgress>> reader =
      migration_->MigrateVm(context.get(), request);
  v1::MigrationProgress progress;
  std::optional<v1::MigrationResult> result;
  while (reader->Read(&progress)) {
    on_progress(progress);
    if (progress.has_result()) result = progress.result();
  }
  grpc::Status status = reader->Finish();
  if (result.has_value()) return *std::move(result);
  if (!status.ok()) return FromGrpcStatus(status);
  return absl::UnknownError("vexd ended the migration stream without a result");
}

absl::StatusOr<v1::MigrationStatus> VexClient::CancelMigration(
    const v1::CancelMigrationRequest& request) const {
  return Unary(migration_.get(), &v1::MigrationService::Stub::CancelMigration,
               request, deadline_);
}

absl::StatusOr<v1::MigrationStatus> VexClient::QueryMigration(
    const v1::QueryMigrationRequest& request) const {
  return Unary(migration_.get(), &v1::MigrationService::Stub::QueryMigration,
               request, deadline_);
}

}  // namespace vexstate::client
