#include "server/migration_service.h"

#include <algorithm>
#include <utility>

#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpcpp/client_context.h"
#include "migration/testing_phase_delay.h"
#include "migration/token.h"
#include "server/logging.h"
#include "server/migration_calls.h"
#include "server/service_util.h"

namespace vexstate::vexd {
namespace {

std::unique_ptr<grpc::ClientContext> WithDeadline(absl::Duration timeout) { return ContextWithDeadline(timeout); }

}  // namespace

// One MigrateVm call: the phases of the header comment, on the handler's thread.
class MigrationServiceImpl::Run {
 public:
  Run(MigrationServiceImpl* service, const v1::MigrateVmRequest& request, std::shared_ptr<Active> active,
      grpc::ServerWriter<v1::MigrationProgress>* writer)
      : service_(*service),
        request_(request),
        vm_(request.vm()),
        active_(std::move(active)),
        writer_(writer),
        start_(absl::Now()) {
    id_ = active_->status.migration_id();
  }

  v1::MigrationResult Go();

 private:
  v1::MigrationResult Fail(v1::MigrationPhase outcome, const std::string& error);
  void Progress(v1::MigrationPhase phase);
  void Forward(v1::MigrationProgress progress);
  bool Cancelled();
  // timeout 0: peer_call_timeout.
  absl::StatusOr<v1::FinishResponse> Finish(bool commit, absl::Duration timeout = absl::ZeroDuration());
  // The destination's verdict on this migration: Finish's answer, or QueryIncoming's until it
  // is settled or settle_timeout passed. NotFound/Unavailable... when nobody could say.
  absl::StatusOr<v1::FinishResponse> Settle(bool commit);
  absl::Status Journal(v1::MigrationPhase phase, bool commit_sent);
  // Makes the commit intent (MigrationJournal.commit_sent) durable, once: normally when
  // stop-and-copy begins, so that its fsync overlaps the last pages and the destination's
  // verification instead of delaying Finish(commit). True when it is on disk.
  bool JournalCommitIntent(v1::MigrationPhase phase);
  // Tells the destination to discard when the final state was never sent (best effort).
  void FinishBeforeFinalState();
  // The fault-injection window of Options::testing_delay_before_* (nothing when zero).
  void TestingDelay(const char* step, absl::Duration delay);
  absl::Status Confirm(bool committed);
  v1::MigrationResult AfterFinalState(const v1::MigrateOutDone& done);

  MigrationServiceImpl& service_;
  const v1::MigrateVmRequest& request_;
  const std::string vm_;
  std::shared_ptr<Active> active_;
  grpc::ServerWriter<v1::MigrationProgress>* const writer_;
  const absl::Time start_;
  std::string id_;
  std::unique_ptr<PeerClient> peer_;
  v1::PrepareResponse prepared_;
  v1::MigrateOutDone done_;
  // The commit intent: written_ once a write was tried (the record on disk may hold it, even if
  // the write reported an error), durable_ once it succeeded, at journaled_.
  bool intent_written_ = false;
  bool intent_durable_ = false;
  absl::Time intent_journaled_ = absl::InfinitePast();
  // TEST-ONLY (migration/testing_phase_delay.h): inactive unless its environment variable is set.
  migration::TestingPhaseDelay testing_delay_ = migration::TestingPhaseDelay::FromEnvironment();
};

void MigrationServiceImpl::Run::Forward(v1::MigrationProgress progress) {
  progress.set_migration_id(id_);
  {
    absl::MutexLock lock(&service_.mu_);
    *active_->status.mutable_last_progress() = progress;
    active_->status.set_phase(progress.phase());
  }
  writer_->Write(progress);  // a vanished orchestrator does not stop the migration
}

void MigrationServiceImpl::Run::Progress(v1::MigrationPhase phase) {
  v1::MigrationProgress progress;
  progress.set_phase(phase);
  Forward(std::move(progress));
}

bool MigrationServiceImpl::Run::Cancelled() {
  absl::MutexLock lock(&service_.mu_);
  return active_->cancelled;
}

v1::MigrationResult MigrationServiceImpl::Run::Fail(v1::MigrationPhase outcome, const std::string& error) {
  v1::MigrationResult result;
  result.set_outcome(outcome);
  result.set_error(error);
  result.set_destination(request_.destination());
  result.set_total_ms(absl::ToInt64Milliseconds(absl::Now() - start_));
  result.set_bytes_sent(done_.bytes_sent());
  result.set_rounds(done_.rounds());
  absl::StatusOr<v1::VmInfo> info = service_.supervisor_.GetVm(vm_);
  service_.supervisor_.Announce(vm_, info.ok() ? info->state() : v1::VM_RUN_STATE_UNSPECIFIED,
                                absl::StrCat("migration ", outcome == v1::MIGRATION_CANCELLED ? "cancelled" : "failed",
                                             " (", id_, " to ", request_.destination(), "): ", error));
  return result;
}

absl::Status MigrationServiceImpl::Run::Journal(v1::MigrationPhase phase, bool commit_sent) {
  v1::MigrationJournal journal;
  if (phase != v1::MIGRATION_PHASE_UNSPECIFIED) {
    journal.set_migration_id(id_);
    journal.set_outgoing(true);
    journal.set_peer(request_.destination());
    journal.set_phase(phase);
    journal.set_commit_sent(commit_sent);
  }
  return service_.supervisor_.JournalMigration(vm_, journal);
}

bool MigrationServiceImpl::Run::JournalCommitIntent(v1::MigrationPhase phase) {
  if (intent_written_) return intent_durable_;
  intent_written_ = true;
  absl::Status written = Journal(phase, /*commit_sent=*/true);
  if (!written.ok()) {
    Log("migration %s of VM %s: journalling the commit intent: %s", id_, vm_, written.message());
    return false;
  }
  intent_durable_ = true;
  intent_journaled_ = absl::Now();
  // Tests (fault_recovery_test) wait for this line to act in the window it opens.
  Log("migration %s of VM %s: commit intent journalled (%s)", id_, vm_, v1::MigrationPhase_Name(phase));
  return true;
}

absl::StatusOr<v1::FinishResponse> MigrationServiceImpl::Run::Finish(bool commit, absl::Duration timeout) {
  return peer_->Finish(id_, commit, timeout > absl::ZeroDuration() ? timeout : service_.options_.peer_call_timeout);
}

absl::StatusOr<v1::FinishResponse> MigrationServiceImpl::Run::Settle(bool commit) {
  return peer_->Settle(id_, commit, service_.options_.peer_call_timeout,
                       absl::Now() + service_.options_.settle_timeout);
}

absl::Status MigrationServiceImpl::Run::Confirm(bool committed) {
  absl::StatusOr<v1::VmInfo> info =
      ConfirmOnWorker(*active_->worker, committed, request_.destination(), service_.options_.worker_call_timeout);
  if (!info.ok()) return info.status();
  if (!committed) service_.supervisor_.Observe(vm_, *info);
  return absl::OkStatus();
}

v1::MigrationResult MigrationServiceImpl::Run::Go() {
  const std::string& destination = request_.destination();
  absl::StatusOr<v1::VmInfo> before = service_.supervisor_.GetVm(vm_);
  service_.supervisor_.Announce(vm_, before.ok() ? before->state() : v1::VM_RUN_STATE_UNSPECIFIED,
                                absl::StrCat("migrating to ", destination, " (migration ", id_, ")"));
  // Begin.
  Progress(v1::MIGRATION_BEGIN);
  v1::MigrationRequirements requirements;
  {
    std::unique_ptr<grpc::ClientContext> context = WithDeadline(service_.options_.worker_call_timeout);
    grpc::Status rpc = active_->worker->stub->BeginMigration(context.get(), v1::WorkerStatusRequest(), &requirements);
    if (!rpc.ok()) return Fail(v1::MIGRATION_FAILED, absl::StrCat("Begin: ", rpc.error_message()));
  }
  testing_delay_.At(v1::MIGRATION_BEGIN);
  // Cancelled before Prepare: the destination was never involved, nothing to undo anywhere.
  if (Cancelled()) return Fail(v1::MIGRATION_CANCELLED, "cancelled in Begin, before Prepare");
  // Prepare: the destination checks compatibility before anything here pauses.
  Progress(v1::MIGRATION_PREPARE);
  absl::StatusOr<std::unique_ptr<PeerClient>> peer = PeerClient::Connect(destination, service_.options_.tls_dir);
  if (!peer.ok()) return Fail(v1::MIGRATION_FAILED, std::string(peer.status().message()));
  peer_ = std::move(*peer);
  {
    v1::PrepareRequest prepare;
    prepare.set_migration_id(id_);
    prepare.set_vm_name(request_.destination_name().empty() ? vm_ : request_.destination_name());
    *prepare.mutable_requirements() = requirements;
    prepare.set_allow_degrade(request_.allow_degrade());
    std::unique_ptr<grpc::ClientContext> context = WithDeadline(service_.options_.prepare_timeout);
    grpc::Status rpc = peer_->stub().Prepare(context.get(), prepare, &prepared_);
    if (!rpc.ok()) {
      return Fail(v1::MIGRATION_FAILED,
                  absl::StrCat("the destination refused (Prepare): ",
                               absl::StatusCodeToString(static_cast<absl::StatusCode>(rpc.error_code())), ": ",
                               rpc.error_message()));
    }
  }
  testing_delay_.At(v1::MIGRATION_PREPARE);
  // Perform. Cancellation up to here needs no worker: tell the destination and stop.
  {
    absl::MutexLock lock(&service_.mu_);
    active_->status.set_phase(v1::MIGRATION_PRECOPY);  // from now on CancelMigration reaches the worker
  }
  if (Cancelled() || !Journal(v1::MIGRATION_PRECOPY, false).ok()) {
    FinishBeforeFinalState();
    Journal(v1::MIGRATION_PHASE_UNSPECIFIED, false).IgnoreError();
    return Fail(Cancelled() ? v1::MIGRATION_CANCELLED : v1::MIGRATION_FAILED, "cancelled before the transfer");
  }
  // MigrateVmRequest.timeout_ms (default 10 min) bounds the whole migration: what is left of it
  // now bounds the worker's data stream (the worker enforces it, plus keepalive and a write
  // watchdog that fail a dead link within seconds); our call to the worker gets a grace period
  // on top, so that the worker's own verdict (final_state_sent...) normally reaches us.
  const uint32_t timeout_ms = request_.timeout_ms() != 0 ? request_.timeout_ms() : 10 * 60 * 1000;
  const absl::Duration left = start_ + absl::Milliseconds(timeout_ms) - absl::Now();
  if (left <= absl::ZeroDuration()) {
    FinishBeforeFinalState();
    Journal(v1::MIGRATION_PHASE_UNSPECIFIED, false).IgnoreError();
    return Fail(v1::MIGRATION_FAILED, absl::StrFormat("timeout_ms (%d ms) expired before the transfer", timeout_ms));
  }
  {
    v1::MigrateOutRequest out;
    out.set_migration_id(id_);
    *out.mutable_request() = request_;
    out.mutable_request()->set_timeout_ms(
        static_cast<uint32_t>(std::max<int64_t>(1, absl::ToInt64Milliseconds(left))));
    out.set_data_endpoint(prepared_.data_endpoint());
    out.set_token(prepared_.token());
    out.set_tls_dir(service_.options_.tls_dir);
    grpc::ClientContext context;
    context.set_deadline(absl::ToChronoTime(absl::Now() + left + service_.options_.worker_call_timeout));
    std::unique_ptr<grpc::ClientReader<v1::MigrateOutUpdate>> reader = active_->worker->stub->MigrateOut(&context, out);
    v1::MigrateOutUpdate update;
    bool got_done = false;
    while (reader->Read(&update)) {
      if (update.has_done()) {
        done_ = update.done();
        got_done = true;
      } else {
        Forward(update.progress());
        // The VM is paused and the last pages go out: journal the commit intent now, while they
        // and the final state travel and the destination verifies them, so that Finish(commit)
        // can follow the verdict at once. Exactly once still holds (SPEC §4.1): the destination
        // commits only a verified copy, and a copy that is not committed is resumed here only
        // after the destination confirmed the discard or the intent was cleared (AfterFinalState).
        if (update.progress().phase() == v1::MIGRATION_STOP_AND_COPY && !Cancelled()) {
          JournalCommitIntent(v1::MIGRATION_STOP_AND_COPY);
        }
      }
    }
    grpc::Status rpc = reader->Finish();
    if (!got_done) {
      // The worker's verdict was lost: it may have sent the final state. Treat it as sent, and
      // stop the engine if it still runs (ConfirmMigrateOut waits for it to end).
      done_.set_code(rpc.ok() ? static_cast<int>(absl::StatusCode::kUnknown) : rpc.error_code());
      done_.set_message(absl::StrCat("MigrateOut ended without a result: ", rpc.error_message()));
      done_.set_final_state_sent(true);
      std::unique_ptr<grpc::ClientContext> call = WithDeadline(service_.options_.worker_call_timeout);
      v1::VmInfo ignored;
      active_->worker->stub->CancelMigrateOut(call.get(), v1::CancelMigrateOutRequest(), &ignored);
    }
  }
  if (done_.code() != 0 && !done_.final_state_sent()) {
    // Exactly once: the final state never left the source worker, so the destination cannot
    // run the VM (it commits only a verified transfer: final state + digest). A commit intent
    // journalled at stop-and-copy changes nothing: a restarted vexd's Finish(commit) would be
    // answered FAILED.
    FinishBeforeFinalState();
    if (done_.paused_by_source() && !done_.resumed_by_source()) {
      // The engine paused the VM (stop-and-copy) and could not resume it: resume it here.
      if (absl::Status s = Confirm(/*committed=*/false); !s.ok()) {
        Journal(v1::MIGRATION_PHASE_UNSPECIFIED, false).IgnoreError();
        return Fail(v1::MIGRATION_FAILED,
                    absl::StrCat(done_.message(), "; the final state was never sent, but resuming here failed: ",
                                 s.message()));
      }
    }
    Journal(v1::MIGRATION_PHASE_UNSPECIFIED, false).IgnoreError();
    return Fail(Cancelled() ? v1::MIGRATION_CANCELLED : v1::MIGRATION_FAILED, done_.message());
  }
  return AfterFinalState(done_);
}

void MigrationServiceImpl::Run::TestingDelay(const char* step, absl::Duration delay) {
  if (delay <= absl::ZeroDuration()) return;
  // Fault injection only (--testing_delay_before_*_ms, off by default): a window in which a test
  // kills a process. The line is what the test waits for.
  Log("testing: migration %s of VM %s: waiting %d ms before %s", id_, vm_, absl::ToInt64Milliseconds(delay), step);
  absl::SleepFor(delay);
}

void MigrationServiceImpl::Run::FinishBeforeFinalState() {
  // Best effort, one short call: the destination frees its incoming worker now rather than when
  // its own stream breaks. Its failure (e.g. the link is cut) changes nothing: before the final
  // state was sent the source may resume the VM without the destination's answer, because the
  // destination can never commit without the final state and the digest (the exactly-once rule,
  // proto/vexstate/v1/migration.proto; SPEC §4.1).
  Finish(false, std::min(service_.options_.peer_call_timeout, absl::Seconds(5))).IgnoreError();
}

v1::MigrationResult MigrationServiceImpl::Run::AfterFinalState(const v1::MigrateOutDone& done) {
  const std::string& destination = request_.destination();
  bool commit = done.code() == 0;
  if (commit) {
    absl::MutexLock lock(&service_.mu_);
    if (active_->cancelled) {
      commit = false;
    } else {
      active_->commit_sent = true;  // CancelMigration is refused from here on
    }
  }
  // Exactly once: the commit intent is durable before Finish(commit) can reach the destination
  // (normally journalled at stop-and-copy; here if that progress never arrived); a journal that
  // cannot be written turns the commit into a discard.
  if (commit && !JournalCommitIntent(v1::MIGRATION_FINISH)) commit = false;
  Progress(v1::MIGRATION_FINISH);
  testing_delay_.At(v1::MIGRATION_FINISH);
  if (commit) TestingDelay("Finish(commit)", service_.options_.testing_delay_before_finish);
  // A discard needs no settled answer (see below): one short call, so a cut link does not
  // keep the VM paused for settle_timeout.
  absl::StatusOr<v1::FinishResponse> verdict =
      commit ? Settle(true) : Finish(false, std::min(service_.options_.peer_call_timeout, absl::Seconds(5)));
  const absl::Time finished = absl::Now();
  if (!verdict.ok() && !commit) {
    // The destination did not answer Finish(discard) (e.g. the link is cut), but Finish(commit)
    // was never sent: the destination never runs a VM before Finish(commit) (the exactly-once
    // rule, proto/vexstate/v1/migration.proto; SPEC §4.1). Once the journal no longer holds the
    // commit intent nobody will ever send it, so the VM may run here again, even though its
    // final state may have reached the destination. The intent must be gone first: a vexd
    // restarted later would settle it by sending Finish(commit), which a destination holding a
    // verified copy (the link may have broken after it verified) would honour. The record
    // stays, pre-commit, until the VM runs here (a restarted vexd resumes it: SettlePreCommit).
    if (intent_written_) {
      if (absl::Status withdrawn = Journal(v1::MIGRATION_FINISH, /*commit_sent=*/false); !withdrawn.ok()) {
        return Fail(v1::MIGRATION_FAILED,
                    absl::StrCat("outcome unknown: source kept paused (migration ", id_,
                                 "; the destination could not be told to discard: ", verdict.status().message(),
                                 "; the commit intent could not be withdrawn from the journal: ", withdrawn.message(),
                                 "; a restarted vexd settles it with the destination)"));
      }
    }
    Progress(v1::MIGRATION_CONFIRM);
    if (absl::Status s = Confirm(/*committed=*/false); !s.ok()) {
      return Fail(v1::MIGRATION_FAILED,
                  absl::StrCat(done.message(), "; Finish(commit) was never sent, but resuming here failed: ",
                               s.message()));
    }
    Journal(v1::MIGRATION_PHASE_UNSPECIFIED, false).IgnoreError();
    return Fail(Cancelled() ? v1::MIGRATION_CANCELLED : v1::MIGRATION_FAILED,
                absl::StrCat(done.code() != 0 ? done.message() : "the migration was cancelled",
                             " (the destination could not be told to discard: ", verdict.status().message(),
                             "; it never runs the VM without Finish(commit))"));
  }
  if (!verdict.ok()) {
    // After the commit point (Finish(commit) sent): nobody can say whether the destination
    // runs the VM: never risk running it twice.
    return Fail(
        v1::MIGRATION_FAILED,
        absl::StrCat("outcome unknown: source kept paused (migration ", id_, "; the destination did not settle ",
                     commit ? "Finish(commit)" : "Finish(discard)", ": ", verdict.status().message(), ")"));
  }
  Progress(v1::MIGRATION_CONFIRM);
  if (verdict->phase() != v1::MIGRATION_COMPLETED) {
    // The destination confirmed it discarded its copy: the VM may run here again.
    if (absl::Status s = Confirm(/*committed=*/false); !s.ok()) {
      return Fail(v1::MIGRATION_FAILED, absl::StrCat("destination discarded, but resuming here failed: ", s.message()));
    }
    Journal(v1::MIGRATION_PHASE_UNSPECIFIED, false).IgnoreError();
    const bool cancelled = Cancelled();
    return Fail(cancelled ? v1::MIGRATION_CANCELLED : v1::MIGRATION_FAILED,
                done.code() != 0 ? done.message() : "the destination could not commit the VM");
  }
  // COMPLETED: the VM runs on the destination; stop and forget it here.
  TestingDelay("Confirm(committed)", service_.options_.testing_delay_before_confirm);
  Confirm(/*committed=*/true).IgnoreError();
  service_.supervisor_.RemoveVm(vm_).IgnoreError();
  service_.supervisor_.Announce(vm_, v1::VM_STOPPED,
                                absl::StrCat("migrated to ", destination, " (migration ", id_, ")"));
  v1::MigrationResult result;
  result.set_outcome(v1::MIGRATION_COMPLETED);
  result.set_destination(destination);
  result.set_total_ms(absl::ToInt64Milliseconds(finished - start_));
  if (done.pause_unix_ns() != 0) {
    result.set_downtime_ms(absl::ToInt64Milliseconds(finished - absl::FromUnixNanos(done.pause_unix_ns())));
  }
  result.set_bytes_sent(done.bytes_sent());
  result.set_rounds(done.rounds());
  for (const std::string& d : prepared_.degradations()) result.add_degradations(d);
  for (const std::string& d : verdict->degradations()) {
    if (std::find(result.degradations().begin(), result.degradations().end(), d) == result.degradations().end()) {
      result.add_degradations(d);
    }
  }
  result.set_memory_sha256(verdict->memory_sha256());
  v1::MigrationTimings& timings = *result.mutable_timings();
  timings = done.timings();
  timings.set_commit_journaled_unix_ns(absl::ToUnixNanos(intent_journaled_));
  timings.set_destination_resumed_unix_ns(verdict->resumed_unix_ns());
  timings.set_finished_unix_ns(absl::ToUnixNanos(finished));
  return result;
}

// ----------------------------------------------------------------------------- handlers

grpc::Status MigrationServiceImpl::MigrateVm(grpc::ServerContext* context, const v1::MigrateVmRequest* request,
                                             grpc::ServerWriter<v1::MigrationProgress>* writer) {
  return Guarded(auth_, context, Role::kOperator, [&]() -> absl::Status {
    if (request->vm().empty()) return absl::InvalidArgumentError("MigrateVm: vm is empty");
    if (!absl::StartsWith(request->destination(), "tcp:") || request->destination().size() <= 4) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "MigrateVm: destination '%s' must be tcp:HOST:PORT (the destination vexd's --migration_listen)",
          request->destination()));
    }
    if (options_.tls_dir.empty()) {
      return absl::FailedPreconditionError("this vexd has no --migration_tls_dir: it cannot migrate VMs");
    }
    absl::StatusOr<std::shared_ptr<WorkerConnection>> worker = supervisor_.Worker(request->vm());
    if (!worker.ok()) return worker.status();
    absl::StatusOr<std::string> random = migration::NewToken();
    if (!random.ok()) return random.status();
    auto active = std::make_shared<Active>();
    active->worker = *worker;
    active->status.set_vm(request->vm());
    active->status.set_migration_id(absl::BytesToHexString(random->substr(0, 8)));
    active->status.set_phase(v1::MIGRATION_BEGIN);
    {
      absl::MutexLock lock(&mu_);
      if (!active_.emplace(request->vm(), active).second) {
        return absl::AlreadyExistsError(absl::StrFormat("VM %s is already being migrated", request->vm()));
      }
    }
    v1::MigrationResult result = Run(this, *request, active, writer).Go();
    v1::MigrationProgress last;
    {
      absl::MutexLock lock(&mu_);
      last = active->status.last_progress();
      last.set_migration_id(active->status.migration_id());
      last.set_phase(result.outcome());
      *last.mutable_result() = result;
      active->status.set_phase(result.outcome());
      *active->status.mutable_last_progress() = last;
      last_[request->vm()] = active->status;
      active_.erase(request->vm());
    }
    writer->Write(last);
    return absl::OkStatus();
  });
}

grpc::Status MigrationServiceImpl::CancelMigration(grpc::ServerContext* context,
                                                   const v1::CancelMigrationRequest* request,
                                                   v1::MigrationStatus* response) {
  return Guarded(auth_, context, Role::kOperator, [&]() -> absl::Status {
    std::shared_ptr<Active> active;
    bool reach_worker = false;
    {
      absl::MutexLock lock(&mu_);
      auto it = active_.find(request->vm());
      if (it == active_.end()) {
        return absl::NotFoundError(absl::StrFormat("no migration of VM '%s' is in progress", request->vm()));
      }
      active = it->second;
      // Exactly once: after Finish(commit) was sent, only the destination's answer decides.
      if (active->commit_sent) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "migration %s of VM %s is past its commit point (Finish(commit) sent): it can no longer be cancelled",
            active->status.migration_id(), request->vm()));
      }
      active->cancelled = true;
      reach_worker = active->status.phase() >= v1::MIGRATION_PRECOPY;
      *response = active->status;
    }
    if (reach_worker) {
      std::unique_ptr<grpc::ClientContext> call = WithDeadline(options_.worker_call_timeout);
      v1::VmInfo ignored;
      grpc::Status rpc = active->worker->stub->CancelMigrateOut(call.get(), v1::CancelMigrateOutRequest(), &ignored);
      if (!rpc.ok()) return worker::FromGrpcStatus(rpc);
    }
    return absl::OkStatus();
  });
}

grpc::Status MigrationServiceImpl::QueryMigration(grpc::ServerContext* context,
                                                  const v1::QueryMigrationRequest* request,
                                                  v1::MigrationStatus* response) {
  return Guarded(auth_, context, Role::kOperator, [&]() -> absl::Status {
    absl::MutexLock lock(&mu_);
    if (auto it = active_.find(request->vm()); it != active_.end()) {
      *response = it->second->status;
      return absl::OkStatus();
    }
    if (auto it = last_.find(request->vm()); it != last_.end()) {
      *response = it->second;
      return absl::OkStatus();
    }
    return absl::NotFoundError(absl::StrFormat("VM '%s' has not been migrated by this vexd", request->vm()));
  });
}

}  // namespace vexstate::vexd
