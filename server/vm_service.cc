#include "server/vm_service.h"

#include "absl/strings/str_format.h"
#include "server/service_util.h"
#include "vmm/arch/arch_vm.h"
#include "vmm/kvm/system.h"

namespace vexstate::vexd {

grpc::Status VmServiceImpl::CreateVm(grpc::ServerContext* context, const v1::CreateVmRequest* request,
                                     v1::VmInfo* response) {
  return Guarded(auth_, context, Role::kOperator, [&]() -> absl::Status {
    absl::StatusOr<v1::VmInfo> info = supervisor_.CreateVm(request->config(), request->start());
    if (!info.ok()) return info.status();
    *response = std::move(*info);
    return absl::OkStatus();
  });
}

absl::Status VmServiceImpl::RunStateChange(const grpc::ServerContext& context, const std::string& vm, bool resume,
                                           v1::VmInfo* response) {
  v1::VmRef ref;
  ref.set_name(vm);
  absl::Status status = resume ? Forward(supervisor_, context, vm, &v1::VmWorker::Stub::Resume, ref, response)
                               : Forward(supervisor_, context, vm, &v1::VmWorker::Stub::Pause, ref, response);
  if (status.ok()) *response = supervisor_.Observe(vm, std::move(*response));
  return status;
}

grpc::Status VmServiceImpl::StartVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) {
  return Guarded(auth_, context, Role::kOperator, [&]() -> absl::Status {
    absl::StatusOr<v1::VmInfo> info = supervisor_.GetVm(request->name());
    if (!info.ok()) return info.status();
    if (info->state() == v1::VM_RUNNING) {
      *response = std::move(*info);
      return absl::OkStatus();
    }
    if (info->state() != v1::VM_CREATED) {
      return absl::FailedPreconditionError(
          absl::StrFormat("VM %s is %s, not CREATED: StartVm starts a new VM (ResumeVm continues a paused one)",
                          request->name(), RunStateName(info->state())));
    }
    return RunStateChange(*context, request->name(), /*resume=*/true, response);
  });
}

grpc::Status VmServiceImpl::PauseVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) {
  return Guarded(auth_, context, Role::kOperator,
                 [&] { return RunStateChange(*context, request->name(), /*resume=*/false, response); });
}

grpc::Status VmServiceImpl::ResumeVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) {
  return Guarded(auth_, context, Role::kOperator,
                 [&] { return RunStateChange(*context, request->name(), /*resume=*/true, response); });
}

grpc::Status VmServiceImpl::StopVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) {
  return Guarded(auth_, context, Role::kOperator, [&]() -> absl::Status {
    if (request->name().empty()) return absl::InvalidArgumentError("no VM named: the request's name field is empty");
    absl::StatusOr<v1::VmInfo> info = supervisor_.StopVm(request->name());
    if (!info.ok()) return info.status();
    *response = std::move(*info);
    return absl::OkStatus();
  });
}

grpc::Status VmServiceImpl::DeleteVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) {
  return Guarded(auth_, context, Role::kOperator, [&]() -> absl::Status {
    absl::StatusOr<v1::VmInfo> info = supervisor_.DeleteVm(request->name());
    if (!info.ok()) return info.status();
    *response = std::move(*info);
    return absl::OkStatus();
  });
}

grpc::Status VmServiceImpl::GetVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) {
  return Guarded(auth_, context, Role::kViewer, [&]() -> absl::Status {
    absl::StatusOr<v1::VmInfo> info = supervisor_.GetVm(request->name());
    if (!info.ok()) return info.status();
    *response = std::move(*info);
    return absl::OkStatus();
  });
}

grpc::Status VmServiceImpl::ListVms(grpc::ServerContext* context, const v1::ListVmsRequest* request,
                                    v1::ListVmsResponse* response) {
  return Guarded(auth_, context, Role::kViewer, [&] {
    for (v1::VmInfo& info : supervisor_.ListVms()) *response->add_vms() = std::move(info);
    return absl::OkStatus();
  });
}

grpc::Status VmServiceImpl::GetHostCapabilities(grpc::ServerContext* context,
                                                const v1::GetHostCapabilitiesRequest* request,
                                                v1::HostCapabilities* response) {
  return Guarded(auth_, context, Role::kViewer, [&]() -> absl::Status {
    absl::MutexLock lock(&host_mu_);
    if (!host_.has_value()) {
      absl::StatusOr<kvm::KvmSystem> kvm = kvm::KvmSystem::Open();
      if (!kvm.ok()) return kvm.status();
      absl::StatusOr<v1::HostCapabilities> host = ProbeHost(*kvm);
      if (!host.ok()) return host.status();
      // --max_mce_banks: what this host offers VMs is what it reports.
      const uint32_t limit = supervisor_.max_mce_banks();
      if (limit != 0 && host->mce_banks() > limit) host->set_mce_banks(limit);
      host_ = std::move(*host);
    }
    *response = *host_;
    return absl::OkStatus();
  });
}

grpc::Status VmServiceImpl::SendGuestCommand(grpc::ServerContext* context, const v1::GuestCommandRequest* request,
                                             v1::GuestCommandResponse* response) {
  return Guarded(auth_, context, Role::kOperator, [&] {
    return Forward(supervisor_, *context, request->vm(), &v1::VmWorker::Stub::SendGuestCommand, *request, response);
  });
}

}  // namespace vexstate::vexd
