#include "server/worker_connection.h"

#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace vexstate::vexd {

WorkerConnection::WorkerConnection(const std::string& socket_path_in) : socket_path(socket_path_in) {
  grpc::ChannelArguments args;
  // Snapshots and guest reports can be large; the socket is local and trusted.
  args.SetMaxReceiveMessageSize(-1);
  args.SetMaxSendMessageSize(-1);
  // A worker that went away is noticed by its pidfd; reconnect quickly when it is back.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 1000);
  // The socket is only reachable by vexd's user (mode 0600 in a 0700 directory): plaintext.
  channel = grpc::CreateCustomChannel("unix:" + socket_path, grpc::InsecureChannelCredentials(), args);
  stub = v1::VmWorker::NewStub(channel);
}

}  // namespace vexstate::vexd
