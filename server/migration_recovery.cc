// MigrationServiceImpl's settling of the outgoing migrations a restarted vexd finds in its
// journal (header comment of migration_service.h). The exactly-once rule (SPEC §4.1,
// proto/vexstate/v1/migration.proto) decides each branch: once Finish(commit) may have reached
// the destination (the commit intent, commit_sent, is journalled before it is sent: at
// stop-and-copy), only the destination's answer releases the VM here; before that, the
// destination can never run its copy. A journalled intent whose Finish(commit) never went out
// is settled the same way: the destination commits only a copy it verified, and answers FAILED
// (and discards) when it holds none, e.g. while the final state is still on its way.
#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "server/logging.h"
#include "server/migration_calls.h"
#include "server/migration_service.h"

namespace vexstate::vexd {
namespace {

// Short calls: a thread that waits on a dead peer must not hold up vexd's shutdown for long.
constexpr absl::Duration kPeerCallTimeout = absl::Seconds(5);
constexpr absl::Duration kFirstRetry = absl::Seconds(1);
constexpr absl::Duration kMaxRetry = absl::Seconds(30);

std::string Describe(const v1::MigrationJournal& journal) {
  return absl::StrFormat("migration %s to %s (phase %s, %s)", journal.migration_id(), journal.peer(),
                         v1::MigrationPhase_Name(journal.phase()),
                         journal.commit_sent() ? "commit intent journalled: Finish(commit) may have been sent"
                                               : "Finish(commit) never sent");
}

}  // namespace

v1::VmRunState MigrationServiceImpl::StateOf(const std::string& vm) {
  absl::StatusOr<v1::VmInfo> info = supervisor_.GetVm(vm);
  return info.ok() ? info->state() : v1::VM_RUN_STATE_UNSPECIFIED;
}

void MigrationServiceImpl::RecoverJournaled() {
  for (auto& [vm, journal] : supervisor_.OutgoingMigrations()) {
    auto active = std::make_shared<Active>();
    active->status.set_vm(vm);
    active->status.set_migration_id(journal.migration_id());
    active->status.set_phase(journal.commit_sent() ? v1::MIGRATION_FINISH : journal.phase());
    active->commit_sent = journal.commit_sent();  // CancelMigration is refused past the commit point
    if (absl::StatusOr<std::shared_ptr<WorkerConnection>> worker = supervisor_.Worker(vm); worker.ok()) {
      active->worker = *worker;
    }
    absl::MutexLock lock(&mu_);
    if (stopping_.HasBeenNotified()) return;
    active_[vm] = active;  // MigrateVm of this VM is refused until it is settled
    recoveries_.emplace_back([this, vm = vm, journal = journal, active] { SettleJournaled(vm, journal, active); });
  }
}

void MigrationServiceImpl::Shutdown() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_.HasBeenNotified()) stopping_.Notify();
    threads.swap(recoveries_);
  }
  for (std::thread& thread : threads) thread.join();
}

void MigrationServiceImpl::SettleJournaled(const std::string& vm, v1::MigrationJournal journal,
                                           std::shared_ptr<Active> active) {
  supervisor_.Announce(vm, StateOf(vm),
                       absl::StrCat(Describe(journal), " was interrupted by a vexd restart",
                                    active->worker == nullptr ? " (the VM's worker is gone)" : "",
                                    ": settling it with the destination"));
  if (journal.commit_sent()) {
    SettleCommitted(vm, std::move(journal), *active);
  } else {
    SettlePreCommit(vm, journal, *active);
  }
  if (stopping_.HasBeenNotified()) return;  // not settled: the next vexd takes it up
  absl::MutexLock lock(&mu_);
  last_[vm] = active->status;
  if (auto it = active_.find(vm); it != active_.end() && it->second == active) active_.erase(it);
}

void MigrationServiceImpl::SettlePreCommit(const std::string& vm, const v1::MigrationJournal& journal, Active& active) {
  const std::string& id = journal.migration_id();
  if (active.worker != nullptr) {
    // The worker may still be streaming (it stops by itself once it notices that the old vexd's
    // call is gone): stop it now. ConfirmMigrateOut below waits for it to end.
    std::unique_ptr<grpc::ClientContext> context = ContextWithDeadline(options_.worker_call_timeout);
    v1::VmInfo ignored;
    active.worker->stub->CancelMigrateOut(context.get(), v1::CancelMigrateOutRequest(), &ignored);
  }
  // Best effort: the destination frees its incoming worker now. Its answer changes nothing here:
  // Finish(commit) was never sent, so it can never run its copy.
  std::string told;
  absl::StatusOr<std::unique_ptr<PeerClient>> peer = PeerClient::Connect(journal.peer(), options_.tls_dir);
  absl::StatusOr<v1::FinishResponse> answer =
      peer.ok() ? (*peer)->Finish(id, /*commit=*/false, kPeerCallTimeout) : peer.status();
  told = answer.ok() ? absl::StrCat("the destination says ", v1::MigrationPhase_Name(answer->phase()))
                     : absl::StrCat("the destination could not be told to discard (", answer.status().message(),
                                    "; it never runs the VM without Finish(commit))");
  const std::string error = absl::StrCat("interrupted by a vexd restart before Finish(commit); ", told);
  KeepHere(vm, active, journal.peer(), absl::StrCat("migration ", id, " to ", journal.peer(), " failed: ", error));
  absl::MutexLock lock(&mu_);
  active.status.set_phase(v1::MIGRATION_FAILED);
  active.status.mutable_last_progress()->mutable_result()->set_outcome(v1::MIGRATION_FAILED);
  active.status.mutable_last_progress()->mutable_result()->set_error(error);
}

void MigrationServiceImpl::KeepHere(const std::string& vm, Active& active, const std::string& peer,
                                    const std::string& what) {
  std::string here = "the VM's worker is gone";
  if (active.worker != nullptr) {
    absl::StatusOr<v1::VmInfo> info =
        ConfirmOnWorker(*active.worker, /*committed=*/false, peer, options_.worker_call_timeout);
    if (info.ok()) {
      supervisor_.Observe(vm, *info);
      here =
          absl::StrCat("the VM stays here, ", RunStateName(info->state()), " (resumed if the migration had paused it)");
    } else {
      here = absl::StrCat("resuming the VM here failed: ", info.status().message());
    }
  }
  supervisor_.JournalMigration(vm, v1::MigrationJournal()).IgnoreError();
  supervisor_.Announce(vm, StateOf(vm), absl::StrCat(what, "; ", here));
}

void MigrationServiceImpl::SettleCommitted(const std::string& vm, v1::MigrationJournal journal, Active& active) {
  const std::string& id = journal.migration_id();
  const std::string peer_address = journal.peer();
  const absl::Time unknown_after = absl::Now() + options_.settle_timeout;
  absl::Duration backoff = kFirstRetry;
  bool reported_unknown = !journal.unsettled().empty();
  absl::StatusOr<v1::FinishResponse> verdict;
  std::unique_ptr<PeerClient> peer;
  for (;;) {
    if (peer == nullptr) {
      absl::StatusOr<std::unique_ptr<PeerClient>> connected = PeerClient::Connect(peer_address, options_.tls_dir);
      if (connected.ok()) {
        peer = std::move(*connected);
      } else {
        verdict = connected.status();  // the TLS files: asked again at the next try
      }
    }
    if (peer != nullptr) {
      // Finish(commit) again is what was journalled: the destination answers it from its record
      // (COMPLETED, or FAILED for a discarded copy), or commits a verified copy now.
      verdict = peer->Settle(id, /*commit=*/true, kPeerCallTimeout, reported_unknown ? absl::Now() : unknown_after,
                             [this] { return stopping_.HasBeenNotified(); });
    }
    if (verdict.ok() || stopping_.HasBeenNotified()) break;
    if (!reported_unknown && absl::Now() >= unknown_after) {
      // Exactly once: nobody can say whether the destination runs the VM: never risk running it
      // twice. Paused and listed here, saying why, until the destination answers.
      const std::string why = absl::StrCat("outcome unknown: kept paused here; migration ", id, " to ", peer_address,
                                           " had journalled its commit intent and the destination has not settled it (",
                                           verdict.status().message(), "); vexd keeps asking");
      journal.set_unsettled(why);
      supervisor_.JournalMigration(vm, journal).IgnoreError();
      supervisor_.Announce(vm, StateOf(vm), why);
      absl::MutexLock lock(&mu_);
      active.status.mutable_last_progress()->mutable_result()->set_error(why);
      reported_unknown = true;
    }
    if (stopping_.WaitForNotificationWithTimeout(backoff)) return;
    backoff = std::min(backoff * 2, kMaxRetry);
  }
  if (!verdict.ok()) return;  // stopping: left as it is, for the next vexd
  const v1::MigrationPhase outcome = verdict->phase();
  if (outcome == v1::MIGRATION_COMPLETED) {
    // The VM runs on the destination: stop and forget it here.
    if (active.worker != nullptr) {
      absl::StatusOr<v1::VmInfo> stopped =
          ConfirmOnWorker(*active.worker, /*committed=*/true, peer_address, options_.worker_call_timeout);
      if (!stopped.ok()) Log("VM %s: stopping the migrated VM's worker: %s", vm, stopped.status().message());
    }
    supervisor_.RemoveVm(vm).IgnoreError();
    supervisor_.Announce(vm, v1::VM_STOPPED,
                         absl::StrCat("migrated to ", peer_address, " (migration ", id,
                                      "): the destination runs it; settled after a vexd restart"));
  } else {
    // The destination confirmed it discarded its copy: the VM may run here again.
    KeepHere(vm, active, peer_address,
             absl::StrCat("migration ", id, " to ", peer_address, " settled after a vexd restart: ",
                          v1::MigrationPhase_Name(outcome), " (the destination discarded its copy)"));
  }
  absl::MutexLock lock(&mu_);
  active.status.set_phase(outcome);
  v1::MigrationResult& result = *active.status.mutable_last_progress()->mutable_result();
  result.set_outcome(outcome);
  result.set_destination(peer_address);
  result.set_error(outcome == v1::MIGRATION_COMPLETED ? "" : "the destination discarded its copy");
  result.set_memory_sha256(verdict->memory_sha256());
}

}  // namespace vexstate::vexd
