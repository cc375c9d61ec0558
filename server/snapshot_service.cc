#include "server/snapshot_service.h"

#include "absl/strings/str_cat.h"
#include "server/service_util.h"
#include "server/snapshot_file.h"
#include "vmm/describe.h"

namespace vexstate::vexd {

grpc::Status SnapshotServiceImpl::SaveSnapshot(grpc::ServerContext* context, const v1::SaveSnapshotRequest* request,
                                               v1::SaveSnapshotResponse* response) {
  return Guarded(auth_, context, Role::kOperator, [&]() -> absl::Status {
    absl::Status path = RequireAbsolutePath(request->path(), "path");
    if (!path.ok()) return path;
    return Forward(supervisor_, *context, request->vm(), &v1::VmWorker::Stub::SaveSnapshot, *request, response);
  });
}

grpc::Status SnapshotServiceImpl::RestoreSnapshot(grpc::ServerContext* context,
                                                  const v1::RestoreSnapshotRequest* request,
                                                  v1::RestoreSnapshotResponse* response) {
  return Guarded(auth_, context, Role::kOperator, [&]() -> absl::Status {
    absl::Status path = RequireAbsolutePath(request->path(), "path");
    if (!path.ok()) return path;
    std::string name = request->name();
    if (name.empty()) {
      // The name stored in the snapshot; reading it verifies the file before a worker starts.
      absl::StatusOr<v1::Snapshot> header = InspectSnapshotFile(request->path());
      if (!header.ok()) return header.status();
      name = header->config().name();
      if (name.empty()) {
        return absl::InvalidArgumentError(
            absl::StrCat("snapshot ", request->path(), " stores no VM name: give the new VM a name"));
      }
    }
    absl::StatusOr<v1::VmInfo> info =
        supervisor_.RestoreVm(name, request->path(), request->allow_degrade(), request->resume());
    if (!info.ok()) return info.status();
    *response->mutable_vm() = std::move(*info);
    return absl::OkStatus();
  });
}

grpc::Status SnapshotServiceImpl::InspectSnapshot(grpc::ServerContext* context,
                                                  const v1::InspectSnapshotRequest* request,
                                                  v1::InspectSnapshotResponse* response) {
  return Guarded(auth_, context, Role::kViewer, [&]() -> absl::Status {
    absl::Status path = RequireAbsolutePath(request->path(), "path");
    if (!path.ok()) return path;
    SnapshotFileInfo file;
    absl::StatusOr<v1::Snapshot> snapshot = InspectSnapshotFile(request->path(), &file);
    if (!snapshot.ok()) return snapshot.status();
    response->set_format_version(file.format_version);
    response->set_producer(snapshot->producer());
    *response->mutable_source_host() = snapshot->source_host();
    *response->mutable_config() = snapshot->config();
    for (const v1::VcpuState& vcpu : snapshot->vcpus()) {
      *response->add_vcpus() = vcpu.exception();
      for (std::string& line : DescribeExceptionState(vcpu.exception())) response->add_summary(std::move(line));
    }
    response->set_file_bytes(file.file_bytes);
    response->set_memory_bytes_stored(file.memory_bytes_stored);
    response->set_sha256(file.sha256_hex);
    response->set_captured_unix_ns(snapshot->captured_unix_ns());
    return absl::OkStatus();
  });
}

}  // namespace vexstate::vexd
