// VmService (control.proto): creating, running, stopping and listing VMs, each VM run by its
// own worker process (supervisor.h). Roles: Get*/List* viewer, the rest operator.
//
// Thread-safety: thread-safe (gRPC calls the handlers concurrently).
#ifndef VEXSTATE_SERVER_VM_SERVICE_H_
#define VEXSTATE_SERVER_VM_SERVICE_H_

#include <optional>

#include "absl/synchronization/mutex.h"
#include "server/auth.h"
#include "server/supervisor.h"
#include "vexstate/v1/control.grpc.pb.h"

namespace vexstate::vexd {

class VmServiceImpl final : public v1::VmService::Service {
 public:
  // `auth` and `supervisor` must outlive the service.
  VmServiceImpl(const Authorizer* auth, Supervisor* supervisor) : auth_(*auth), supervisor_(*supervisor) {}

  grpc::Status CreateVm(grpc::ServerContext* context, const v1::CreateVmRequest* request,
                        v1::VmInfo* response) override;
  // A CREATED VM starts running; a RUNNING one is left as it is; anything else is refused.
  grpc::Status StartVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) override;
  grpc::Status PauseVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) override;
  grpc::Status ResumeVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) override;
  grpc::Status StopVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) override;
  grpc::Status DeleteVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) override;
  grpc::Status GetVm(grpc::ServerContext* context, const v1::VmRef* request, v1::VmInfo* response) override;
  grpc::Status ListVms(grpc::ServerContext* context, const v1::ListVmsRequest* request,
                       v1::ListVmsResponse* response) override;
  // Probes this host's /dev/kvm once (vexd's own probe, so it answers without any VM) and
  // answers from that.
  grpc::Status GetHostCapabilities(grpc::ServerContext* context, const v1::GetHostCapabilitiesRequest* request,
                                   v1::HostCapabilities* response) override;
  grpc::Status SendGuestCommand(grpc::ServerContext* context, const v1::GuestCommandRequest* request,
                                v1::GuestCommandResponse* response) override;

 private:
  // Pause/Resume on the worker, noting the new state.
  absl::Status RunStateChange(const grpc::ServerContext& context, const std::string& vm, bool resume,
                              v1::VmInfo* response);

  const Authorizer& auth_;
  Supervisor& supervisor_;
  absl::Mutex host_mu_;
  std::optional<v1::HostCapabilities> host_ ABSL_GUARDED_BY(host_mu_);
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_VM_SERVICE_H_
