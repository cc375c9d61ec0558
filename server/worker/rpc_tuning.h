// Process-wide settings that vexd and its workers share for control-plane latency (issue 6).
// Measured on a 2-CPU kvm_pvm host (bench/README.md, "Control plane"); each one keeps every
// answer the same and only removes work per RPC.
//
// Thread-safety: call TuneDaemonProcess once from main before any other thread exists;
// ConfigureSyncServer before BuildAndStart.
#ifndef VEXSTATE_SERVER_WORKER_RPC_TUNING_H_
#define VEXSTATE_SERVER_WORKER_RPC_TUNING_H_

#include "grpcpp/server_builder.h"

namespace vexstate::worker {

// Turns off Abseil's Mutex deadlock detection. Debian builds Abseil with it on, so every
// Mutex::Lock maintains a lock graph (GraphCycles::GetId was ~3.5% of vexd's and the workers'
// CPU during QueryPending). Tests keep it: only the daemons' mains call this.
void TuneDaemonProcess();

// Keeps gRPC's sync-server threads alive between requests: with the default bounds (1..2
// pollers) a request that finds no idle poller spawns a thread, which exits again after the
// request when two already poll, so a clone + exit landed on roughly one call in fifty.
void ConfigureSyncServer(grpc::ServerBuilder& builder);

}  // namespace vexstate::worker

#endif  // VEXSTATE_SERVER_WORKER_RPC_TUNING_H_
