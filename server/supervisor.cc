#include "server/supervisor.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <utility>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpcpp/client_context.h"
#include "server/atomic_file.h"
#include "server/logging.h"
#include "server/process.h"
#include "server/worker/grpc_status.h"
#include "server/worker_launcher.h"

namespace vexstate::vexd {
namespace {

// How long StopVm waits after the Shutdown RPC, and then after SIGTERM, before escalating.
constexpr absl::Duration kShutdownGrace = absl::Seconds(10);
constexpr absl::Duration kTermGrace = absl::Seconds(5);

std::unique_ptr<grpc::ClientContext> WithDeadline(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

// An incoming VM whose worker was never handed Finish(commit): it never ran here.
bool UncommittedIncoming(const v1::VmRecord& record) {
  return record.has_migration() && !record.migration().outgoing() &&
         record.migration().phase() != v1::MIGRATION_COMPLETED && !record.migration().commit_sent();
}

}  // namespace

absl::string_view RunStateName(v1::VmRunState state) {
  switch (state) {
    case v1::VM_CREATED:
      return "CREATED";
    case v1::VM_RUNNING:
      return "RUNNING";
    case v1::VM_PAUSED:
      return "PAUSED";
    case v1::VM_STOPPED:
      return "STOPPED";
    case v1::VM_CRASHED:
      return "CRASHED";
    default:
      return "UNSPECIFIED";
  }
}

absl::Status ValidateVmName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("the VM name is empty");
  if (name.size() > kMaxVmNameLength) {
    return absl::InvalidArgumentError(
        absl::StrFormat("VM name '%s' has %d characters; at most %d", name, name.size(), kMaxVmNameLength));
  }
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) {
      return absl::InvalidArgumentError(
          absl::StrFormat("VM name '%s' has the character '%c': only a-z, 0-9, '-' and '_' are allowed", name, c));
    }
  }
  return absl::OkStatus();
}

Supervisor::Supervisor(const StateDir* dir, EventHub* hub, Options options)
    : dir_(dir), hub_(hub), options_(std::move(options)), journal_(dir->vms_dir()), outcomes_(dir->migrations_dir()) {}

Supervisor::~Supervisor() { Shutdown(); }

absl::StatusOr<std::unique_ptr<Supervisor>> Supervisor::Start(const StateDir* dir, EventHub* hub, Options options) {
  std::unique_ptr<Supervisor> supervisor(new Supervisor(dir, hub, std::move(options)));
  absl::StatusOr<Journal::Loaded> loaded = supervisor->journal_.LoadAll();
  if (!loaded.ok()) return loaded.status();
  for (const std::string& problem : loaded->problems) Log("journal: %s", problem);

  for (v1::VmRecord& record : loaded->records) supervisor->Recover(std::move(record));
  return supervisor;
}

void Supervisor::Recover(v1::VmRecord record) {
  if (UncommittedIncoming(record)) {
    DiscardAtStart(record);
    return;
  }
  const std::string name = record.name();
  const int pid = record.worker_pid();
  const v1::VmRunState last_state = record.last_state();
  auto vm = std::make_shared<Vm>();
  {
    absl::MutexLock lock(&vm->mu);
    vm->hidden = record.has_migration() && !record.migration().outgoing();
    vm->record = std::move(record);
    vm->phase = Phase::kGone;
  }
  {
    absl::MutexLock lock(&mu_);
    vms_[name] = vm;
  }
  const absl::Status reattached = pid != 0 ? Reattach(vm) : absl::NotFoundError("no worker was recorded");
  if (reattached.ok()) {
    Log("VM %s: re-attached to worker pid %d", name, pid);
    return;
  }
  absl::MutexLock lock(&vm->mu);
  if (vm->record.has_migration() && vm->record.migration().commit_sent()) {
    // Exactly once: the destination may run this VM. Its worker is gone, so nothing runs here
    // either way; MigrationServiceImpl settles the record with the destination.
    Log("VM %s: migration %s (peer %s) was journalled as committing and the worker is gone: to be settled with "
        "the destination",
        name, vm->record.migration().migration_id(), vm->record.migration().peer());
  }
  if (last_state == v1::VM_STOPPED || last_state == v1::VM_CRASHED) {
    // Already final: it stays so, now without a worker.
    if (pid != 0) {
      vm->record.set_worker_pid(0);
      vm->record.set_worker_start_time(0);
      WriteRecord(*vm);
    }
    Log("VM %s: %s (no worker)", name, RunStateName(last_state));
    return;
  }
  // The worker is gone (or was ours but deaf, and killed): the VM crashed while vexd was away.
  const std::string reason(reattached.message());
  vm->record.set_last_state(v1::VM_CRASHED);
  vm->record.set_error(reason);
  vm->record.set_worker_pid(0);
  vm->record.set_worker_start_time(0);
  WriteRecord(*vm);
  Log("VM %s: CRASHED: %s", name, reason);
  PublishLifecycle(name, v1::VM_CRASHED, reason);
}

void Supervisor::DiscardAtStart(const v1::VmRecord& record) {
  const std::string& name = record.name();
  const std::string& id = record.migration().migration_id();
  // Exactly once: Finish(commit) was never handed to this worker, so the VM never ran here;
  // killed now, it never will. The outcome is written before the record goes, so a source asking
  // later is told FAILED rather than "unknown".
  std::string worker = "no worker was running";
  if (record.worker_pid() != 0) {
    if (absl::StatusOr<kvm::ScopedFd> pidfd = OpenRecordedWorker(record); pidfd.ok()) {
      SignalPidFd(pidfd->get(), SIGKILL).IgnoreError();
      WaitPidFdExit(pidfd->get(), kTermGrace);
      worker = absl::StrFormat("worker pid %d killed", record.worker_pid());
    }
  }
  v1::FinishResponse failed;
  failed.set_phase(v1::MIGRATION_FAILED);
  if (absl::Status s = outcomes_.Record(id, failed); !s.ok()) Log("VM %s: %s", name, s.message());
  if (absl::Status s = journal_.Remove(name); !s.ok()) Log("VM %s: %s", name, s.message());
  RemoveVmFiles(name);
  Log("VM %s: incoming migration %s was never committed: discarded at start-up (%s); it never runs here, and "
      "Finish/QueryIncoming answer FAILED",
      name, id, worker);
}

absl::StatusOr<kvm::ScopedFd> Supervisor::OpenRecordedWorker(const v1::VmRecord& record) {
  const int pid = record.worker_pid();
  const std::string gone =
      absl::StrFormat("worker pid %d is gone: it exited while no vexd was watching (exit status unknown); see %s", pid,
                      dir_->VmFile(record.name(), "log"));
  // The pidfd first: from then on it names this process, whatever happens to the pid.
  absl::StatusOr<kvm::ScopedFd> pidfd = OpenPidFd(pid);
  if (!pidfd.ok()) return absl::NotFoundError(gone);
  absl::StatusOr<ProcStat> stat = ReadProcStat(pid);
  if (!stat.ok() || stat->state == 'Z' || WaitPidFdExit(pidfd->get(), absl::ZeroDuration())) {
    return absl::NotFoundError(gone);
  }
  if (stat->start_time != record.worker_start_time()) {
    return absl::NotFoundError(
        absl::StrFormat("%s (pid %d now belongs to another process: start time %d, the worker's was %d)", gone, pid,
                        stat->start_time, record.worker_start_time()));
  }
  return pidfd;
}

void Supervisor::Shutdown() {
  std::vector<std::shared_ptr<Vm>> vms;
  {
    absl::MutexLock lock(&mu_);
    if (shut_down_) return;
    shut_down_ = true;
    for (auto& [name, vm] : vms_) vms.push_back(vm);
  }
  for (const std::shared_ptr<Vm>& vm : vms) {
    std::unique_ptr<EventPump> pump;
    {
      absl::MutexLock lock(&vm->mu);
      if (vm->watch_id != 0) watcher_.Unwatch(vm->watch_id);
      vm->watch_id = 0;
      pump = std::move(vm->pump);
    }
    if (pump != nullptr) pump->Stop();
  }
}

// ----------------------------------------------------------------------------- creating

absl::StatusOr<std::shared_ptr<Supervisor::Vm>> Supervisor::Reserve(const std::string& name) {
  absl::Status valid = ValidateVmName(name);
  if (!valid.ok()) return valid;
  absl::MutexLock lock(&mu_);
  if (shut_down_) return absl::UnavailableError("vexd is shutting down");
  if (vms_.count(name) != 0) return absl::AlreadyExistsError(absl::StrFormat("a VM named '%s' already exists", name));
  auto vm = std::make_shared<Vm>();
  vms_[name] = vm;
  return vm;
}

absl::StatusOr<v1::VmInfo> Supervisor::CreateVm(const v1::VmConfig& requested, bool start) {
  const v1::VmConfig config = ClampConfig(requested);
  absl::StatusOr<std::shared_ptr<Vm>> vm = Reserve(config.name());
  if (!vm.ok()) return vm.status();
  const std::string config_path = dir_->VmFile(config.name(), "config");
  std::string bytes;
  if (!config.SerializeToString(&bytes)) return absl::InternalError("cannot serialise the VmConfig");
  absl::Status written = WriteFileAtomically(config_path, bytes);
  if (!written.ok()) {
    absl::MutexLock lock(&mu_);
    vms_.erase(config.name());
    return absl::Status(written.code(), absl::StrCat("writing the VM's config file: ", written.message()));
  }
  v1::VmRecord base;
  base.set_name(config.name());
  *base.mutable_config() = config;
  std::vector<std::string> args = {"--config_file", config_path};
  if (start) args.push_back("--start");
  return Launch(*vm, std::move(base), std::move(args));
}

absl::StatusOr<v1::VmInfo> Supervisor::RestoreVm(const std::string& name, const std::string& path, bool allow_degrade,
                                                 bool resume) {
  absl::StatusOr<std::shared_ptr<Vm>> vm = Reserve(name);
  if (!vm.ok()) return vm.status();
  v1::VmRecord base;
  base.set_name(name);
  base.set_restored_from(path);
  std::vector<std::string> args = {"--restore_file", path};
  if (allow_degrade) args.push_back("--allow_degrade");
  if (resume) args.push_back("--resume");
  return Launch(*vm, std::move(base), std::move(args));
}

absl::StatusOr<v1::VmInfo> Supervisor::Launch(const std::shared_ptr<Vm>& vm, v1::VmRecord base,
                                              std::vector<std::string> mode_args) {
  const std::string name = base.name();
  // Until the VM is live, any failure leaves nothing behind: no entry, no files.
  absl::Cleanup forget = [this, &name] {
    {
      absl::MutexLock lock(&mu_);
      vms_.erase(name);
    }
    RemoveVmFiles(name);
  };
  WorkerLaunch launch;
  launch.binary = options_.worker_binary;
  launch.name = name;
  launch.socket_path = dir_->VmFile(name, "sock");
  launch.log_path = dir_->VmFile(name, "log");
  launch.mode_args = std::move(mode_args);
  launch.ready_timeout = options_.ready_timeout;
  absl::StatusOr<LaunchedWorker> launched = LaunchWorker(launch);
  if (!launched.ok()) return launched.status();
  Log("VM %s: worker pid %d ready on %s", name, launched->pid, launch.socket_path);

  auto worker = std::make_shared<WorkerConnection>(launch.socket_path);
  absl::StatusOr<v1::WorkerStatus> status = GetStatus(*worker);
  if (!status.ok()) {
    SignalPidFd(launched->pidfd.get(), SIGKILL).IgnoreError();
    WaitPidFdExit(launched->pidfd.get(), kTermGrace);
    ReapAndDescribeExit(launched->pidfd.get(), /*is_child=*/true);
    return absl::UnavailableError(absl::StrFormat(
        "worker of VM %s said it was ready but GetStatus failed (%s); killed it", name, status.status().message()));
  }
  base.set_worker_pid(launched->pid);
  base.set_worker_socket(launch.socket_path);
  base.set_worker_start_time(launched->start_time);
  base.set_created_unix_ns(absl::ToUnixNanos(absl::Now()));
  if (status->vm().has_config()) *base.mutable_config() = status->vm().config();
  {
    absl::MutexLock lock(&vm->mu);
    vm->record = std::move(base);
  }
  absl::Status active = Activate(vm, worker, std::move(launched->pidfd), /*is_child=*/true, *status);
  if (!active.ok()) return active;
  std::move(forget).Cancel();
  absl::MutexLock lock(&vm->mu);
  return Complete(vm->record, status->vm());
}

absl::Status Supervisor::Activate(const std::shared_ptr<Vm>& vm, std::shared_ptr<WorkerConnection> worker,
                                  kvm::ScopedFd pidfd, bool is_child, const v1::WorkerStatus& status) {
  absl::MutexLock lock(&vm->mu);
  vm->record.set_last_state(status.vm().state());
  vm->record.set_error(status.vm().error());
  absl::Status written = journal_.Write(vm->record);
  if (!written.ok()) {
    // Without a record a restarted vexd would not know the worker: do not keep it.
    SignalPidFd(pidfd.get(), SIGKILL).IgnoreError();
    WaitPidFdExit(pidfd.get(), kTermGrace);
    ReapAndDescribeExit(pidfd.get(), is_child);
    return written;
  }
  vm->phase = Phase::kLive;
  vm->worker = worker;
  vm->is_child = is_child;
  vm->pidfd = std::move(pidfd);
  const std::string name = vm->record.name();
  std::weak_ptr<Vm> weak = vm;
  vm->pump = std::make_unique<EventPump>(name, worker, [this, weak](v1::Event event) {
    if (std::shared_ptr<Vm> vm = weak.lock(); vm != nullptr && event.has_lifecycle()) {
      OnLifecycleEvent(vm, event.lifecycle());
    }
    hub_->Publish(std::move(event));
  });
  vm->watch_id = watcher_.Watch(vm->pidfd.get(), [this, weak] {
    if (std::shared_ptr<Vm> vm = weak.lock(); vm != nullptr) OnWorkerExit(vm);
  });
  return absl::OkStatus();
}

absl::Status Supervisor::Reattach(const std::shared_ptr<Vm>& vm) {
  v1::VmRecord record;
  {
    absl::MutexLock lock(&vm->mu);
    record = vm->record;
  }
  const int pid = record.worker_pid();
  absl::StatusOr<kvm::ScopedFd> pidfd = OpenRecordedWorker(record);
  if (!pidfd.ok()) return pidfd.status();
  auto worker = std::make_shared<WorkerConnection>(record.worker_socket());
  absl::StatusOr<v1::WorkerStatus> status = GetStatus(*worker);
  if (!status.ok()) {
    // Our worker (same pid and start time) but deaf: nobody could ever drive it again.
    SignalPidFd(pidfd->get(), SIGKILL).IgnoreError();
    return absl::UnavailableError(
        absl::StrFormat("worker pid %d was alive but did not answer GetStatus on %s (%s); vexd killed it", pid,
                        record.worker_socket(), status.status().message()));
  }
  return Activate(vm, worker, std::move(*pidfd), /*is_child=*/false, *status);
}

absl::StatusOr<v1::WorkerStatus> Supervisor::GetStatus(WorkerConnection& worker) {
  std::unique_ptr<grpc::ClientContext> context = WithDeadline(options_.worker_call_timeout);
  v1::WorkerStatus status;
  grpc::Status rpc = worker.stub->GetStatus(context.get(), v1::WorkerStatusRequest(), &status);
  if (!rpc.ok()) return worker::FromGrpcStatus(rpc);
  return status;
}

// ----------------------------------------------------------------------------- state

void Supervisor::OnWorkerExit(const std::shared_ptr<Vm>& vm) {
  std::unique_ptr<EventPump> pump;
  std::string name;
  v1::VmRunState state;
  std::string reason;
  bool changed = false;
  bool discard = false;
  {
    absl::MutexLock lock(&vm->mu);
    if (vm->phase != Phase::kLive && vm->phase != Phase::kStopping) return;
    // An incoming worker died by itself before it was handed Finish(commit): its VM never ran.
    // (A worker vexd is stopping is the stopper's to forget.)
    discard = vm->phase == Phase::kLive && vm->hidden && UncommittedIncoming(vm->record);
    name = vm->record.name();
    const int pid = vm->record.worker_pid();
    const std::string how = ReapAndDescribeExit(vm->pidfd.get(), vm->is_child);
    // A worker that was asked to stop, or that reported STOPPED itself before exiting, is
    // STOPPED; every other exit is a crash.
    const bool stopped = vm->phase == Phase::kStopping || vm->record.last_state() == v1::VM_STOPPED;
    state = stopped ? v1::VM_STOPPED : v1::VM_CRASHED;
    reason = stopped ? absl::StrFormat("worker pid %d %s", pid, how)
                     : absl::StrFormat("worker pid %d %s; see %s", pid, how, dir_->VmFile(name, "log"));
    changed = vm->record.last_state() != state;
    vm->record.set_last_state(state);
    vm->record.set_error(stopped ? "" : reason);
    vm->record.set_worker_pid(0);
    vm->record.set_worker_start_time(0);
    WriteRecord(*vm);
    vm->phase = Phase::kGone;
    vm->worker.reset();
    if (vm->watch_id != 0) watcher_.Unwatch(vm->watch_id);
    vm->watch_id = 0;
    vm->pidfd.Reset();
    pump = std::move(vm->pump);
  }
  Log("VM %s: %s: %s", name, RunStateName(state), reason);
  if (changed && !discard) PublishLifecycle(name, state, reason);
  // Outside the VM's lock: the pump's sink takes it.
  if (pump != nullptr) pump->Stop();
  if (discard) {
    absl::Status discarded = DiscardIncoming(name);
    if (!discarded.ok()) Log("VM %s: discarding the incoming VM: %s", name, discarded.message());
  }
}

void Supervisor::OnLifecycleEvent(const std::shared_ptr<Vm>& vm, const v1::LifecycleEvent& event) {
  // STOPPED and CRASHED are final in a worker: such an event is the truth, and the worker may
  // be gone a moment later.
  if (event.state() == v1::VM_STOPPED || event.state() == v1::VM_CRASHED) {
    NoteState(*vm, event.state(), event.state() == v1::VM_CRASHED ? event.reason() : "");
    return;
  }
  // Other events may be replayed history (after a re-attach or a re-subscription): ask for
  // the current state instead of writing an old one into the journal.
  std::shared_ptr<WorkerConnection> worker;
  {
    absl::MutexLock lock(&vm->mu);
    worker = vm->worker;
  }
  if (worker == nullptr) return;
  absl::StatusOr<v1::WorkerStatus> status = GetStatus(*worker);
  if (status.ok()) NoteState(*vm, status->vm().state(), status->vm().error());
}

void Supervisor::NoteState(Vm& vm, v1::VmRunState state, const std::string& error) {
  if (state == v1::VM_RUN_STATE_UNSPECIFIED) return;
  absl::MutexLock lock(&vm.mu);
  if (vm.phase != Phase::kLive && vm.phase != Phase::kStopping) return;
  if (vm.record.last_state() == state && vm.record.error() == error) return;
  vm.record.set_last_state(state);
  vm.record.set_error(error);
  WriteRecord(vm);
}

void Supervisor::WriteRecord(Vm& vm) {
  absl::Status written = journal_.Write(vm.record);
  // The VM itself is unaffected; a restarted vexd will see the previous record.
  if (!written.ok()) Log("VM %s: %s", vm.record.name(), written.message());
}

void Supervisor::PublishLifecycle(const std::string& name, v1::VmRunState state, const std::string& reason) {
  v1::Event event;
  event.set_vm(name);
  event.mutable_lifecycle()->set_state(state);
  event.mutable_lifecycle()->set_reason(reason);
  hub_->Publish(std::move(event));
}

v1::VmInfo Supervisor::InfoFromRecord(const v1::VmRecord& record) {
  v1::VmInfo info;
  info.set_name(record.name());
  *info.mutable_config() = record.config();
  info.set_state(record.last_state());
  info.set_error(record.error().empty() ? record.migration().unsettled() : record.error());
  info.set_worker_pid(record.worker_pid());
  info.set_restored_from(record.restored_from());
  info.set_created_unix_ns(record.created_unix_ns());
  return info;
}

v1::VmInfo Supervisor::Complete(const v1::VmRecord& record, v1::VmInfo info) {
  info.set_name(record.name());
  if (!info.has_config()) *info.mutable_config() = record.config();
  // A migration whose outcome is still unknown says so (why the VM stays paused).
  if (info.error().empty()) info.set_error(record.migration().unsettled());
  info.set_worker_pid(record.worker_pid());
  if (info.restored_from().empty()) info.set_restored_from(record.restored_from());
  info.set_created_unix_ns(record.created_unix_ns());
  return info;
}

// ----------------------------------------------------------------------------- queries

std::shared_ptr<Supervisor::Vm> Supervisor::Find(const std::string& name) {
  absl::MutexLock lock(&mu_);
  auto it = vms_.find(name);
  return it == vms_.end() ? nullptr : it->second;
}

absl::StatusOr<std::shared_ptr<WorkerConnection>> Supervisor::Worker(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("no VM named: the request's vm field is empty");
  std::shared_ptr<Vm> vm = Find(name);
  if (vm == nullptr) return absl::NotFoundError(absl::StrFormat("no VM named '%s'", name));
  absl::MutexLock lock(&vm->mu);
  if (vm->hidden) return absl::NotFoundError(absl::StrFormat("no VM named '%s' (an incoming migration)", name));
  switch (vm->phase) {
    case Phase::kLive:
      return vm->worker;
    case Phase::kStarting:
      return absl::FailedPreconditionError(absl::StrFormat("VM %s is still being created", name));
    case Phase::kStopping:
      return absl::FailedPreconditionError(absl::StrFormat("VM %s is being stopped", name));
    case Phase::kGone:
      break;
  }
  if (vm->record.last_state() == v1::VM_CRASHED) {
    return absl::FailedPreconditionError(absl::StrFormat("VM %s has CRASHED: %s", name, vm->record.error()));
  }
  return absl::FailedPreconditionError(
      absl::StrFormat("VM %s is %s: its worker is gone", name, RunStateName(vm->record.last_state())));
}

v1::VmInfo Supervisor::Observe(const std::string& name, v1::VmInfo info) {
  std::shared_ptr<Vm> vm = Find(name);
  if (vm == nullptr) return info;
  NoteState(*vm, info.state(), info.error());
  absl::MutexLock lock(&vm->mu);
  return Complete(vm->record, std::move(info));
}

absl::Status Supervisor::ExplainWorkerFailure(const std::string& name, const absl::Status& failure) {
  std::shared_ptr<Vm> vm = Find(name);
  if (vm == nullptr) return failure;
  kvm::ScopedFd pidfd;
  {
    absl::MutexLock lock(&vm->mu);
    if (vm->pidfd.valid()) pidfd = kvm::ScopedFd(fcntl(vm->pidfd.get(), F_DUPFD_CLOEXEC, 0));
  }
  // A dying worker's socket closes before its exit is visible on the pidfd (files are closed
  // first in do_exit): give a broken connection a moment to turn into an exit.
  const absl::Duration grace =
      failure.code() == absl::StatusCode::kUnavailable ? absl::Milliseconds(200) : absl::ZeroDuration();
  if (pidfd.valid() && WaitPidFdExit(pidfd.get(), grace)) OnWorkerExit(vm);
  absl::MutexLock lock(&vm->mu);
  if (vm->phase == Phase::kGone && vm->record.last_state() == v1::VM_CRASHED) {
    return absl::UnavailableError(absl::StrFormat("VM %s: its worker died: %s", name, vm->record.error()));
  }
  // The worker's own answer (INVALID_ARGUMENT, NOT_FOUND...) passes unchanged.
  return failure;
}

absl::StatusOr<v1::VmInfo> Supervisor::GetVm(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("no VM named: the request's name field is empty");
  std::shared_ptr<Vm> vm = Find(name);
  if (vm == nullptr) return absl::NotFoundError(absl::StrFormat("no VM named '%s'", name));
  std::shared_ptr<WorkerConnection> worker;
  {
    absl::MutexLock lock(&vm->mu);
    if (vm->hidden) return absl::NotFoundError(absl::StrFormat("no VM named '%s' (an incoming migration)", name));
    if (vm->phase == Phase::kStarting) {
      return absl::UnavailableError(absl::StrFormat("VM %s is still being created", name));
    }
    if (vm->phase == Phase::kGone) return InfoFromRecord(vm->record);
    worker = vm->worker;
  }
  absl::StatusOr<v1::WorkerStatus> status = GetStatus(*worker);
  if (status.ok()) return Observe(name, status->vm());
  absl::Status explained = ExplainWorkerFailure(name, status.status());
  absl::MutexLock lock(&vm->mu);
  if (vm->phase == Phase::kGone) return InfoFromRecord(vm->record);
  return absl::UnavailableError(absl::StrFormat("VM %s: its worker (pid %d) does not answer: %s", name,
                                                vm->record.worker_pid(), explained.message()));
}

std::vector<v1::VmInfo> Supervisor::ListVms() {
  std::vector<std::pair<std::string, std::shared_ptr<Vm>>> vms;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& entry : vms_) vms.push_back(entry);
  }
  std::vector<v1::VmInfo> infos;
  for (const auto& [name, vm] : vms) {
    {
      absl::MutexLock lock(&vm->mu);
      if (vm->phase == Phase::kStarting || vm->hidden) continue;
    }
    absl::StatusOr<v1::VmInfo> info = GetVm(name);
    if (info.ok()) {
      infos.push_back(std::move(*info));
    } else if (info.status().code() != absl::StatusCode::kNotFound) {
      absl::MutexLock lock(&vm->mu);
      infos.push_back(InfoFromRecord(vm->record));
    }
  }
  return infos;
}

std::vector<Supervisor::LiveVm> Supervisor::LiveVms() {
  std::vector<LiveVm> live;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, vm] : vms_) {
    absl::MutexLock vm_lock(&vm->mu);
    if (vm->phase == Phase::kLive) live.push_back({name, vm->record.last_state()});
  }
  return live;
}

// ----------------------------------------------------------------------------- stopping

absl::StatusOr<v1::VmInfo> Supervisor::StopVm(const std::string& name) {
  absl::StatusOr<std::shared_ptr<WorkerConnection>> worker = Worker(name);
  if (!worker.ok()) return worker.status();
  return Stop(Find(name), *worker);
}

absl::StatusOr<v1::VmInfo> Supervisor::Stop(const std::shared_ptr<Vm>& vm,
                                            const std::shared_ptr<WorkerConnection>& worker) {
  kvm::ScopedFd pidfd;
  std::string name;
  {
    absl::MutexLock lock(&vm->mu);
    name = vm->record.name();
    if (vm->phase != Phase::kLive) {  // changed meanwhile (Worker() would take vm->mu again)
      return absl::FailedPreconditionError(absl::StrFormat("VM %s is being stopped or is gone already", name));
    }
    vm->phase = Phase::kStopping;
    // A duplicate: the ExitWatcher may close the VM's own pidfd while we wait on ours.
    pidfd = kvm::ScopedFd(fcntl(vm->pidfd.get(), F_DUPFD_CLOEXEC, 0));
  }
  std::unique_ptr<grpc::ClientContext> context = WithDeadline(options_.worker_call_timeout);
  v1::VmInfo ignored;
  grpc::Status rpc = worker->stub->Shutdown(context.get(), v1::WorkerShutdownRequest(), &ignored);
  if (!rpc.ok()) Log("VM %s: Shutdown RPC failed (%s); signalling the worker", name, rpc.error_message());
  if (pidfd.valid() && !WaitPidFdExit(pidfd.get(), rpc.ok() ? kShutdownGrace : absl::ZeroDuration())) {
    SignalPidFd(pidfd.get(), SIGTERM).IgnoreError();
    if (!WaitPidFdExit(pidfd.get(), kTermGrace)) {
      Log("VM %s: worker ignored SIGTERM; sending SIGKILL", name);
      SignalPidFd(pidfd.get(), SIGKILL).IgnoreError();
      WaitPidFdExit(pidfd.get(), kTermGrace);
    }
  }
  OnWorkerExit(vm);
  absl::MutexLock lock(&vm->mu);
  return InfoFromRecord(vm->record);
}

// ----------------------------------------------------------------------------- migration

v1::VmConfig Supervisor::ClampConfig(v1::VmConfig config) const {
  const uint32_t limit = options_.max_mce_banks;
  if (limit != 0 && (config.mce_banks() == 0 || config.mce_banks() > limit)) config.set_mce_banks(limit);
  return config;
}

absl::StatusOr<std::shared_ptr<WorkerConnection>> Supervisor::ReceiveVm(const v1::VmConfig& config,
                                                                        std::vector<std::string> mode_args,
                                                                        v1::MigrationJournal journal) {
  absl::StatusOr<std::shared_ptr<Vm>> vm = Reserve(config.name());
  if (!vm.ok()) return vm.status();
  {
    absl::MutexLock lock(&(*vm)->mu);
    (*vm)->hidden = true;
  }
  const std::string config_path = dir_->VmFile(config.name(), "config");
  std::string bytes;
  if (!config.SerializeToString(&bytes)) return absl::InternalError("cannot serialise the VmConfig");
  if (absl::Status written = WriteFileAtomically(config_path, bytes); !written.ok()) {
    absl::MutexLock lock(&mu_);
    vms_.erase(config.name());
    return absl::Status(written.code(), absl::StrCat("writing the VM's config file: ", written.message()));
  }
  mode_args.insert(mode_args.begin(), {"--incoming_config_file", config_path});
  v1::VmRecord base;
  base.set_name(config.name());
  *base.mutable_config() = config;
  *base.mutable_migration() = std::move(journal);
  absl::StatusOr<v1::VmInfo> info = Launch(*vm, std::move(base), std::move(mode_args));
  if (!info.ok()) return info.status();
  absl::MutexLock lock(&(*vm)->mu);
  if ((*vm)->worker == nullptr) return absl::UnavailableError("the incoming worker exited at once");
  return (*vm)->worker;
}

absl::StatusOr<std::pair<std::string, std::shared_ptr<WorkerConnection>>> Supervisor::Incoming(
    const std::string& migration_id) {
  absl::MutexLock lock(&mu_);
  for (const auto& [name, vm] : vms_) {
    absl::MutexLock vm_lock(&vm->mu);
    if (!vm->record.has_migration() || vm->record.migration().outgoing() ||
        vm->record.migration().migration_id() != migration_id) {
      continue;
    }
    if (vm->phase != Phase::kLive) {
      return absl::FailedPreconditionError(
          absl::StrFormat("migration %s: VM %s has no worker (%s)", migration_id, name, vm->record.error()));
    }
    return std::make_pair(name, vm->worker);
  }
  return absl::NotFoundError(absl::StrFormat("no incoming migration %s here", migration_id));
}

absl::Status Supervisor::NoteIncomingCommit(const std::string& name) {
  std::shared_ptr<Vm> vm = Find(name);
  if (vm == nullptr) return absl::NotFoundError(absl::StrFormat("no VM named '%s'", name));
  absl::MutexLock lock(&vm->mu);
  if (!vm->record.has_migration() || vm->record.migration().outgoing()) {
    return absl::FailedPreconditionError(absl::StrFormat("VM %s has no incoming migration", name));
  }
  if (vm->record.migration().commit_sent()) return absl::OkStatus();
  // A worker that has exited but is not reaped yet must not be handed the commit: it never
  // gets it, and marking it would turn a certain discard into an unknown outcome.
  if (vm->phase != Phase::kLive || !vm->pidfd.valid() || WaitPidFdExit(vm->pidfd.get(), absl::ZeroDuration())) {
    return absl::FailedPreconditionError(
        absl::StrFormat("VM %s: the incoming worker is gone; the commit was never handed to it", name));
  }
  vm->record.mutable_migration()->set_commit_sent(true);
  absl::Status written = journal_.Write(vm->record);
  if (!written.ok()) vm->record.mutable_migration()->set_commit_sent(false);
  return written;
}

void Supervisor::CommitIncoming(const std::string& name, const v1::FinishResponse& outcome) {
  std::shared_ptr<Vm> vm = Find(name);
  if (vm == nullptr) return;
  absl::MutexLock lock(&vm->mu);
  if (!vm->hidden) return;
  vm->hidden = false;
  vm->record.mutable_migration()->set_phase(v1::MIGRATION_COMPLETED);
  WriteRecord(*vm);
  if (absl::Status s = outcomes_.Record(vm->record.migration().migration_id(), outcome); !s.ok()) {
    Log("VM %s: %s", name, s.message());
  }
}

absl::Status Supervisor::DiscardIncoming(const std::string& name) {
  std::shared_ptr<Vm> vm = Find(name);
  if (vm == nullptr) return absl::OkStatus();
  std::string id;
  {
    absl::MutexLock lock(&vm->mu);
    if (!vm->hidden || !vm->record.has_migration() || vm->record.migration().outgoing()) {
      return absl::FailedPreconditionError(absl::StrFormat("VM %s is not an incoming VM waiting for Finish", name));
    }
    id = vm->record.migration().migration_id();
    v1::FinishResponse failed;
    failed.set_phase(v1::MIGRATION_FAILED);
    // Removing the VM is what keeps it from running; without this file a source asking later
    // hears "unknown" (and keeps its copy paused) instead of FAILED.
    if (absl::Status s = outcomes_.Record(id, failed); !s.ok()) Log("VM %s: %s", name, s.message());
  }
  absl::Status removed = RemoveVm(name);
  Log("VM %s: incoming migration %s discarded: it never runs here (Finish/QueryIncoming answer FAILED)", name, id);
  return removed;
}

absl::Status Supervisor::RemoveVm(const std::string& name) {
  std::shared_ptr<Vm> vm = Find(name);
  if (vm == nullptr) return absl::OkStatus();
  std::shared_ptr<WorkerConnection> worker;
  {
    absl::MutexLock lock(&vm->mu);
    if (vm->phase == Phase::kLive) worker = vm->worker;
  }
  if (worker != nullptr) Stop(vm, worker).status().IgnoreError();
  absl::Status deleted = DeleteVm(name).status();
  // Someone else (a worker's exit) forgot it meanwhile: what was asked is done.
  return deleted.code() == absl::StatusCode::kNotFound ? absl::OkStatus() : deleted;
}

std::vector<std::pair<std::string, v1::MigrationJournal>> Supervisor::OutgoingMigrations() {
  std::vector<std::pair<std::string, v1::MigrationJournal>> outgoing;
  absl::MutexLock lock(&mu_);
  for (const auto& [name, vm] : vms_) {
    absl::MutexLock vm_lock(&vm->mu);
    if (vm->record.has_migration() && vm->record.migration().outgoing()) {
      outgoing.emplace_back(name, vm->record.migration());
    }
  }
  return outgoing;
}

absl::Status Supervisor::JournalMigration(const std::string& name, const v1::MigrationJournal& journal) {
  std::shared_ptr<Vm> vm = Find(name);
  if (vm == nullptr) return absl::NotFoundError(absl::StrFormat("no VM named '%s'", name));
  absl::MutexLock lock(&vm->mu);
  if (journal.migration_id().empty()) {
    vm->record.clear_migration();
  } else {
    *vm->record.mutable_migration() = journal;
  }
  return journal_.Write(vm->record);
}

void Supervisor::Announce(const std::string& name, v1::VmRunState state, const std::string& reason) {
  Log("VM %s: %s", name, reason);
  PublishLifecycle(name, state, reason);
}

absl::StatusOr<v1::VmInfo> Supervisor::DeleteVm(const std::string& name) {
  if (name.empty()) return absl::InvalidArgumentError("no VM named: the request's name field is empty");
  v1::VmInfo info;
  // Outlives both locks: erasing the table's entry may drop the last reference to the VM, and
  // its mutex must not be destroyed while vm_lock still holds it.
  std::shared_ptr<Vm> doomed;
  {
    absl::MutexLock lock(&mu_);
    auto it = vms_.find(name);
    if (it == vms_.end()) return absl::NotFoundError(absl::StrFormat("no VM named '%s'", name));
    doomed = it->second;
    {
      absl::MutexLock vm_lock(&doomed->mu);
      if (doomed->phase != Phase::kGone) {
        return absl::FailedPreconditionError(absl::StrFormat(
            "VM %s still has a worker (%s): StopVm it first", name,
            doomed->phase == Phase::kLive ? RunStateName(doomed->record.last_state()) : "being created or stopped"));
      }
      absl::Status removed = journal_.Remove(name);
      if (!removed.ok()) return removed;
      info = InfoFromRecord(doomed->record);
    }
    vms_.erase(it);
  }
  RemoveVmFiles(name);
  Log("VM %s: deleted", name);
  return info;
}

void Supervisor::RemoveVmFiles(const std::string& name) {
  for (const char* ext : {"config", "sock", "log"}) unlink(dir_->VmFile(name, ext).c_str());
}

}  // namespace vexstate::vexd
