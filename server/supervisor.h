// Supervisor: vexd's VMs, one VMM worker process per VM, and the journal that lets a
// restarted vexd find them again.
//
// Each VM is in one of four phases:
//   starting  the worker is being launched (its name is reserved; it is not listed yet)
//   live      the worker process runs; its VmWorker socket answers; an EventPump
//             republishes its events into the EventHub and the ExitWatcher waits on its
//             pidfd
//   stopping  StopVm asked the worker to shut down and waits for it to exit
//   gone      no worker: the VM is STOPPED (by request) or CRASHED (with the reason:
//             "worker pid 123 killed by signal 9 (SIGKILL)") until DeleteVm
// A worker's death is seen through its pidfd: when vexd launched it (it is vexd's child)
// the exit status is reaped and named; a worker re-attached after a vexd restart is not
// vexd's child, so its exit status is unknown and the reason says so. One VM's crash
// touches no other VM and not vexd.
//
// Journal: the VmRecord of each VM is rewritten (atomically) whenever its state, worker or
// error changes. Start() reads every record and re-attaches to a worker only if its pid is
// alive, its /proc start time equals the recorded one (pids are recycled) and its socket
// answers GetStatus; a worker that is ours but does not answer is killed. Every other VM
// keeps STOPPED/CRASHED, or becomes CRASHED ("its worker is gone") when it was running.
// Shutdown() leaves the workers running, for the next vexd.
//
// Migration (migration_service.h, migration_peer.h): a VM receiving an incoming migration is
// hidden — not listed, no RPC forwarded to it — until CommitIncoming; its record carries the
// migration (VmRecord.migration). An outgoing migration's phase is journalled in the same field
// (JournalMigration) before each step the exactly-once rule depends on.
// Exactly once for incoming VMs (SPEC §4.1): an incoming VM whose commit was never handed to its
// worker (NoteIncomingCommit journals that hand-over first) can never run here, so when its
// worker dies, or when vexd starts and finds its record, it is discarded: worker killed, record
// and files removed, FAILED recorded as the migration's outcome (incoming_outcomes.h) for the
// source to read later. One whose commit was handed over is kept (hidden) until settled.
// Outgoing migrations found in the journal at start are settled by MigrationServiceImpl
// (OutgoingMigrations), not here: that needs the peer.
//
// Thread-safety: every public method is thread-safe. Locks: the VM table's lock before a
// VM's lock, never the reverse; no lock is held across a worker RPC.
#ifndef VEXSTATE_SERVER_SUPERVISOR_H_
#define VEXSTATE_SERVER_SUPERVISOR_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "server/event_hub.h"
#include "server/event_pump.h"
#include "server/exit_watcher.h"
#include "server/incoming_outcomes.h"
#include "server/journal.h"
#include "server/state_dir.h"
#include "server/worker_connection.h"
#include "vexstate/v1/worker.pb.h"
#include "vmm/kvm/fd.h"

namespace vexstate::vexd {

// VM names: 1 to 63 characters of [a-z0-9-_] (they name files and sockets). INVALID_ARGUMENT
// otherwise, saying which character or length is wrong.
absl::Status ValidateVmName(absl::string_view name);

// "RUNNING", "CRASHED"... for messages.
absl::string_view RunStateName(v1::VmRunState state);

class Supervisor {
 public:
  struct Options {
    std::string worker_binary;
    // How long a new worker may take to print its ready line.
    absl::Duration ready_timeout = absl::Seconds(60);
    // Deadline of the RPCs vexd itself makes to a worker (GetStatus, Shutdown).
    absl::Duration worker_call_timeout = absl::Seconds(10);
    // --max_mce_banks: a VM created or received here gets at most this many (0 = no limit).
    uint32_t max_mce_banks = 0;
  };

  // Loads the journal of `dir` and re-attaches to the workers still alive (see above).
  // `dir` and `hub` must outlive the Supervisor.
  static absl::StatusOr<std::unique_ptr<Supervisor>> Start(const StateDir* dir, EventHub* hub, Options options);
  // Shutdown().
  ~Supervisor();

  // Stops following the workers (event pumps, exit watching). The workers keep running.
  // Idempotent; the other methods must not be called afterwards.
  void Shutdown();

  // Launches a worker for `config` (name validated; ALREADY_EXISTS when taken, whatever the
  // VM's state). A worker's startup error is returned with its own code (INVALID_ARGUMENT
  // for a config the host cannot run, ...); then nothing remains of the VM.
  absl::StatusOr<v1::VmInfo> CreateVm(const v1::VmConfig& config, bool start);
  // Launches a worker that restores the snapshot at `path` as VM `name`.
  absl::StatusOr<v1::VmInfo> RestoreVm(const std::string& name, const std::string& path, bool allow_degrade,
                                       bool resume);
  // Live VMs: the worker's view, completed with vexd's fields. STOPPED/CRASHED VMs: the
  // journal's. UNAVAILABLE when a live worker does not answer.
  absl::StatusOr<v1::VmInfo> GetVm(const std::string& name);
  // Every VM, by name; a live worker that does not answer is listed with its last known state.
  std::vector<v1::VmInfo> ListVms();
  // Asks the worker to shut down (then SIGTERM, then SIGKILL) and waits for it to exit.
  absl::StatusOr<v1::VmInfo> StopVm(const std::string& name);
  // Forgets a STOPPED or CRASHED VM: its record, config, socket and log files.
  absl::StatusOr<v1::VmInfo> DeleteVm(const std::string& name);

  // ---- migration
  uint32_t max_mce_banks() const { return options_.max_mce_banks; }
  // `config` with --max_mce_banks applied.
  v1::VmConfig ClampConfig(v1::VmConfig config) const;
  // Launches a hidden worker for an incoming migration (worker flags in `mode_args`).
  absl::StatusOr<std::shared_ptr<WorkerConnection>> ReceiveVm(const v1::VmConfig& config,
                                                              std::vector<std::string> mode_args,
                                                              v1::MigrationJournal journal);
  // The hidden VM receiving migration `migration_id`: its name and worker. NOT_FOUND if none.
  absl::StatusOr<std::pair<std::string, std::shared_ptr<WorkerConnection>>> Incoming(const std::string& migration_id);
  // Journals that Finish(commit) is being handed to the incoming VM's worker: from now on a
  // dead worker no longer means "discarded" (it may have run the VM). FAILED_PRECONDITION when
  // the worker is gone already (it never got the commit: DiscardIncoming it).
  absl::Status NoteIncomingCommit(const std::string& name);
  // The incoming VM runs: it is listed and served from now on; `outcome` (COMPLETED) is
  // recorded as the migration's final answer.
  void CommitIncoming(const std::string& name, const v1::FinishResponse& outcome);
  // An incoming VM that never ran and never will: records FAILED as its migration's outcome,
  // then stops its worker and forgets it. FAILED_PRECONDITION for any other VM.
  absl::Status DiscardIncoming(const std::string& name);
  // How this host settled incoming migration `migration_id`, if it did (incoming_outcomes.h).
  std::optional<v1::FinishResponse> SettledIncoming(const std::string& migration_id) const {
    return outcomes_.Find(migration_id);
  }
  // Stops the VM's worker (if it still runs) and forgets the VM: record and files. Used for a
  // discarded incoming VM and for a source VM that now runs on the destination. OK when the VM
  // is gone already.
  absl::Status RemoveVm(const std::string& name);
  // The outgoing migrations in the journal, by VM name.
  std::vector<std::pair<std::string, v1::MigrationJournal>> OutgoingMigrations();
  // Writes `journal` into the VM's record; the error when the journal cannot be written (the
  // caller must not take the step the record was meant to cover).
  absl::Status JournalMigration(const std::string& name, const v1::MigrationJournal& journal);
  // Publishes a lifecycle event of vexd's own (migration steps).
  void Announce(const std::string& name, v1::VmRunState state, const std::string& reason);

  // The worker of VM `name`, for forwarding an RPC. NOT_FOUND for an unknown VM;
  // FAILED_PRECONDITION for one that is STOPPED, CRASHED (with the reason), or being
  // created or stopped.
  absl::StatusOr<std::shared_ptr<WorkerConnection>> Worker(const std::string& name);
  // Takes note of a VmInfo a worker returned (a state change goes to the journal) and
  // returns it completed with vexd's fields (worker pid, creation time, restored_from).
  v1::VmInfo Observe(const std::string& name, v1::VmInfo info);
  // After a failed worker RPC: if the worker has died, records it now (CRASHED) and returns
  // UNAVAILABLE naming how it died; otherwise returns `failure` with the VM named.
  absl::Status ExplainWorkerFailure(const std::string& name, const absl::Status& failure);
  struct LiveVm {
    std::string name;
    v1::VmRunState state;  // as last reported by the worker
  };
  // The VMs whose worker runs, by name.
  std::vector<LiveVm> LiveVms();

 private:
  enum class Phase { kStarting, kLive, kStopping, kGone };
  struct Vm {
    absl::Mutex mu;
    Phase phase ABSL_GUARDED_BY(mu) = Phase::kStarting;
    v1::VmRecord record ABSL_GUARDED_BY(mu);
    std::shared_ptr<WorkerConnection> worker ABSL_GUARDED_BY(mu);
    kvm::ScopedFd pidfd ABSL_GUARDED_BY(mu);
    bool is_child ABSL_GUARDED_BY(mu) = false;
    uint64_t watch_id ABSL_GUARDED_BY(mu) = 0;
    std::unique_ptr<EventPump> pump ABSL_GUARDED_BY(mu);
    bool hidden ABSL_GUARDED_BY(mu) = false;  // an incoming migration, not committed
  };

  Supervisor(const StateDir* dir, EventHub* hub, Options options);

  std::shared_ptr<Vm> Find(const std::string& name);
  // Reserves `name` for a VM being created. ALREADY_EXISTS if taken.
  absl::StatusOr<std::shared_ptr<Vm>> Reserve(const std::string& name);
  // Launches the worker of a reserved VM and makes it live; on failure the reservation and
  // the VM's files are removed.
  absl::StatusOr<v1::VmInfo> Launch(const std::shared_ptr<Vm>& vm, v1::VmRecord base,
                                    std::vector<std::string> mode_args);
  // Makes `vm` live with a running worker (journal, event pump, exit watch).
  absl::Status Activate(const std::shared_ptr<Vm>& vm, std::shared_ptr<WorkerConnection> worker, kvm::ScopedFd pidfd,
                        bool is_child, const v1::WorkerStatus& status);
  // Start(): takes a journal record back: re-attaches to its worker, or records why the VM
  // has none.
  void Recover(v1::VmRecord record);
  // Re-attaches to the worker named in a VM's record (at Start); the reason on failure.
  absl::Status Reattach(const std::shared_ptr<Vm>& vm);
  // A pidfd of the worker named in `record`, if that process still runs and is that worker
  // (same start time: pids are recycled); NOT_FOUND saying why not.
  absl::StatusOr<kvm::ScopedFd> OpenRecordedWorker(const v1::VmRecord& record);
  // Start(): an incoming VM that was never committed: kills its worker and forgets it.
  void DiscardAtStart(const v1::VmRecord& record);
  absl::StatusOr<v1::WorkerStatus> GetStatus(WorkerConnection& worker);
  // StopVm's work, for any live VM (hidden ones included).
  absl::StatusOr<v1::VmInfo> Stop(const std::shared_ptr<Vm>& vm, const std::shared_ptr<WorkerConnection>& worker);
  // The worker of `vm` has exited: reap it, record STOPPED or CRASHED, publish the change.
  // Idempotent; called by the ExitWatcher and by anyone who noticed first.
  void OnWorkerExit(const std::shared_ptr<Vm>& vm);
  // A lifecycle event from the worker's stream: note the VM's state as it is now.
  void OnLifecycleEvent(const std::shared_ptr<Vm>& vm, const v1::LifecycleEvent& event);
  // Notes a state reported by the worker (RPC result or lifecycle event).
  void NoteState(Vm& vm, v1::VmRunState state, const std::string& error);
  void WriteRecord(Vm& vm) ABSL_EXCLUSIVE_LOCKS_REQUIRED(vm.mu);
  void PublishLifecycle(const std::string& name, v1::VmRunState state, const std::string& reason);
  void RemoveVmFiles(const std::string& name);
  static v1::VmInfo InfoFromRecord(const v1::VmRecord& record);
  static v1::VmInfo Complete(const v1::VmRecord& record, v1::VmInfo info);

  const StateDir* const dir_;
  EventHub* const hub_;
  const Options options_;
  const Journal journal_;
  const IncomingOutcomes outcomes_;
  ExitWatcher watcher_;
  absl::Mutex mu_;
  std::map<std::string, std::shared_ptr<Vm>> vms_ ABSL_GUARDED_BY(mu_);
  bool shut_down_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_SUPERVISOR_H_
