#include "server/worker/worker_vm.h"

#include <unistd.h>

#include <map>
#include <optional>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "guests/bundled.h"
#include "server/snapshot_file.h"
#include "server/worker/console_mirror.h"
#include "server/worker/read_file.h"
#include "server/worker/witness_control.h"
#include "vmm/describe.h"

namespace vexstate::worker {

namespace {

constexpr char kWitnessGuest[] = "witness";

// The witness reports that say "the guest took an exception" (witness_abi.h): x86_64 EXC
// (one per vector, #MC included); arm64 SERROR, SYNC and UNEXPECTED.
bool IsExceptionReport(const std::string& kind) {
  return kind == "EXC" || kind == "SERROR" || kind == "SYNC" || kind == "UNEXPECTED";
}

// The same status with `context` in front of its message.
absl::Status WithContext(const absl::Status& status, absl::string_view context) {
  return absl::Status(status.code(), absl::StrCat(context, ": ", status.message()));
}

v1::GuestReportEvent ToProto(const WitnessReport& report) {
  v1::GuestReportEvent out;
  out.set_vcpu(report.vcpu);
  out.set_kind(report.kind);
  out.set_line(report.line);
  for (const auto& [key, value] : report.fields) (*out.mutable_fields())[key] = value;
  return out;
}

}  // namespace

// The VM's only device: the witness console (and its UDP mirror, when the environment asks
// for one: console_mirror.h), plus the hook that turns a vCPU stopping with an error into
// VM_CRASHED.
class WorkerVm::Devices : public ExitHandler {
 public:
  // worker_main checked the environment at start-up: an unusable mirror setting stopped it.
  explicit Devices(WorkerVm* owner) : owner_(owner), mirror_(ConsoleMirrorFromEnvironment().value_or(nullptr)) {}

  void OnPortIo(uint32_t vcpu, uint16_t port, bool is_write, uint8_t* data, uint32_t size) override {
    if (mirror_) mirror_->OnPortIo(port, is_write, data, size);
    owner_->console_.OnPortIo(vcpu, port, is_write, data, size);
  }
  void OnMmio(uint32_t vcpu, uint64_t gpa, bool is_write, uint8_t* data, uint32_t len) override {
    if (mirror_) mirror_->OnMmio(gpa, is_write, data, len);
    owner_->console_.OnMmio(vcpu, gpa, is_write, data, len);
  }
  void OnVcpuStopped(uint32_t vcpu, const absl::Status& reason) override {
    // The console first: a SendGuestCommand waiting for DONE ends with the reason.
    owner_->console_.OnVcpuStopped(vcpu, reason);
    owner_->OnVcpuStopped(vcpu, reason);
  }

 private:
  WorkerVm* const owner_;
  const std::unique_ptr<ConsoleMirror> mirror_;
};

WorkerVm::WorkerVm(v1::VmConfig config, size_t event_capacity)
    : config_(std::move(config)),
      created_unix_ns_(absl::ToUnixNanos(absl::Now())),
      events_(config_.name(), event_capacity),
      console_([this](const WitnessReport& report) { OnGuestReport(report); }),
      devices_(std::make_unique<Devices>(this)) {
  freezer_ = std::thread([this] { FreezeAfterCrash(); });
}

WorkerVm::~WorkerVm() { Stop("worker exiting"); }

ExitHandler* WorkerVm::exit_handler() const { return devices_.get(); }

absl::StatusOr<std::unique_ptr<WorkerVm>> WorkerVm::Create(v1::VmConfig config, size_t event_capacity) {
  if (config.name().empty()) return absl::InvalidArgumentError("VmConfig.name is empty: the VM needs a name");
  if (config.arch() == v1::ARCH_UNSPECIFIED) return absl::InvalidArgumentError("VmConfig.arch is not set");
  if (config.guest().source_case() == v1::GuestImage::SOURCE_NOT_SET) {
    config.mutable_guest()->set_bundled(kWitnessGuest);
  }
  std::string image_file;  // owns a file image until Vm::Create has copied it into guest RAM
  absl::Span<const uint8_t> image;
  if (config.guest().has_bundled()) {
    absl::StatusOr<absl::Span<const uint8_t>> bundled = BundledGuest(config.guest().bundled());
    if (!bundled.ok()) return bundled.status();
    image = *bundled;
  } else {
    absl::StatusOr<std::string> bytes = ReadWholeFile(config.guest().path(), "guest image");
    if (!bytes.ok()) return bytes.status();
    image_file = std::move(*bytes);
    image = absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(image_file.data()), image_file.size());
  }
  std::unique_ptr<WorkerVm> worker(new WorkerVm(std::move(config), event_capacity));
  const std::string context = absl::StrFormat("creating VM \"%s\"", worker->config_.name());
  absl::MutexLock lock(&worker->op_mu_);
  absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Create(worker->config_, image, worker->devices_.get());
  if (!vm.ok()) return WithContext(vm.status(), context);
  if (worker->runs_witness()) {
    // Before the first KVM_RUN: the guest reads the block once it sees the magic.
    absl::Status s = WriteInitialControlBlock((*vm)->memory(), worker->config_.witness(), (*vm)->host().tsc_khz());
    if (!s.ok()) return WithContext(s, context);
  }
  worker->host_ = (*vm)->host();
  worker->vm_ = std::move(*vm);
  worker->SetState(v1::VM_CREATED, "created");
  return worker;
}

absl::StatusOr<std::unique_ptr<WorkerVm>> WorkerVm::Restore(const std::string& path, const std::string& name,
                                                            bool allow_degrade, size_t event_capacity) {
  const std::string context = absl::StrFormat("restoring from %s", path);
  absl::StatusOr<v1::Snapshot> snapshot = ReadSnapshotFile(path);
  if (!snapshot.ok()) return WithContext(snapshot.status(), context);
  if (!name.empty()) snapshot->mutable_config()->set_name(name);
  if (snapshot->config().name().empty()) {
    return absl::InvalidArgumentError(absl::StrCat(context, ": the snapshot names no VM: give the VM a name"));
  }
  std::unique_ptr<WorkerVm> worker(new WorkerVm(snapshot->config(), event_capacity));
  RestorePolicy policy;
  policy.allow_degrade = allow_degrade;
  RestoreReport report;
  absl::MutexLock lock(&worker->op_mu_);
  absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::Restore(*snapshot, policy, worker->devices_.get(), &report);
  if (!vm.ok()) return WithContext(vm.status(), context);
  worker->host_ = (*vm)->host();
  worker->vm_ = std::move(*vm);
  worker->restored_from_ = path;
  worker->degradations_ = std::move(report.degradations);
  std::string reason = absl::StrCat("restored from ", path);
  if (!worker->degradations_.empty()) {
    absl::StrAppend(&reason, "; degraded: ", absl::StrJoin(worker->degradations_, "; "));
  }
  worker->SetState(v1::VM_PAUSED, reason);
  return worker;
}

// ----------------------------------------------------------------------------- state

v1::VmInfo WorkerVm::Info() const {
  v1::VmInfo info;
  info.set_name(config_.name());
  *info.mutable_config() = config_;
  info.set_worker_pid(getpid());
  info.set_restored_from(restored_from_);
  info.set_created_unix_ns(created_unix_ns_);
  if (std::optional<absl::Time> t = console_.first_heartbeat()) info.set_first_heartbeat_unix_ns(absl::ToUnixNanos(*t));
  if (std::optional<absl::Time> t = console_.last_heartbeat()) info.set_last_heartbeat_unix_ns(absl::ToUnixNanos(*t));
  absl::MutexLock lock(&state_mu_);
  info.set_state(state_);
  info.set_error(error_);
  info.set_guest_exception_reports(exception_reports_);
  return info;
}

v1::VmRunState WorkerVm::state() const {
  absl::MutexLock lock(&state_mu_);
  return state_;
}

void WorkerVm::SetState(v1::VmRunState state, const std::string& reason) {
  absl::MutexLock lock(&state_mu_);
  if (state_ == state || state_ == v1::VM_STOPPED) return;
  if (state_ == v1::VM_CRASHED && state != v1::VM_STOPPED) return;
  state_ = state;
  if (state == v1::VM_CRASHED) {
    error_ = reason;
    freeze_requested_ = true;
  }
  // Appended under state_mu_, so watchers see state changes in the order they happened.
  v1::Event event;
  event.mutable_lifecycle()->set_state(state);
  event.mutable_lifecycle()->set_reason(reason);
  events_.Append(std::move(event));
}

absl::Status WorkerVm::CheckUsable(absl::string_view what) const {
  absl::MutexLock lock(&state_mu_);
  if (incoming_ != nullptr && vm_ == nullptr && state_ != v1::VM_STOPPED) {
    return absl::FailedPreconditionError(
        absl::StrFormat("VM \"%s\" is an incoming migration: it runs only after the migration commits: cannot %s",
                        config_.name(), what));
  }
  // Exactly once (SPEC §4.1): the destination may hold this VM's final state.
  if (migration_hold_) {
    return absl::FailedPreconditionError(
        absl::StrFormat("VM \"%s\" was migrated to %s and is held paused until the destination settles it: cannot %s",
                        config_.name(), hold_destination_, what));
  }
  if (state_ == v1::VM_STOPPED || vm_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrFormat("VM \"%s\" is stopped: cannot %s", config_.name(), what));
  }
  if (state_ == v1::VM_CRASHED) {
    return absl::FailedPreconditionError(
        absl::StrFormat("VM \"%s\" crashed (%s): cannot %s", config_.name(), error_, what));
  }
  return absl::OkStatus();
}

absl::Status WorkerVm::CheckVcpu(uint32_t vcpu) const {
  if (vcpu >= config_.vcpu_count()) {
    return absl::NotFoundError(
        absl::StrFormat("vCPU %u does not exist (VM \"%s\" has %u)", vcpu, config_.name(), config_.vcpu_count()));
  }
  return absl::OkStatus();
}

bool WorkerVm::runs_witness() const {
  return config_.guest().has_bundled() && config_.guest().bundled() == kWitnessGuest;
}

// ----------------------------------------------------------------------------- vCPU threads

void WorkerVm::OnGuestReport(const WitnessReport& report) {
  {
    absl::MutexLock lock(&state_mu_);
    if (IsExceptionReport(report.kind)) ++exception_reports_;
    if (report.kind == "DONE") ++done_reports_;
  }
  v1::Event event;
  event.set_time_unix_ns(absl::ToUnixNanos(report.time));
  *event.mutable_guest_report() = ToProto(report);
  events_.Append(std::move(event));
}

void WorkerVm::OnVcpuStopped(uint32_t vcpu, const absl::Status& reason) {
  if (reason.ok()) return;  // stopped by the VMM (Stop), not by the guest
  // The vCPU thread's message already names the vCPU and the exit ("vCPU 0: guest shutdown...").
  SetState(v1::VM_CRASHED, absl::StrFormat("%s (%s)", reason.message(), absl::StatusCodeToString(reason.code())));
}

void WorkerVm::FreezeAfterCrash() {
  while (true) {
    {
      absl::MutexLock lock(&state_mu_);
      auto wake = [this]() ABSL_SHARED_LOCKS_REQUIRED(state_mu_) { return freeze_requested_ || stopping_; };
      state_mu_.Await(absl::Condition(&wake));
      if (stopping_) return;
      freeze_requested_ = false;
    }
    // Not on the vCPU thread that crashed: Pause waits for vCPU threads, and it must not be
    // one of them.
    absl::MutexLock lock(&op_mu_);
    if (vm_ != nullptr) {
      absl::Status s = vm_->Pause();
      if (!s.ok()) {
        absl::MutexLock state_lock(&state_mu_);
        absl::StrAppend(&error_, "; pausing the other vCPUs failed: ", s.message());
      }
    }
  }
}

// ----------------------------------------------------------------------------- lifecycle

absl::StatusOr<v1::VmInfo> WorkerVm::Resume() {
  absl::MutexLock lock(&op_mu_);
  if (absl::Status s = CheckUsable("resume it"); !s.ok()) return s;
  const v1::VmRunState before = state();
  if (before == v1::VM_RUNNING) return Info();
  if (absl::Status s = vm_->Resume(); !s.ok()) return s;
  SetState(v1::VM_RUNNING, before == v1::VM_CREATED ? "started" : "resumed");
  return Info();
}

absl::StatusOr<v1::VmInfo> WorkerVm::Pause() {
  absl::MutexLock lock(&op_mu_);
  if (absl::Status s = CheckUsable("pause it"); !s.ok()) return s;
  if (state() != v1::VM_RUNNING) return Info();
  if (absl::Status s = vm_->Pause(); !s.ok()) {
    // Some vCPUs may have parked: let them run again, so a failed pause changes nothing.
    vm_->Resume().IgnoreError();
    return WithContext(s, absl::StrFormat("pausing VM \"%s\"", config_.name()));
  }
  SetState(v1::VM_PAUSED, "paused");
  return Info();
}

v1::VmInfo WorkerVm::Stop(const std::string& reason) {
  absl::MutexLock stop_lock(&stop_mu_);
  {
    absl::MutexLock lock(&state_mu_);
    stopping_ = true;
  }
  // The freezer may be waiting for op_mu_: join it before taking op_mu_ here.
  if (freezer_.joinable()) freezer_.join();
  {
    absl::MutexLock lock(&op_mu_);
    if (vm_ != nullptr) {
      vm_.reset();  // stops and joins every vCPU thread
      SetState(v1::VM_STOPPED, reason);
    }
  }
  events_.Close();
  return Info();
}

// ----------------------------------------------------------------------------- pausing

absl::Status WorkerVm::WhilePaused(bool pause_around, absl::string_view what, const std::function<absl::Status()>& op) {
  if (absl::Status s = CheckUsable(what); !s.ok()) return s;
  if (state() != v1::VM_RUNNING) return op();  // CREATED or PAUSED: no vCPU is in KVM_RUN
  if (!pause_around) {
    return absl::FailedPreconditionError(
        absl::StrFormat("VM \"%s\" is running: %s needs every vCPU out of KVM_RUN; pause the VM first or set "
                        "pause_around",
                        config_.name(), what));
  }
  if (absl::Status s = vm_->Pause(); !s.ok()) {
    vm_->Resume().IgnoreError();
    return WithContext(s, absl::StrFormat("pausing VM \"%s\" around %s", config_.name(), what));
  }
  absl::Status result = op();
  // A vCPU may have crashed meanwhile: a crashed VM stays frozen.
  if (state() == v1::VM_RUNNING) vm_->Resume().IgnoreError();
  return result;
}

absl::StatusOr<std::vector<v1::VcpuExceptionState>> WorkerVm::ReadExceptionStates() {
  const v1::VmRunState before = state();
  if (before == v1::VM_STOPPED || vm_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrFormat("VM \"%s\" is stopped: nothing to read", config_.name()));
  }
  // A crashed VM is read too (post mortem); it is paused and stays paused.
  if (before == v1::VM_RUNNING || before == v1::VM_CRASHED) {
    if (absl::Status s = vm_->Pause(); !s.ok()) {
      if (before == v1::VM_RUNNING) vm_->Resume().IgnoreError();
      return WithContext(s, absl::StrFormat("pausing VM \"%s\" to read its exception state", config_.name()));
    }
  }
  absl::StatusOr<std::vector<v1::VcpuExceptionState>> states = vm_->CaptureExceptionState();
  if (before == v1::VM_RUNNING && state() == v1::VM_RUNNING) vm_->Resume().IgnoreError();
  return states;
}

// ----------------------------------------------------------------------------- injection

void WorkerVm::RecordInjection(uint32_t vcpu, const std::string& what) {
  v1::Event event;
  event.mutable_injection()->set_vcpu(vcpu);
  event.mutable_injection()->set_what(what);
  events_.Append(std::move(event));
}

absl::StatusOr<v1::InjectResponse> WorkerVm::Inject(uint32_t vcpu, bool pause_around, const std::string& what,
                                                    const std::function<absl::Status()>& inject,
                                                    const std::function<bool()>& changed) {
  if (absl::Status s = CheckVcpu(vcpu); !s.ok()) return s;
  absl::MutexLock lock(&op_mu_);
  v1::InjectResponse response;
  bool injected = false;
  absl::Status status = WhilePaused(pause_around, "an injection", [&]() -> absl::Status {
    if (absl::Status s = inject(); !s.ok()) return s;
    injected = true;
    // Read back before the VM runs again: after resume the guest may take it at once.
    absl::StatusOr<std::vector<v1::VcpuExceptionState>> states = vm_->CaptureExceptionState();
    if (!states.ok()) return WithContext(states.status(), "injected, but reading the state back failed");
    *response.mutable_state() = (*states)[vcpu];
    return absl::OkStatus();
  });
  if (injected && (!changed || changed())) RecordInjection(vcpu, what);
  if (!status.ok()) return status;
  return response;
}

absl::StatusOr<v1::InjectResponse> WorkerVm::InjectException(const v1::InjectExceptionRequest& request) {
  // proto3 has no presence: a value without its flag is a caller's mistake, not a zero.
  if (!request.has_error_code() && request.error_code() != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "error_code 0x%x given without has_error_code: set has_error_code to deliver it", request.error_code()));
  }
  if (!request.has_payload() && request.payload() != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("payload 0x%x given without has_payload: set has_payload to deliver it", request.payload()));
  }
  ExceptionRequest exception;
  exception.vcpu = request.vcpu();
  exception.vector = request.vector();
  if (request.has_error_code()) exception.error_code = request.error_code();
  if (request.has_payload()) exception.payload = request.payload();
  std::string what = absl::StrFormat("exception vector %u", request.vector());
  if (request.has_error_code()) absl::StrAppendFormat(&what, " error code 0x%x", request.error_code());
  if (request.has_payload()) absl::StrAppendFormat(&what, " payload 0x%x", request.payload());
  return Inject(request.vcpu(), request.pause_around(), what,
                [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return vm_->InjectException(exception); });
}

absl::StatusOr<v1::InjectResponse> WorkerVm::InjectNmi(const v1::InjectNmiRequest& request) {
  NmiRequest nmi;
  nmi.vcpu = request.vcpu();
  return Inject(request.vcpu(), request.pause_around(), "NMI",
                [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return vm_->InjectNmi(nmi); });
}

absl::StatusOr<v1::InjectResponse> WorkerVm::InjectMachineCheck(const v1::InjectMachineCheckRequest& request) {
  MachineCheckRequest mc;
  mc.vcpu = request.vcpu();
  mc.bank = request.bank();
  mc.status = request.status();
  mc.addr = request.addr();
  mc.misc = request.misc();
  mc.mcg_status = request.mcg_status();
  const std::string what = absl::StrFormat("machine check bank %u status 0x%016x addr 0x%x misc 0x%x mcg_status 0x%x",
                                           mc.bank, mc.status, mc.addr, mc.misc, mc.mcg_status);
  return Inject(request.vcpu(), request.pause_around(), what,
                [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return vm_->InjectMachineCheck(mc); });
}

absl::StatusOr<v1::InjectResponse> WorkerVm::InjectSError(const v1::InjectSErrorRequest& request) {
  SErrorRequest serror;
  serror.vcpu = request.vcpu();
  switch (request.on_pending()) {
    case v1::SERROR_OVERWRITE_REFUSE:
      serror.on_pending = SErrorOverwrite::kRefuse;
      break;
    case v1::SERROR_OVERWRITE_KEEP_PENDING:
      serror.on_pending = SErrorOverwrite::kKeepPending;
      break;
    case v1::SERROR_OVERWRITE_REPLACE:
      serror.on_pending = SErrorOverwrite::kReplace;
      break;
    default:
      return absl::InvalidArgumentError(
          absl::StrFormat("on_pending %d is not an SErrorOverwritePolicy", request.on_pending()));
  }
  if (!request.has_esr() && request.esr() != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("esr 0x%x given without has_esr: set has_esr to deliver it", request.esr()));
  }
  if (request.has_esr()) serror.esr = request.esr();
  SErrorResult result;
  serror.result = &result;
  std::string what = request.has_esr() ? absl::StrFormat("SError esr 0x%x", request.esr())
                                       : std::string("SError without ESR (KVM picks ISS 0x1000000, IDS)");
  if (request.on_pending() != v1::SERROR_OVERWRITE_REFUSE) {
    absl::StrAppend(&what, " (on_pending ", v1::SErrorOverwritePolicy_Name(request.on_pending()), ")");
  }
  // A PE holds one pending SError: "already pending" and "kept" changed nothing.
  auto changed = [&result] {
    return result.outcome != SErrorOutcome::kAlreadyPending && result.outcome != SErrorOutcome::kKeptPending;
  };
  absl::StatusOr<v1::InjectResponse> response = Inject(
      request.vcpu(), request.pause_around(), what,
      [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return vm_->InjectSError(serror); }, changed);
  if (response.ok() && result.outcome != SErrorOutcome::kPending) response->set_note(result.detail);
  return response;
}

absl::StatusOr<v1::InjectResponse> WorkerVm::InjectExternalAbort(const v1::InjectExternalAbortRequest& request) {
  ExternalAbortRequest abort;
  abort.vcpu = request.vcpu();
  return Inject(request.vcpu(), request.pause_around(), "synchronous external data abort",
                [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS { return vm_->InjectExternalAbort(abort); });
}

// ----------------------------------------------------------------------------- exception state

absl::StatusOr<v1::VmPending> WorkerVm::QueryPending() {
  absl::MutexLock lock(&op_mu_);
  absl::StatusOr<std::vector<v1::VcpuExceptionState>> states = ReadExceptionStates();
  if (!states.ok()) return states.status();
  v1::VmPending pending;
  pending.set_read_unix_ns(absl::ToUnixNanos(absl::Now()));
  pending.set_vm(config_.name());
  pending.set_state(state());
  for (v1::VcpuExceptionState& vcpu : *states) {
    for (std::string& line : DescribeExceptionState(vcpu)) pending.add_summary(std::move(line));
    *pending.add_vcpus() = std::move(vcpu);
  }
  return pending;
}

absl::StatusOr<v1::GetExceptionStateResponse> WorkerVm::GetExceptionState(const v1::GetExceptionStateRequest& request) {
  for (uint32_t vcpu : request.vcpus()) {
    if (absl::Status s = CheckVcpu(vcpu); !s.ok()) return s;
  }
  absl::MutexLock lock(&op_mu_);
  absl::StatusOr<std::vector<v1::VcpuExceptionState>> states = ReadExceptionStates();
  if (!states.ok()) return states.status();
  v1::GetExceptionStateResponse response;
  if (request.vcpus().empty()) {
    for (v1::VcpuExceptionState& vcpu : *states) *response.add_vcpus() = std::move(vcpu);
  } else {
    for (uint32_t vcpu : request.vcpus()) *response.add_vcpus() = (*states)[vcpu];
  }
  return response;
}

absl::StatusOr<v1::SetExceptionStateResponse> WorkerVm::SetExceptionState(const v1::SetExceptionStateRequest& request) {
  if (request.vcpus().empty()) return absl::InvalidArgumentError("SetExceptionState: no vCPU state given");
  std::set<uint32_t> seen;
  for (const v1::VcpuExceptionState& vcpu : request.vcpus()) {
    if (absl::Status s = CheckVcpu(vcpu.vcpu_index()); !s.ok()) return s;
    if (!seen.insert(vcpu.vcpu_index()).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("SetExceptionState: vCPU %u is given more than once", vcpu.vcpu_index()));
    }
    const bool matches = (vcpu.has_x86_64() && config_.arch() == v1::ARCH_X86_64) ||
                         (vcpu.has_arm64() && config_.arch() == v1::ARCH_ARM64);
    if (!matches) {
      return absl::InvalidArgumentError(absl::StrFormat("SetExceptionState: vCPU %u's state is %s; VM \"%s\" is %s",
                                                        vcpu.vcpu_index(),
                                                        vcpu.has_x86_64()  ? "x86_64"
                                                        : vcpu.has_arm64() ? "arm64"
                                                                           : "empty (no arch)",
                                                        config_.name(), v1::Arch_Name(config_.arch())));
    }
  }
  absl::MutexLock lock(&op_mu_);
  if (absl::Status s = CheckUsable("set its exception state"); !s.ok()) return s;
  if (state() == v1::VM_RUNNING) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "VM \"%s\" is running: exception state is written only while every vCPU is out of KVM_RUN; pause it first",
        config_.name()));
  }
  absl::StatusOr<std::vector<v1::VcpuExceptionState>> before = vm_->CaptureExceptionState();
  if (!before.ok()) return WithContext(before.status(), "reading the state to restore on failure");
  RestorePolicy policy;
  policy.allow_degrade = request.allow_degrade();
  for (int i = 0; i < request.vcpus_size(); ++i) {
    const v1::VcpuExceptionState& wanted = request.vcpus(i);
    absl::Status s = vm_->SetExceptionState(wanted, policy);
    if (s.ok()) continue;
    // All or nothing: put back what was already written. (An arm64 SError cannot be taken
    // back once set: SPEC §3. The message says so if that is what failed.)
    std::string rollback;
    for (int j = 0; j < i; ++j) {
      const uint32_t index = request.vcpus(j).vcpu_index();
      absl::Status undo = vm_->SetExceptionState((*before)[index]);
      if (!undo.ok()) absl::StrAppendFormat(&rollback, "; restoring vCPU %u failed too: %s", index, undo.message());
    }
    return absl::Status(s.code(), absl::StrFormat("vCPU %u: %s%s", wanted.vcpu_index(), s.message(), rollback));
  }
  absl::StatusOr<std::vector<v1::VcpuExceptionState>> after = vm_->CaptureExceptionState();
  if (!after.ok()) return WithContext(after.status(), "written, but reading the state back failed");
  v1::SetExceptionStateResponse response;
  for (const v1::VcpuExceptionState& wanted : request.vcpus()) {
    const uint32_t index = wanted.vcpu_index();
    *response.add_vcpus() = (*after)[index];
    RecordInjection(index,
                    absl::StrCat("exception state written: ", absl::StrJoin(DescribeExceptionState(wanted), "; ")));
  }
  return response;
}

// ----------------------------------------------------------------------------- snapshots

absl::StatusOr<v1::SaveSnapshotResponse> WorkerVm::SaveSnapshot(const v1::SaveSnapshotRequest& request) {
  if (request.path().empty()) return absl::InvalidArgumentError("SaveSnapshot: path is empty");
  if (request.path()[0] != '/') {
    return absl::InvalidArgumentError(absl::StrFormat(
        "SaveSnapshot: path \"%s\" is not absolute (the worker's working directory is not the caller's)",
        request.path()));
  }
  absl::StatusOr<v1::Snapshot> snapshot = absl::FailedPreconditionError("not captured");
  {
    absl::MutexLock lock(&op_mu_);
    absl::Status s = WhilePaused(request.pause_around(), "a snapshot", [&]() ABSL_NO_THREAD_SAFETY_ANALYSIS {
      snapshot = vm_->Capture();
      return snapshot.status();
    });
    if (!s.ok()) return s;
  }
  // The file is written with the VM running again (pause_around) and other requests served:
  // the capture is the pause point, the rest is I/O.
  absl::StatusOr<SnapshotFileInfo> info = WriteSnapshotFile(*snapshot, request.path());
  if (!info.ok()) return info.status();
  v1::SaveSnapshotResponse response;
  response.set_path(request.path());
  response.set_bytes(info->file_bytes);
  response.set_memory_bytes_stored(info->memory_bytes_stored);
  response.set_sha256(info->sha256_hex);
  return response;
}

// ----------------------------------------------------------------------------- guest commands

absl::StatusOr<v1::GuestCommandResponse> WorkerVm::SendGuestCommand(const v1::GuestCommandRequest& request) {
  if (!runs_witness()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("VM \"%s\" runs guest image %s, not the bundled witness: it has no control block",
                        config_.name(), config_.guest().path()));
  }
  if (request.command() == v1::GUEST_COMMAND_APPLY_SETTINGS) {
    absl::MutexLock lock(&op_mu_);
    if (absl::Status s = CheckUsable("apply witness settings"); !s.ok()) return s;
    if (absl::Status s = WriteSettings(vm_->memory(), request.settings()); !s.ok()) return s;
    return v1::GuestCommandResponse();
  }
  absl::StatusOr<uint64_t> number = WitnessCommandNumber(request.command(), config_.arch());
  if (!number.ok()) return number.status();
  const std::string name = v1::GuestCommand_Name(request.command());
  const std::map<std::string, uint64_t> done_match = {{"cmd", *number}};
  size_t first_report = 0;
  size_t done_before = 0;
  {
    absl::MutexLock lock(&op_mu_);
    if (absl::Status s = CheckUsable(absl::StrCat("send guest command ", name)); !s.ok()) return s;
    const v1::VmRunState now = state();
    if (request.wait_ms() > 0 && now != v1::VM_RUNNING) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "VM \"%s\" is %s: the guest runs commands only while the VM runs; resume it first, or send with "
          "wait_ms=0 to leave the command for when it runs",
          config_.name(), v1::VmRunState_Name(now)));
    }
    {
      absl::MutexLock state_lock(&state_mu_);
      if (done_reports_ < commands_issued_) {
        return absl::FailedPreconditionError(
            absl::StrFormat("VM \"%s\": an earlier guest command has not reported VEX DONE yet; a new one would "
                            "replace it before the guest read it",
                            config_.name()));
      }
    }
    first_report = console_.Reports().size();
    done_before = console_.Find("DONE", std::nullopt, done_match).size();
    absl::StatusOr<uint64_t> seq = IssueCommand(vm_->memory(), *number, request.arg());
    if (!seq.ok()) return seq.status();
    ++commands_issued_;
  }
  if (request.wait_ms() == 0) return v1::GuestCommandResponse();
  // Waited for without op_mu_: the guest needs no help from us, and other requests go on.
  absl::StatusOr<std::vector<WitnessReport>> done =
      console_.WaitFor("DONE", std::nullopt, done_match, done_before + 1, absl::Milliseconds(request.wait_ms()));
  if (!done.ok()) return WithContext(done.status(), absl::StrFormat("guest command %s", name));
  // Every report from the command's start up to and including its DONE.
  const std::vector<WitnessReport> all = console_.Reports();
  v1::GuestCommandResponse response;
  size_t dones = 0;
  for (size_t i = 0; i < all.size(); ++i) {
    const bool is_done = all[i].kind == "DONE" && all[i].Get("cmd") == *number;
    if (i >= first_report) *response.add_reports() = ToProto(all[i]);
    if (is_done && ++dones == done_before + 1) break;
  }
  return response;
}

}  // namespace vexstate::worker
