// WorkerVm: the one VM a worker process runs, with its witness console, run state and event
// log. The gRPC layer (worker_service.h) only translates; every rule of the VmWorker contract
// (worker.proto, control.proto) lives here, in absl::Status terms.
//
// Run states: CREATED (fresh, never run) -> RUNNING <-> PAUSED; any -> CRASHED when a vCPU stops
// with an error (guest shutdown, emulation failure: VmInfo.error says which); any -> STOPPED by
// Stop(). CRASHED and STOPPED are final. Pause of a VM that is not running and Resume of a
// running one change nothing and succeed.
//
// State changes need every vCPU out of KVM_RUN: injections and snapshots need a CREATED or
// PAUSED VM, or pause_around (pause, do it, resume, as one operation). Reads (QueryPending,
// GetExceptionState) pause a running VM for the read and resume it, so the vCPUs of one VM are
// read at one instant (control.proto, QueryPendingRequest). A refused request changes nothing:
// requests are checked (vCPU index, state, flags) before anything is paused or written.
//
// Events (events()): a lifecycle event for every state change, an injection event for every
// accepted injection or exception-state write, and every line the guest reports.
//
// Live migration (worker_vm_migration.cc; exactly-once rule: proto/vexstate/v1/migration.proto):
//  * source: BeginMigration reads the VM's requirements; MigrateOut runs MigrationSource under
//    the operation lock (no other operation interleaves). Once the final state has left, the VM
//    is held: paused, and every operation that could run or change it is refused until
//    ConfirmMigrateOut says how the destination settled it (committed: the VM stops here;
//    discarded: it resumes here if MigrateOut paused it). ConfirmMigrateOut(discarded) is total:
//    without a hold (the migration failed before the final state was sent) it resumes the VM if
//    the migration paused it and did not resume it, else it changes nothing; it waits for a
//    MigrateOut still running (vexd may have lost its verdict).
//  * destination: CreateIncoming makes a VM_CREATED worker around a MigrationDestination (its
//    data stream is served by a DataServer the caller starts on incoming()); the VM runs only
//    in FinishIncoming(commit).
//
// Thread-safety: every method is thread-safe. Operations are serialised (one at a time), so a
// pause_around sequence is never interleaved with another request; Info() and events() never
// wait for an operation.
#ifndef VEXSTATE_SERVER_WORKER_WORKER_VM_H_
#define VEXSTATE_SERVER_WORKER_WORKER_VM_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "migration/destination.h"
#include "migration/packet_sink.h"
#include "migration/source.h"
#include "server/worker/event_log.h"
#include "vexstate/v1/control.pb.h"
#include "vexstate/v1/host.pb.h"
#include "vmm/devices/witness_console.h"
#include "vmm/vm.h"

namespace vexstate::worker {

class WorkerVm {
 public:
  // A fresh VM for `config` (VM_CREATED). The guest is config.guest: a bundled guest by name,
  // or an image file; unset means the bundled "witness". For the bundled witness the control
  // block is written from config.witness, magic last, before any vCPU runs.
  static absl::StatusOr<std::unique_ptr<WorkerVm>> Create(v1::VmConfig config,
                                                          size_t event_capacity = EventLog::kDefaultCapacity);

  // The VM saved in snapshot file `path` (VM_PAUSED), named `name` (empty: the snapshot's
  // name). Errors of the file (NOT_FOUND, DATA_LOSS, FAILED_PRECONDITION for a newer format)
  // and of the compatibility check (FAILED_PRECONDITION unless `allow_degrade` permits an
  // explicit degradation) keep their codes.
  static absl::StatusOr<std::unique_ptr<WorkerVm>> Restore(const std::string& path, const std::string& name,
                                                           bool allow_degrade,
                                                           size_t event_capacity = EventLog::kDefaultCapacity);

  // An incoming migration's empty VM (VM_CREATED, never run before FinishIncoming(commit)).
  static absl::StatusOr<std::unique_ptr<WorkerVm>> CreateIncoming(v1::VmConfig config, const std::string& migration_id,
                                                                  bool allow_degrade,
                                                                  size_t event_capacity = EventLog::kDefaultCapacity);

  ~WorkerVm();

  v1::VmInfo Info() const;
  const v1::HostCapabilities& host() const { return host_; }
  // What the restore did differently from the snapshot (empty unless restored with
  // allow_degrade and something had to give).
  const std::vector<std::string>& degradations() const { return degradations_; }
  EventLog& events() { return events_; }

  absl::StatusOr<v1::VmInfo> Resume();
  absl::StatusOr<v1::VmInfo> Pause();
  // Stops every vCPU, frees the VM, records VM_STOPPED with `reason` and closes the event
  // log (watchers drain it and end). Idempotent; every later operation is refused.
  v1::VmInfo Stop(const std::string& reason);

  absl::StatusOr<v1::InjectResponse> InjectSError(const v1::InjectSErrorRequest& request);
  absl::StatusOr<v1::InjectResponse> InjectExternalAbort(const v1::InjectExternalAbortRequest& request);
  absl::StatusOr<v1::InjectResponse> InjectException(const v1::InjectExceptionRequest& request);
  absl::StatusOr<v1::InjectResponse> InjectNmi(const v1::InjectNmiRequest& request);
  absl::StatusOr<v1::InjectResponse> InjectMachineCheck(const v1::InjectMachineCheckRequest& request);

  absl::StatusOr<v1::VmPending> QueryPending();
  absl::StatusOr<v1::GetExceptionStateResponse> GetExceptionState(const v1::GetExceptionStateRequest& request);
  // Needs a CREATED or PAUSED VM. All vCPUs or none: if one write fails, the vCPUs already
  // written get their previous state back.
  absl::StatusOr<v1::SetExceptionStateResponse> SetExceptionState(const v1::SetExceptionStateRequest& request);

  // Captures (pausing around it if asked) and writes the snapshot file; the file is written
  // after the VM has been resumed. `path` must be absolute (the worker's working directory is
  // not the caller's).
  absl::StatusOr<v1::SaveSnapshotResponse> SaveSnapshot(const v1::SaveSnapshotRequest& request);

  // The bundled witness only. APPLY_SETTINGS writes request.settings. Other commands are
  // written to the control block (ARG, COMMAND, then COMMAND_SEQ); with wait_ms the call waits
  // for the guest's "VEX DONE" (the VM must be running) and returns every report from the
  // command's start to its DONE. A command is refused while an earlier one has not reported
  // DONE (a second write would replace it before the guest saw it).
  absl::StatusOr<v1::GuestCommandResponse> SendGuestCommand(const v1::GuestCommandRequest& request);

  // ---- migration, source side
  absl::StatusOr<v1::MigrationRequirements> BeginMigration();
  // `destination` names the peer in lifecycle reasons. Cancel with CancelMigrateOut: a cancel
  // that arrives before MigrateOut starts is kept for it, until the next BeginMigration.
  migration::SourceResult MigrateOut(migration::SourceOptions options, migration::PacketSink& sink,
                                     const std::string& destination);
  void CancelMigrateOut();
  absl::StatusOr<v1::VmInfo> ConfirmMigrateOut(bool committed, const std::string& destination);

  // ---- migration, destination side (CreateIncoming workers only)
  // The destination the data stream feeds (null unless created by CreateIncoming).
  migration::MigrationDestination* incoming() { return incoming_.get(); }
  absl::StatusOr<v1::FinishResponse> FinishIncoming(bool commit);

 private:
  class Devices;

  WorkerVm(v1::VmConfig config, size_t event_capacity);
  // devices_ as what the VM calls (Devices is defined in worker_vm.cc).
  ExitHandler* exit_handler() const;

  // Records a state change and its lifecycle event. CRASHED and STOPPED are final: only
  // STOPPED may follow CRASHED.
  void SetState(v1::VmRunState state, const std::string& reason) ABSL_LOCKS_EXCLUDED(state_mu_);
  v1::VmRunState state() const ABSL_LOCKS_EXCLUDED(state_mu_);
  // FAILED_PRECONDITION when the VM is CRASHED or STOPPED, naming `what` was refused.
  absl::Status CheckUsable(absl::string_view what) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  // NOT_FOUND for a vCPU index the VM does not have.
  absl::Status CheckVcpu(uint32_t vcpu) const;
  // Runs `op` while every vCPU is out of KVM_RUN: directly when the VM is CREATED or PAUSED;
  // for a RUNNING VM only with `pause_around` (pause, op, resume), else FAILED_PRECONDITION.
  absl::Status WhilePaused(bool pause_around, absl::string_view what, const std::function<absl::Status()>& op)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  // Every vCPU's exception state at one instant (pauses and resumes a running VM).
  absl::StatusOr<std::vector<v1::VcpuExceptionState>> ReadExceptionStates() ABSL_EXCLUSIVE_LOCKS_REQUIRED(op_mu_);
  // The shared path of the Inject* methods: checks, injects while paused, reads the vCPU's
  // state back and records the injection event (unless `changed` says nothing changed).
  absl::StatusOr<v1::InjectResponse> Inject(uint32_t vcpu, bool pause_around, const std::string& what,
                                            const std::function<absl::Status()>& inject,
                                            const std::function<bool()>& changed = nullptr);
  bool runs_witness() const;
  void RecordInjection(uint32_t vcpu, const std::string& what);

  // Called on vCPU threads.
  void OnGuestReport(const WitnessReport& report);
  void OnVcpuStopped(uint32_t vcpu, const absl::Status& reason);
  // Thread body: after a crash, pauses the vCPUs still running, so a crashed VM stays frozen
  // for inspection instead of spinning.
  void FreezeAfterCrash();

  const v1::VmConfig config_;  // name is the worker's VM name
  const int64_t created_unix_ns_;
  v1::HostCapabilities host_;
  std::string restored_from_;
  std::vector<std::string> degradations_;

  EventLog events_;

  mutable absl::Mutex state_mu_;
  v1::VmRunState state_ ABSL_GUARDED_BY(state_mu_) = v1::VM_RUN_STATE_UNSPECIFIED;
  std::string error_ ABSL_GUARDED_BY(state_mu_);
  uint64_t exception_reports_ ABSL_GUARDED_BY(state_mu_) = 0;
  uint64_t done_reports_ ABSL_GUARDED_BY(state_mu_) = 0;
  bool freeze_requested_ ABSL_GUARDED_BY(state_mu_) = false;
  bool stopping_ ABSL_GUARDED_BY(state_mu_) = false;
  // Set while the final state of an outgoing migration may be on the destination (see above).
  bool migration_hold_ ABSL_GUARDED_BY(state_mu_) = false;
  bool resume_after_discard_ ABSL_GUARDED_BY(state_mu_) = false;
  std::string hold_destination_ ABSL_GUARDED_BY(state_mu_);

  absl::Mutex outgoing_mu_;  // taken alone, so that CancelMigrateOut never waits for op_mu_
  migration::MigrationSource* outgoing_ ABSL_GUARDED_BY(outgoing_mu_) = nullptr;
  bool cancel_requested_ ABSL_GUARDED_BY(outgoing_mu_) = false;

  // Lock order: stop_mu_, then op_mu_, then state_mu_ (vCPU threads take state_mu_ only).
  absl::Mutex stop_mu_;
  absl::Mutex op_mu_;
  uint64_t commands_issued_ ABSL_GUARDED_BY(op_mu_) = 0;

  // The vCPU threads call into the console and devices until vm_ is gone: declared before
  // vm_ so they are destroyed after it.
  WitnessConsole console_;
  std::unique_ptr<Devices> devices_;
  std::unique_ptr<Vm> vm_ ABSL_GUARDED_BY(op_mu_);
  // Incoming migration (holds the VM until commit; destroyed before devices_). Set once, in
  // CreateIncoming, before the worker is shared: read without a lock.
  std::unique_ptr<migration::MigrationDestination> incoming_;
  std::thread freezer_;
};

}  // namespace vexstate::worker

#endif  // VEXSTATE_SERVER_WORKER_WORKER_VM_H_
