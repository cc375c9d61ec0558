// VexClient: the C++ client of one vexd (proto/vexstate/v1/control.proto and
// the MigrationService of migration.proto), for orchestrators and for vexctl.
//
//   ConnectOptions options;
//   options.target = "tcp:host1:7443";  // empty: the local vexd
//   absl::StatusOr<VexClient> client = VexClient::Connect(options);
//   if (!client.ok()) return client.status();
//   v1::QueryPendingRequest request;
//   request.set_vm("vm1");
//   absl::StatusOr<v1::QueryPendingResponse> pending =
//       client->QueryPending(request);
//
// Contract:
//  - One method per RPC, named after it, taking the request proto and
//    returning the response proto. A failed RPC returns its gRPC status as an
//    absl::Status with the same code and message (both libraries number the
//    codes as google.rpc.Code does).
//  - Every call carries "authorization: Bearer <token>" metadata when a token
//    is set (ConnectOptions), and the deadline from ConnectOptions
//    (SendGuestCommand adds the request's wait_ms to it, MigrateVm the
//    migration's own timeout; WatchEvents has none).
//  - Connect does not wait for the server: an unreachable vexd shows up as
//    UNAVAILABLE on the first call.
//  - Thread-safety: every method is const and may be called concurrently from
//    any number of threads on one VexClient (gRPC channels and stubs are
//    thread-safe). A VexClient is movable, not copyable; a moved-from
//    VexClient may only be destroyed or assigned to.
//  - Ownership: the client owns its channel; responses are returned by value.
//    Calls in progress must finish (or be cancelled) before the VexClient is
//    destroyed.
#ifndef VEXSTATE_CLIENT_CLIENT_H_
#define VEXSTATE_CLIENT_CLIENT_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/connect_options.h"
#include "vexstate/v1/control.grpc.pb.h"
#include "vexstate/v1/migration.grpc.pb.h"

namespace vexstate::client {

namespace v1 = ::vexstate::v1;

// Stops a WatchEvents call from another thread. Thread-safe. Serves one call at
// a time. Cancelling is final: a call started with a cancelled WatchCanceller
// returns OK at once.
class WatchCanceller {
 public:
  void Cancel();
  bool cancelled() const;

 private:
  friend class VexClient;
  // Returns false when already cancelled (the caller then must not start the
  // call).
  bool Attach(grpc::ClientContext* context);
  void Detach();

  mutable absl::Mutex mu_;
  grpc::ClientContext* context_ ABSL_GUARDED_BY(mu_) = nullptr;
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
};

struct WatchOptions {
  // Cancels the stream (and returns OK) once the channel is connected and no
  // event has arrived for this long: a way to read what vexd replays
  // (request.replay) without following new events. A call still connecting is
  // not cut short.
  absl::Duration stop_when_idle = absl::InfiniteDuration();
  // Optional; see WatchCanceller.
  WatchCanceller* canceller = nullptr;
};

class VexClient {
 public:
  // Applies ResolveConnectOptions(options, ProcessEnvironment()) and builds the
  // channel (plaintext, TLS or mutual TLS as the options say). Errors: those of
  // ResolveConnectOptions, and NOT_FOUND/PERMISSION_DENIED for unreadable TLS
  // files.
  static absl::StatusOr<VexClient> Connect(const ConnectOptions& options);
  // Over an existing channel (tests, in-process servers). `token` may be empty.
  VexClient(std::shared_ptr<grpc::Channel> channel, std::string token,
            absl::Duration deadline);

  VexClient(VexClient&&) = default;
  VexClient& operator=(VexClient&&) = default;
  VexClient(const VexClient&) = delete;
  VexClient& operator=(const VexClient&) = delete;
  ~VexClient();

  // VmService.
  absl::StatusOr<v1::VmInfo> CreateVm(const v1::CreateVmRequest& request) const;
  absl::StatusOr<v1::VmInfo> StartVm(const v1::VmRef& request) const;
  absl::StatusOr<v1::VmInfo> PauseVm(const v1::VmRef& request) const;
  absl::StatusOr<v1::VmInfo> ResumeVm(const v1::VmRef& request) const;
  absl::StatusOr<v1::VmInfo> StopVm(const v1::VmRef& request) const;
  absl::StatusOr<v1::VmInfo> DeleteVm(const v1::VmRef& request) const;
  absl::StatusOr<v1::VmInfo> GetVm(const v1::VmRef& request) const;
  absl::StatusOr<v1::ListVmsResponse> ListVms(
      const v1::ListVmsRequest& request) const;
  absl::StatusOr<v1::HostCapabilities> GetHostCapabilities(
      const v1::GetHostCapabilitiesRequest& request) const;
  absl::StatusOr<v1::GuestCommandResponse> SendGuestCommand(
      const v1::GuestCommandRequest& request) const;

  // ExceptionService.
  absl::StatusOr<v1::InjectResponse> InjectSError(
      const v1::InjectSErrorRequest& request) const;
  absl::StatusOr<v1::InjectResponse> InjectExternalAbort(
      const v1::InjectExternalAbortRequest& request) const;
  absl::StatusOr<v1::InjectResponse> InjectException(
      const v1::InjectExceptionRequest& request) const;
  absl::StatusOr<v1::InjectResponse> InjectNmi(
      const v1::InjectNmiRequest& request) const;
  absl::StatusOr<v1::InjectResponse> InjectMachineCheck(
      const v1::InjectMachineCheckRequest& request) const;
  absl::StatusOr<v1::QueryPendingResponse> QueryPending(
      const v1::QueryPendingRequest& request) const;
  absl::StatusOr<v1::GetExceptionStateResponse> GetExceptionState(
      const v1::GetExceptionStateRequest& request) const;
  absl::StatusOr<v1::SetExceptionStateResponse> SetExceptionState(
      const v1::SetExceptionStateRequest& request) const;

  // SnapshotService. Paths are read by vexd, on its host and relative to its
  // cwd: send absolute paths.
  absl::StatusOr<v1::SaveSnapshotResponse> SaveSnapshot(
      const v1::SaveSnapshotRequest& request) const;
  absl::StatusOr<v1::RestoreSnapshotResponse> RestoreSnapshot(
      const v1::RestoreSnapshotRequest& request) const;
  absl::StatusOr<v1::InspectSnapshotResponse> InspectSnapshot(
      const v1::InspectSnapshotRequest& request) const;

  // EventService. Blocks, calling `on_event` on the calling thread for each
  // event in order, until one of:
  //  - `on_event` returns false, options.canceller is cancelled, or
  //    options.stop_when_idle passes without an event: returns OK;
  //  - vexd ends the stream: returns its status (OK when it closed normally);
  //  - the stream fails: returns the error (e.g. UNAVAILABLE when vexd goes
  //    away, RESOURCE_EXHAUSTED when the stream fell too far behind).
  absl::Status WatchEvents(
      const v1::WatchEventsRequest& request,
      const std::function<bool(const v1::Event&)>& on_event,
      const WatchOptions& options = {}) const;

  // MigrationService. MigrateVm blocks, calling `on_progress` on the calling
  // thread for each progress message in order (the last one carries the result
  // too), and returns the result of the final message: a FAILED or CANCELLED
  // migration is a result, not an error. Errors: the stream's status when vexd
  // ends it without a result (e.g. FAILED_PRECONDITION for a refusal before the
  // migration started, UNAVAILABLE), UNKNOWN when it ends OK without one. The
  // deadline is ConnectOptions' plus the request's timeout_ms (0: vexd's
  // default, 10 min).
  absl::StatusOr<v1::MigrationResult> MigrateVm(
      const v1::MigrateVmRequest& request,
      const std::function<void(const v1::MigrationProgress&)>& on_progress)
      const;
  absl::StatusOr<v1::MigrationStatus> CancelMigration(
      const v1::CancelMigrationRequest& request) const;
  absl::StatusOr<v1::MigrationStatus> QueryMigration(
      const v1::QueryMigrationRequest& request) const;

 private:
  // A context with the token metadata and `deadline` set.
  std::unique_ptr<grpc::ClientContext> NewContext(
      absl::Duration deadline) const;
  template <typename Stub, typename Request, typename Response>
  absl::StatusOr<Response> Unary(
      Stub* stub,
      grpc::Status (Stub::*method)(grpc::ClientContext*, const Request&,
                                   Response*),
      const Request& request, absl::Duration deadline) const;

  std::shared_ptr<grpc::Channel> channel_;
  std::string token_;
  absl::Duration deadline_;
  std::unique_ptr<v1::VmService::Stub> vm_;
  std::unique_ptr<v1::ExceptionService::Stub> exception_;
  std::unique_ptr<v1::SnapshotService::Stub> snapshot_;
  std::unique_ptr<v1::EventService::Stub> event_;
  std::unique_ptr<v1::MigrationService::Stub> migration_;
};

// absl::Status with the code and message of a gRPC status.
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_CLIENT_H_
