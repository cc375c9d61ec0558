// SnapshotService (control.proto). SaveSnapshot is done by the VM's worker (it holds the
// VM); RestoreSnapshot launches a new worker that restores the file (the VM's name is the
// request's, else the one stored in the snapshot); InspectSnapshot is answered by vexd
// itself: it verifies the whole file (snapshot_file.h) and describes the exception state of
// each vCPU (vmm/describe.h). Paths are paths on the vexd host and must be absolute.
// Roles: InspectSnapshot viewer; Save and Restore operator.
//
// Thread-safety: thread-safe.
#ifndef VEXSTATE_SERVER_SNAPSHOT_SERVICE_H_
#define VEXSTATE_SERVER_SNAPSHOT_SERVICE_H_

#include "server/auth.h"
#include "server/supervisor.h"
#include "vexstate/v1/control.grpc.pb.h"

namespace vexstate::vexd {

class SnapshotServiceImpl final : public v1::SnapshotService::Service {
 public:
  // `auth` and `supervisor` must outlive the service.
  SnapshotServiceImpl(const Authorizer* auth, Supervisor* supervisor) : auth_(*auth), supervisor_(*supervisor) {}

  grpc::Status SaveSnapshot(grpc::ServerContext* context, const v1::SaveSnapshotRequest* request,
                            v1::SaveSnapshotResponse* response) override;
  // `degradations` stays empty: the worker reports them only in its first lifecycle event's
  // reason ("restored from ...; degraded: ..."), which WatchEvents carries.
  grpc::Status RestoreSnapshot(grpc::ServerContext* context, const v1::RestoreSnapshotRequest* request,
                               v1::RestoreSnapshotResponse* response) override;
  grpc::Status InspectSnapshot(grpc::ServerContext* context, const v1::InspectSnapshotRequest* request,
                               v1::InspectSnapshotResponse* response) override;

 private:
  const Authorizer& auth_;
  Supervisor& supervisor_;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_SNAPSHOT_SERVICE_H_
