#include "server/exception_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "server/service_util.h"

namespace vexstate::vexd {

grpc::Status ExceptionServiceImpl::InjectSError(grpc::ServerContext* context, const v1::InjectSErrorRequest* request,
                                                v1::InjectResponse* response) {
  return Guarded(auth_, context, Role::kOperator, [&] {
    return Forward(supervisor_, *context, request->vm(), &v1::VmWorker::Stub::InjectSError, *request, response);
  });
}

grpc::Status ExceptionServiceImpl::InjectExternalAbort(grpc::ServerContext* context,
                                                       const v1::InjectExternalAbortRequest* request,
                                                       v1::InjectResponse* response) {
  return Guarded(auth_, context, Role::kOperator, [&] {
    return Forward(supervisor_, *context, request->vm(), &v1::VmWorker::Stub::InjectExternalAbort, *request, response);
  });
}

grpc::Status ExceptionServiceImpl::InjectException(grpc::ServerContext* context,
                                                   const v1::InjectExceptionRequest* request,
                                                   v1::InjectResponse* response) {
  return Guarded(auth_, context, Role::kOperator, [&] {
    return Forward(supervisor_, *context, request->vm(), &v1::VmWorker::Stub::InjectException, *request, response);
  });
}

grpc::Status ExceptionServiceImpl::InjectNmi(grpc::ServerContext* context, const v1::InjectNmiRequest* request,
                                             v1::InjectResponse* response) {
  return Guarded(auth_, context, Role::kOperator, [&] {
    return Forward(supervisor_, *context, request->vm(), &v1::VmWorker::Stub::InjectNmi, *request, response);
  });
}

grpc::Status ExceptionServiceImpl::InjectMachineCheck(grpc::ServerContext* context,
                                                      const v1::InjectMachineCheckRequest* request,
                                                      v1::InjectResponse* response) {
  return Guarded(auth_, context, Role::kOperator, [&] {
    return Forward(supervisor_, *context, request->vm(), &v1::VmWorker::Stub::InjectMachineCheck, *request, response);
  });
}

grpc::Status ExceptionServiceImpl::QueryPending(grpc::ServerContext* context, const v1::QueryPendingRequest* request,
                                                v1::QueryPendingResponse* response) {
  return Guarded(auth_, context, Role::kViewer, [&]() -> absl::Status {
    if (request->all_vms() && !request->vm().empty()) {
      return absl::InvalidArgumentError("give either vm or all_vms, not both");
    }
    if (!request->all_vms()) {
      if (request->vm().empty()) return absl::InvalidArgumentError("no VM named: give vm, or all_vms");
      v1::VmPending* pending = response->add_vms();
      absl::Status status =
          Forward(supervisor_, *context, request->vm(), &v1::VmWorker::Stub::QueryPending, *request, pending);
      pending->set_vm(request->vm());
      return status;
    }
    for (const Supervisor::LiveVm& vm : supervisor_.LiveVms()) {
      if (vm.state != v1::VM_RUNNING && vm.state != v1::VM_PAUSED) continue;
      v1::QueryPendingRequest one;
      one.set_vm(vm.name);
      v1::VmPending pending;
      absl::Status status = Forward(supervisor_, *context, vm.name, &v1::VmWorker::Stub::QueryPending, one, &pending);
      if (!status.ok()) {
        if (context->IsCancelled()) return absl::CancelledError("the caller cancelled QueryPending");
        pending.Clear();
        pending.set_state(vm.state);
        pending.add_summary(absl::StrCat("no exception state read: ", status.ToString()));
        pending.set_read_unix_ns(absl::ToUnixNanos(absl::Now()));
      }
      pending.set_vm(vm.name);
      *response->add_vms() = std::move(pending);
    }
    return absl::OkStatus();
  });
}

grpc::Status ExceptionServiceImpl::GetExceptionState(grpc::ServerContext* context,
                                                     const v1::GetExceptionStateRequest* request,
                                                     v1::GetExceptionStateResponse* response) {
  return Guarded(auth_, context, Role::kViewer, [&] {
    return Forward(supervisor_, *context, request->vm(), &v1::VmWorker::Stub::GetExceptionState, *request, response);
  });
}

grpc::Status ExceptionServiceImpl::SetExceptionState(grpc::ServerContext* context,
                                                     const v1::SetExceptionStateRequest* request,
                                                     v1::SetExceptionStateResponse* response) {
  return Guarded(auth_, context, Role::kOperator, [&] {
    return Forward(supervisor_, *context, request->vm(), &v1::VmWorker::Stub::SetExceptionState, *request, response);
  });
}

}  // namespace vexstate::vexd
