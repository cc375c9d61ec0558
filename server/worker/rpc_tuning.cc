#include "server/worker/rpc_tuning.h"

#include "absl/synchronization/mutex.h"

namespace vexstate::worker {

void TuneDaemonProcess() { absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore); }

void ConfigureSyncServer(grpc::ServerBuilder& builder) {
  // Two threads always poll, up to four stay: enough that a handler blocked on a worker call
  // (vexd) or a pause (worker) still leaves a poller, without a thread per idle VM.
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 2);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MAX_POLLERS, 4);
}

}  // namespace vexstate::worker
