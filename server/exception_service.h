// ExceptionService (control.proto): injecting exceptions and reading or writing exception
// state, forwarded to the VM's worker (which validates values and needs the VM paused or
// pause_around). QueryPending with all_vms asks every RUNNING or PAUSED VM in turn.
// Roles: QueryPending and GetExceptionState viewer; the rest operator.
//
// Thread-safety: thread-safe.
#ifndef VEXSTATE_SERVER_EXCEPTION_SERVICE_H_
#define VEXSTATE_SERVER_EXCEPTION_SERVICE_H_

#include "server/auth.h"
#include "server/supervisor.h"
#include "vexstate/v1/control.grpc.pb.h"

namespace vexstate::vexd {

class ExceptionServiceImpl final : public v1::ExceptionService::Service {
 public:
  // `auth` and `supervisor` must outlive the service.
  ExceptionServiceImpl(const Authorizer* auth, Supervisor* supervisor) : auth_(*auth), supervisor_(*supervisor) {}

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
  // One VM (`vm`) or, with all_vms, every RUNNING or PAUSED VM. A VM whose worker fails
  // during an all_vms query is listed with its state and a summary line saying why it has
  // no exception states, so one broken VM does not hide the others.
  grpc::Status QueryPending(grpc::ServerContext* context, const v1::QueryPendingRequest* request,
                            v1::QueryPendingResponse* response) override;
  grpc::Status GetExceptionState(grpc::ServerContext* context, const v1::GetExceptionStateRequest* request,
                                 v1::GetExceptionStateResponse* response) override;
  grpc::Status SetExceptionState(grpc::ServerContext* context, const v1::SetExceptionStateRequest* request,
                                 v1::SetExceptionStateResponse* response) override;

 private:
  const Authorizer& auth_;
  Supervisor& supervisor_;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_EXCEPTION_SERVICE_H_
