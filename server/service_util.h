// The two steps every public RPC handler of vexd takes: authorise the caller (auth.h), then
// run the body in absl::Status terms; and the forwarding of a request to a VM's worker.
//
// Every handler of VmService, ExceptionService, SnapshotService and EventService is written
// as `return Guarded(auth, context, Role::k..., [&] { ... });`, so the role a method needs
// sits on its first line and the body cannot run before the check.
//
// Thread-safety: stateless helpers; thread-safe as their arguments are.
#ifndef VEXSTATE_SERVER_SERVICE_UTIL_H_
#define VEXSTATE_SERVER_SERVICE_UTIL_H_

#include <memory>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "grpcpp/server_context.h"
#include "server/auth.h"
#include "server/supervisor.h"
#include "server/worker/grpc_status.h"
#include "vexstate/v1/worker.grpc.pb.h"

namespace vexstate::vexd {

// Authorises the call for `role`, then returns body()'s status (absl::Status) as gRPC's.
template <typename Body>
grpc::Status Guarded(const Authorizer& auth, grpc::ServerContext* context, Role role, Body&& body) {
  if (grpc::Status denied = auth.Authorize(*context, role); !denied.ok()) return denied;
  return worker::ToGrpcStatus(std::forward<Body>(body)());
}

// Calls `method` on VM `vm`'s worker with the caller's deadline and cancellation. The
// worker's own refusals (INVALID_ARGUMENT, NOT_FOUND for a vCPU, FAILED_PRECONDITION...)
// pass through unchanged; a worker that died during the call turns the VM CRASHED and the
// answer UNAVAILABLE with the reason.
template <typename Request, typename Response>
absl::Status Forward(Supervisor& supervisor, const grpc::ServerContext& server_context, const std::string& vm,
                     grpc::Status (v1::VmWorker::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
                     const Request& request, Response* response) {
  absl::StatusOr<std::shared_ptr<WorkerConnection>> worker = supervisor.Worker(vm);
  if (!worker.ok()) return worker.status();
  std::unique_ptr<grpc::ClientContext> context = grpc::ClientContext::FromServerContext(server_context);
  const grpc::Status status = ((*worker)->stub.get()->*method)(context.get(), request, response);
  if (status.ok()) return absl::OkStatus();
  return supervisor.ExplainWorkerFailure(vm, worker::FromGrpcStatus(status));
}

// Paths in requests name files on the vexd host, read or written by vexd or a worker whose
// working directory is not the caller's: only absolute paths are accepted.
inline absl::Status RequireAbsolutePath(const std::string& path, absl::string_view field) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrCat(field, " is empty"));
  if (path[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat(field, " '", path, "' must be an absolute path on the vexd host"));
  }
  return absl::OkStatus();
}

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_SERVICE_UTIL_H_
