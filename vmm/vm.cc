#include "vmm/vm.h"

#include <sys/utsname.h>

#include <cstring>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace vexstate {

namespace {

// Memory chunks in a snapshot: runs of non-zero pages, at most this long (bounded message
// pieces for streaming and files).
constexpr uint64_t kMaxChunkBytes = 1 << 20;
// Enough for the witness guests (image at 1 MiB, control block, 4 MiB workload base).
constexpr uint64_t kMinMemoryBytes = 8ull << 20;

bool PageIsZero(const uint8_t* page) {
  const uint64_t* words = reinterpret_cast<const uint64_t*>(page);
  for (size_t i = 0; i < GuestMemory::kPageSize / sizeof(uint64_t); ++i) {
    if (words[i] != 0) return false;
  }
  return true;
}

struct OpenedHost {
  kvm::KvmSystem kvm;
  v1::HostCapabilities caps;
};

// /dev/kvm and what it can do: every way of making a VM starts here.
absl::StatusOr<OpenedHost> OpenHost() {
  absl::StatusOr<kvm::KvmSystem> kvm = kvm::KvmSystem::Open();
  if (!kvm.ok()) return kvm.status();
  absl::StatusOr<v1::HostCapabilities> caps = ProbeHost(*kvm);
  if (!caps.ok()) return caps.status();
  return OpenedHost{std::move(*kvm), std::move(*caps)};
}

}  // namespace

absl::Status ValidateVmConfig(const v1::VmConfig& config, const v1::HostCapabilities& host) {
  if (config.arch() != host.arch()) {
    return absl::FailedPreconditionError(absl::StrFormat("VM arch %s cannot run on this %s host",
                                                         v1::Arch_Name(config.arch()), v1::Arch_Name(host.arch())));
  }
  if (config.vcpu_count() == 0 || config.vcpu_count() > host.max_vcpus() || config.vcpu_count() > 8) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "vcpu_count %u out of range [1, %u] (the witness guests support at most 8)", config.vcpu_count(),
        std::min<uint32_t>(host.max_vcpus(), 8)));
  }
  if (config.memory_bytes() < kMinMemoryBytes || config.memory_bytes() % (2ull << 20) != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "memory_bytes %u: must be a multiple of 2 MiB and at least %u MiB", config.memory_bytes(), kMinMemoryBytes >> 20));
  }
  return absl::OkStatus();
}

Vm::Vm(kvm::KvmSystem kvm, v1::HostCapabilities host, v1::VmConfig config)
    : kvm_(std::move(kvm)), host_(std::move(host)), config_(std::move(config)) {
  arch_ = CreateArchVm(kvm_, host_, config_);
}

Vm::~Vm() {
  // Threads first: they use the vCPU fds and the memory.
  for (auto& thread : threads_) thread->Stop();
  threads_.clear();
}

absl::Status Vm::Build() {
  absl::StatusOr<kvm::VmFd> vm = kvm_.CreateVm(arch_->vm_type());
  if (!vm.ok()) return vm.status();
  vm_fd_.emplace(std::move(*vm));
  absl::StatusOr<GuestMemory> memory =
      GuestMemory::Create(arch_->ram_base(), config_.memory_bytes(), absl::StrFormat("vexstate-%s", config_.name()));
  if (!memory.ok()) return memory.status();
  memory_.emplace(std::move(*memory));
  if (absl::Status s = RegisterRam(/*log_dirty=*/false); !s.ok()) return s;
  if (absl::Status s = arch_->SetUpVm(*vm_fd_); !s.ok()) return s;
  for (uint32_t i = 0; i < config_.vcpu_count(); ++i) {
    absl::StatusOr<kvm::VcpuFd> vcpu = vm_fd_->CreateVcpu(i);
    if (!vcpu.ok()) return vcpu.status();
    vcpus_.push_back(std::make_unique<kvm::VcpuFd>(std::move(*vcpu)));
    vcpu_ptrs_.push_back(vcpus_.back().get());
    if (absl::Status s = arch_->SetUpVcpu(*vm_fd_, *vcpus_.back()); !s.ok()) return s;
  }
  return arch_->FinishSetUp(*vm_fd_, absl::MakeSpan(vcpu_ptrs_));
}

absl::Status Vm::RegisterRam(bool log_dirty) {
  // Re-registering the same slot with other flags is how KVM turns dirty logging on and off
  // (api.rst, KVM_SET_USER_MEMORY_REGION: "flags" may change for an existing slot).
  kvm_userspace_memory_region region = {};
  region.slot = 0;
  region.flags = log_dirty ? KVM_MEM_LOG_DIRTY_PAGES : 0;
  region.guest_phys_addr = memory_->base_gpa();
  region.memory_size = memory_->size();
  region.userspace_addr = reinterpret_cast<uint64_t>(memory_->host());
  return vm_fd_->SetUserMemoryRegion(region);
}

absl::Status Vm::SetDirtyLogging(bool enabled) {
  absl::MutexLock lock(&mu_);
  if (enabled == dirty_logging_) return absl::OkStatus();
  if (absl::Status s = RegisterRam(enabled); !s.ok()) return s;
  dirty_logging_ = enabled;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<uint64_t>> Vm::FetchDirtyPages() {
  absl::MutexLock lock(&mu_);
  if (!dirty_logging_) return absl::FailedPreconditionError("dirty logging is off: enable it first");
  const uint64_t pages = memory_->size() / GuestMemory::kPageSize;
  std::vector<uint64_t> bitmap((pages + 63) / 64, 0);
  if (absl::Status s = vm_fd_->GetDirtyLog(0, bitmap.data()); !s.ok()) return s;
  return bitmap;
}

void Vm::StartThreads(ExitHandler* devices) {
  for (auto& vcpu : vcpus_) threads_.push_back(std::make_unique<VcpuThread>(vcpu.get(), devices));
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Create(const v1::VmConfig& config, absl::Span<const uint8_t> image,
                                               ExitHandler* devices) {
  absl::StatusOr<OpenedHost> opened = OpenHost();
  if (!opened.ok()) return opened.status();
  kvm::KvmSystem* kvm = &opened->kvm;
  v1::HostCapabilities* host = &opened->caps;
  if (absl::Status s = ValidateVmConfig(config, *host); !s.ok()) return s;
  std::unique_ptr<Vm> vm(new Vm(std::move(*kvm), *host, config));
  if (absl::Status s = vm->Build(); !s.ok()) return s;
  if (absl::Status s = vm->arch_->Boot(*vm->memory_, image, absl::MakeSpan(vm->vcpu_ptrs_)); !s.ok()) return s;
  vm->StartThreads(devices);
  return vm;
}

absl::Status Vm::CheckSnapshotShape(const v1::Snapshot& snapshot, const v1::HostCapabilities& host) {
  if (snapshot.format() != v1::SNAPSHOT_FORMAT_V1) {
    return absl::FailedPreconditionError(
        absl::StrFormat("snapshot format %d is not one this build reads (it reads up to %d)", snapshot.format(),
                        v1::SnapshotFormat_MAX));
  }
  const v1::VmConfig& config = snapshot.config();
  if (absl::Status s = ValidateVmConfig(config, host); !s.ok()) return s;
  if (snapshot.vcpus_size() != static_cast<int>(config.vcpu_count())) {
    return absl::DataLossError(absl::StrFormat("snapshot has %d vCPU states for a %u-vCPU VM", snapshot.vcpus_size(),
                                               config.vcpu_count()));
  }
  for (int i = 0; i < snapshot.vcpus_size(); ++i) {
    if (snapshot.vcpus(i).index() != static_cast<uint32_t>(i)) {
      return absl::DataLossError(absl::StrFormat("snapshot vCPU state %d has index %u", i, snapshot.vcpus(i).index()));
    }
  }
  return absl::OkStatus();
}

absl::Status Vm::CheckRestorable(const v1::Snapshot& state, const RestorePolicy& policy, RestoreReport* report) {
  absl::StatusOr<OpenedHost> opened = OpenHost();
  if (!opened.ok()) return opened.status();
  kvm::KvmSystem* kvm = &opened->kvm;
  v1::HostCapabilities* host = &opened->caps;
  if (absl::Status s = CheckSnapshotShape(state, *host); !s.ok()) return s;
  std::unique_ptr<ArchVm> arch = CreateArchVm(*kvm, *host, state.config());
  RestoreReport local;
  if (absl::Status s = arch->CheckRestorable(state, policy, &local); !s.ok()) return s;
  if (report != nullptr) *report = std::move(local);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::CreateIncoming(const v1::VmConfig& config, ExitHandler* devices) {
  absl::StatusOr<OpenedHost> opened = OpenHost();
  if (!opened.ok()) return opened.status();
  kvm::KvmSystem* kvm = &opened->kvm;
  v1::HostCapabilities* host = &opened->caps;
  if (absl::Status s = ValidateVmConfig(config, *host); !s.ok()) return s;
  std::unique_ptr<Vm> vm(new Vm(std::move(*kvm), *host, config));
  if (absl::Status s = vm->Build(); !s.ok()) return s;
  vm->StartThreads(devices);
  return vm;
}

absl::Status Vm::RestoreStateLocked(const v1::Snapshot& state, const RestorePolicy& policy) {
  // Restore order: memory (already in place), VM-wide devices, every vCPU's registers, then
  // every vCPU's exception state. Events go last because KVM computes them against the
  // registers (x86: events set before SREGS/REGS are dropped; QEMU target/arm/kvm.c puts
  // events after registers for the same reason on arm64).
  if (absl::Status s = arch_->RestoreVm(*vm_fd_, state.vm()); !s.ok()) return s;
  for (const v1::VcpuState& vcpu : state.vcpus()) {
    if (absl::Status s = arch_->RestoreVcpuRegisters(*vcpus_[vcpu.index()], vcpu); !s.ok()) return s;
  }
  if (policy.skip_exception_state) return absl::OkStatus();
  for (const v1::VcpuState& vcpu : state.vcpus()) {
    absl::Status s = arch_->RestoreExceptionState(*vcpus_[vcpu.index()], vcpu.exception(), policy);
    if (!s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status Vm::CheckRestorableHereLocked(const v1::Snapshot& state, const RestorePolicy& policy,
                                           RestoreReport* report) const {
  if (!paused_ || ever_ran_) {
    return absl::FailedPreconditionError("RestoreState needs a VM made by CreateIncoming that has never run");
  }
  if (absl::Status s = CheckSnapshotShape(state, host_); !s.ok()) return s;
  if (state.config().vcpu_count() != config_.vcpu_count() || state.config().memory_bytes() != config_.memory_bytes() ||
      state.config().arch() != config_.arch()) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "state is for a %u-vCPU %u-byte %s VM; this VM has %u vCPUs and %u bytes (%s)", state.config().vcpu_count(),
        state.config().memory_bytes(), v1::Arch_Name(state.config().arch()), config_.vcpu_count(),
        config_.memory_bytes(), v1::Arch_Name(config_.arch())));
  }
  return arch_->CheckRestorable(state, policy, report);
}

absl::Status Vm::CheckRestorableHere(const v1::Snapshot& state, const RestorePolicy& policy,
                                     RestoreReport* report) const {
  absl::MutexLock lock(&mu_);
  RestoreReport local;
  if (absl::Status s = CheckRestorableHereLocked(state, policy, &local); !s.ok()) return s;
  if (report != nullptr) *report = std::move(local);
  return absl::OkStatus();
}

absl::Status Vm::RestoreState(const v1::Snapshot& state, const RestorePolicy& policy, RestoreReport* report) {
  absl::MutexLock lock(&mu_);
  RestoreReport local;
  if (absl::Status s = CheckRestorableHereLocked(state, policy, &local); !s.ok()) return s;
  if (absl::Status s = RestoreStateLocked(state, policy); !s.ok()) return s;
  if (report != nullptr) *report = std::move(local);
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Vm>> Vm::Restore(const v1::Snapshot& snapshot, const RestorePolicy& policy,
                                                ExitHandler* devices, RestoreReport* report) {
  absl::StatusOr<OpenedHost> opened = OpenHost();
  if (!opened.ok()) return opened.status();
  kvm::KvmSystem* kvm = &opened->kvm;
  v1::HostCapabilities* host = &opened->caps;
  if (absl::Status s = CheckSnapshotShape(snapshot, *host); !s.ok()) return s;
  const v1::VmConfig& config = snapshot.config();
  std::unique_ptr<Vm> vm(new Vm(std::move(*kvm), *host, config));
  RestoreReport local_report;
  if (absl::Status s = vm->arch_->CheckRestorable(snapshot, policy, &local_report); !s.ok()) return s;
  // Memory chunks are checked before the VM exists, so a bad chunk creates nothing.
  for (const v1::MemoryChunk& chunk : snapshot.memory()) {
    uint64_t end = chunk.gpa() + chunk.data().size();
    if (chunk.gpa() < vm->arch_->ram_base() || end > vm->arch_->ram_base() + config.memory_bytes() ||
        end < chunk.gpa()) {
      return absl::DataLossError(absl::StrFormat("snapshot memory chunk [0x%x, 0x%x) is outside the VM's RAM",
                                                 chunk.gpa(), end));
    }
  }
  if (absl::Status s = vm->Build(); !s.ok()) return s;
  for (const v1::MemoryChunk& chunk : snapshot.memory()) {
    const auto* bytes = reinterpret_cast<const uint8_t*>(chunk.data().data());
    if (absl::Status s = vm->memory_->Write(chunk.gpa(), absl::MakeConstSpan(bytes, chunk.data().size())); !s.ok()) {
      return s;
    }
  }
  {
    absl::MutexLock lock(&vm->mu_);
    if (absl::Status s = vm->RestoreStateLocked(snapshot, policy); !s.ok()) return s;
  }
  vm->StartThreads(devices);
  if (report != nullptr) *report = std::move(local_report);
  return vm;
}

bool Vm::paused() const {
  absl::MutexLock lock(&mu_);
  return paused_;
}

absl::Status Vm::Resume() {
  absl::MutexLock lock(&mu_);
  for (auto& thread : threads_) thread->Resume();
  paused_ = false;
  ever_ran_ = true;
  return absl::OkStatus();
}

absl::Status Vm::PauseLocked(absl::Duration timeout) {
  for (auto& thread : threads_) thread->RequestPause();
  for (auto& thread : threads_) {
    if (absl::Status s = thread->WaitPaused(timeout); !s.ok()) return s;
  }
  paused_ = true;
  return absl::OkStatus();
}

absl::Status Vm::Pause(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  return PauseLocked(timeout);
}

absl::Status Vm::CheckPausedVcpu(uint32_t vcpu) const {
  if (vcpu >= vcpus_.size()) {
    return absl::NotFoundError(
        absl::StrFormat("vCPU %u does not exist (VM \"%s\" has %u)", vcpu, config_.name(), vcpus_.size()));
  }
  if (!paused_) {
    return absl::FailedPreconditionError(
        absl::StrFormat("vCPU %u of VM \"%s\" is running: pause the VM first (state is only changed "
                        "while every vCPU is out of KVM_RUN)",
                        vcpu, config_.name()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::Snapshot> Vm::Capture(bool with_memory) {
  absl::MutexLock lock(&mu_);
  if (!paused_) return absl::FailedPreconditionError("capture needs a paused VM: pause it first");
  v1::Snapshot snapshot;
  snapshot.set_format(v1::SNAPSHOT_FORMAT_V1);
  snapshot.set_producer("vexstate");
  *snapshot.mutable_source_host() = host_;
  *snapshot.mutable_config() = config_;
  snapshot.set_captured_unix_ns(absl::ToUnixNanos(absl::Now()));
  absl::StatusOr<v1::VmState> vm_state = arch_->CaptureVm(*vm_fd_);
  if (!vm_state.ok()) return vm_state.status();
  *snapshot.mutable_vm() = std::move(*vm_state);
  for (auto& vcpu : vcpus_) {
    absl::StatusOr<v1::VcpuState> state = arch_->CaptureVcpu(*vcpu);
    if (!state.ok()) return state.status();
    *snapshot.add_vcpus() = std::move(*state);
  }
  if (with_memory) {
    const uint64_t pages = memory_->size() / GuestMemory::kPageSize;
    v1::MemoryChunk* chunk = nullptr;
    for (uint64_t p = 0; p < pages; ++p) {
      const uint8_t* page = memory_->host() + p * GuestMemory::kPageSize;
      if (PageIsZero(page)) {
        chunk = nullptr;
        continue;
      }
      if (chunk == nullptr || chunk->data().size() >= kMaxChunkBytes) {
        chunk = snapshot.add_memory();
        chunk->set_gpa(memory_->base_gpa() + p * GuestMemory::kPageSize);
      }
      chunk->mutable_data()->append(reinterpret_cast<const char*>(page), GuestMemory::kPageSize);
    }
  }
  return snapshot;
}

absl::StatusOr<std::vector<v1::VcpuExceptionState>> Vm::CaptureExceptionState() {
  absl::MutexLock lock(&mu_);
  if (!paused_) return absl::FailedPreconditionError("capture needs a paused VM: pause it first");
  std::vector<v1::VcpuExceptionState> states;
  for (auto& vcpu : vcpus_) {
    absl::StatusOr<v1::VcpuExceptionState> state = arch_->CaptureExceptionState(*vcpu);
    if (!state.ok()) return state.status();
    states.push_back(std::move(*state));
  }
  return states;
}

absl::Status Vm::SetExceptionState(const v1::VcpuExceptionState& state, const RestorePolicy& policy) {
  return OnPausedVcpu(state.vcpu_index(),
                      [&](kvm::VcpuFd& vcpu) { return arch_->RestoreExceptionState(vcpu, state, policy); });
}

absl::Status Vm::InjectException(const ExceptionRequest& request) {
  return OnPausedVcpu(request.vcpu, [&](kvm::VcpuFd& vcpu) { return arch_->InjectException(vcpu, request); });
}

absl::Status Vm::InjectNmi(const NmiRequest& request) {
  return OnPausedVcpu(request.vcpu, [&](kvm::VcpuFd& vcpu) { return arch_->InjectNmi(vcpu, request); });
}

absl::Status Vm::InjectMachineCheck(const MachineCheckRequest& request) {
  return OnPausedVcpu(request.vcpu, [&](kvm::VcpuFd& vcpu) { return arch_->InjectMachineCheck(vcpu, request); });
}

absl::Status Vm::InjectSError(const SErrorRequest& request) {
  return OnPausedVcpu(request.vcpu, [&](kvm::VcpuFd& vcpu) { return arch_->InjectSError(vcpu, request); });
}

absl::Status Vm::InjectExternalAbort(const ExternalAbortRequest& request) {
  return OnPausedVcpu(request.vcpu, [&](kvm::VcpuFd& vcpu) { return arch_->InjectExternalAbort(vcpu, request); });
}

}  // namespace vexstate
