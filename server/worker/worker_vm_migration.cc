// WorkerVm's part in live migration (worker_vm.h). The exactly-once rule (SPEC §4.1,
// proto/vexstate/v1/migration.proto) decides three places here, each marked.
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "migration/compatibility.h"
#include "server/worker/worker_vm.h"

namespace vexstate::worker {

absl::StatusOr<std::unique_ptr<WorkerVm>> WorkerVm::CreateIncoming(v1::VmConfig config, const std::string& migration_id,
                                                                   bool allow_degrade, size_t event_capacity) {
  if (config.name().empty()) return absl::InvalidArgumentError("VmConfig.name is empty: the VM needs a name");
  if (migration_id.empty()) return absl::InvalidArgumentError("an incoming VM needs its migration id");
  std::unique_ptr<WorkerVm> worker(new WorkerVm(config, event_capacity));
  migration::DestinationOptions options;
  options.migration_id = migration_id;
  options.config = std::move(config);
  options.policy.allow_degrade = allow_degrade;
  absl::StatusOr<std::unique_ptr<migration::MigrationDestination>> destination =
      migration::MigrationDestination::Create(std::move(options), worker->exit_handler());
  if (!destination.ok()) {
    return absl::Status(destination.status().code(), absl::StrFormat("preparing incoming migration %s: %s",
                                                                     migration_id, destination.status().message()));
  }
  worker->incoming_ = std::move(*destination);
  worker->SetState(v1::VM_CREATED, absl::StrCat("incoming migration ", migration_id));
  return worker;
}

absl::StatusOr<v1::FinishResponse> WorkerVm::FinishIncoming(bool commit) {
  if (incoming_ == nullptr) return absl::FailedPreconditionError("this worker has no incoming migration");
  absl::MutexLock lock(&op_mu_);
  const std::string id = incoming_->migration_id();
  if (!commit) {
    // Discard is final: the copy never runs (Commit refuses after it).
    if (vm_ != nullptr) {
      return absl::FailedPreconditionError(
          absl::StrFormat("migration %s already committed: the VM runs here and cannot be discarded", id));
    }
    incoming_->Discard().IgnoreError();
    return incoming_->Describe();
  }
  if (vm_ != nullptr) return incoming_->Describe();  // a repeated Finish(commit)
  // Exactly once: the VM runs here only through Commit, which needs a verified transfer.
  if (absl::Status s = incoming_->Commit(); !s.ok()) return incoming_->Describe();
  vm_ = incoming_->ReleaseVm();
  host_ = vm_->host();
  degradations_ = incoming_->degradations();
  std::string reason = absl::StrCat("migrated in (migration ", id, "): running");
  if (!degradations_.empty()) absl::StrAppend(&reason, "; degraded: ", absl::StrJoin(degradations_, "; "));
  SetState(v1::VM_RUNNING, reason);
  return incoming_->Describe();
}

absl::StatusOr<v1::MigrationRequirements> WorkerVm::BeginMigration() {
  absl::MutexLock lock(&op_mu_);
  {
    // A new migration begins: a cancel still recorded is an earlier migration's, one that
    // arrived after that migration's MigrateOut had ended (vexd forwards CancelMigration outside
    // its lock, and only from pre-copy on, so none can be meant for this one yet). Kept, it
    // would cancel this migration at once.
    absl::MutexLock outgoing_lock(&outgoing_mu_);
    cancel_requested_ = false;
  }
  if (absl::Status s = CheckUsable("migrate it"); !s.ok()) return s;
  return migration::RequirementsOf(*vm_);
}

migration::SourceResult WorkerVm::MigrateOut(migration::SourceOptions options, migration::PacketSink& sink,
                                             const std::string& destination) {
  absl::MutexLock lock(&op_mu_);
  migration::SourceResult result;
  if (absl::Status s = CheckUsable("migrate it"); !s.ok()) {
    absl::MutexLock outgoing_lock(&outgoing_mu_);
    cancel_requested_ = false;  // a cancel meant for this migration
    result.status = s;
    return result;
  }
  const bool was_running = state() == v1::VM_RUNNING;
  options.at_pause = [this, was_running, &destination](Vm&) {
    if (was_running) SetState(v1::VM_PAUSED, absl::StrCat("migrating to ", destination, ": paused for stop-and-copy"));
    return absl::OkStatus();
  };
  migration::MigrationSource source(vm_.get(), std::move(options));
  {
    absl::MutexLock outgoing_lock(&outgoing_mu_);
    outgoing_ = &source;
    if (cancel_requested_) source.Cancel();
  }
  result = source.Run(sink);
  {
    absl::MutexLock outgoing_lock(&outgoing_mu_);
    outgoing_ = nullptr;
    cancel_requested_ = false;
  }
  // Exactly once: what Run left behind decides who may resume the VM (migration/source.h):
  //   final_state_sent  paused_by_source  resumed_by_source
  //   false             false             false   the VM was never paused by the migration
  //                                               (still running, or paused before): nothing to do
  //   false             true              true    Run resumed it: running here
  //   false             true              false   Run could not resume it: the destination can
  //                                               never run it (no final state), so
  //                                               ConfirmMigrateOut(discarded) resumes it here
  //   true              any               false   held: the destination may hold the state;
  //                                               ConfirmMigrateOut settles it (commit: stop
  //                                               here; discard: resume if Run paused it)
  // (final_state_sent implies resumed_by_source == false.)
  if (result.resumed_by_source) {
    SetState(v1::VM_RUNNING,
             absl::StrCat("migration to ", destination, " failed: ", result.status.message(), "; resumed here"));
  }
  {
    absl::MutexLock state_lock(&state_mu_);
    resume_after_discard_ = result.paused_by_source && !result.resumed_by_source;
    if (result.final_state_sent) {
      // Exactly once: the destination may hold the final state; only ConfirmMigrateOut, after
      // the destination settled it, releases the VM here.
      migration_hold_ = true;
      hold_destination_ = destination;
    }
  }
  return result;
}

void WorkerVm::CancelMigrateOut() {
  absl::MutexLock lock(&outgoing_mu_);
  cancel_requested_ = true;
  if (outgoing_ != nullptr) outgoing_->Cancel();
}

absl::StatusOr<v1::VmInfo> WorkerVm::ConfirmMigrateOut(bool committed, const std::string& destination) {
  // vexd may confirm while MigrateOut still runs (its call ended early, e.g. at its deadline,
  // so it never saw the verdict): op_mu_ waits for the migration to end, and the flags below
  // are then what MigrateOut left.
  if (committed) {
    {
      absl::MutexLock op_lock(&op_mu_);
      absl::MutexLock lock(&state_mu_);
      if (!migration_hold_) {
        // The destination cannot run the VM without the final state: a commit here is a bug.
        return absl::FailedPreconditionError(absl::StrFormat(
            "VM \"%s\" has no migration waiting for a commit (no final state was sent)", config_.name()));
      }
    }
    return Stop(absl::StrCat("migrated to ", destination));
  }
  absl::MutexLock lock(&op_mu_);
  bool held = false;
  bool resume = false;
  {
    absl::MutexLock state_lock(&state_mu_);
    held = migration_hold_;
    resume = resume_after_discard_;
    migration_hold_ = false;
    resume_after_discard_ = false;
    hold_destination_.clear();
  }
  // Exactly once: resumed only now, when vexd settled the migration as discarded (held: the
  // destination confirmed the discard, or Finish(commit) was never sent so it can never run
  // the copy), or when the final state never left (not held: the destination cannot run it).
  // Only a VM the migration paused is resumed; one paused before stays paused.
  if (resume && state() == v1::VM_PAUSED && vm_ != nullptr) {
    if (absl::Status s = vm_->Resume(); !s.ok()) {
      absl::MutexLock state_lock(&state_mu_);
      resume_after_discard_ = true;  // a retry may still resume it
      return s;
    }
    SetState(v1::VM_RUNNING,
             held ? absl::StrCat("migration to ", destination,
                                 " failed; it was discarded (never committed on the destination): resumed here")
                  : absl::StrCat("migration to ", destination, " failed before the final state was sent: resumed here"));
  }
  return Info();
}

}  // namespace vexstate::worker
