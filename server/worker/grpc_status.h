// absl::Status <-> grpc::Status. The canonical codes are the same numbers in both (absl
// status_code.h mirrors google.rpc.Code), so a status keeps its code and message across the
// worker's socket and vexd can pass it on unchanged.
#ifndef VEXSTATE_SERVER_WORKER_GRPC_STATUS_H_
#define VEXSTATE_SERVER_WORKER_GRPC_STATUS_H_

#include "absl/status/status.h"
#include "grpcpp/support/status.h"

namespace vexstate::worker {

grpc::Status ToGrpcStatus(const absl::Status& status);
absl::Status FromGrpcStatus(const grpc::Status& status);

}  // namespace vexstate::worker

#endif  // VEXSTATE_SERVER_WORKER_GRPC_STATUS_H_
