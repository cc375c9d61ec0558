// WorkerConnection: a gRPC channel to one worker's VmWorker service on its Unix socket.
//
// Thread-safety: the stub is thread-safe (gRPC stubs are); the object is immutable.
#ifndef VEXSTATE_SERVER_WORKER_CONNECTION_H_
#define VEXSTATE_SERVER_WORKER_CONNECTION_H_

#include <memory>
#include <string>

#include "grpcpp/channel.h"
#include "vexstate/v1/worker.grpc.pb.h"

namespace vexstate::vexd {

struct WorkerConnection {
  explicit WorkerConnection(const std::string& socket_path);

  const std::string socket_path;
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::VmWorker::Stub> stub;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_WORKER_CONNECTION_H_
