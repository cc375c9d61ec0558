// Vm: one KVM virtual machine — its memory, vCPUs (one thread each), devices — and the
// operations vexstate is about: pause, capture, restore, inject.
//
// Lifecycle: Create() or Restore() returns a VM whose vCPUs are parked; Resume() runs them;
// Pause() brings every vCPU out of KVM_RUN (pending I/O completed) and returns when all are
// parked. Capture, SetExceptionState and Inject* require the VM to be paused: state is only
// read or written while no vCPU is in KVM_RUN (SPEC §4.3, atomic capture).
//
// Bad input never changes anything: requests are validated (vCPU index, paused, arch rules)
// before the first state-changing ioctl, and Restore() builds a new VM or nothing.
//
// Thread-safety: public methods are serialised by an internal mutex; the ExitHandler is
// called on vCPU threads.
#ifndef VEXSTATE_VMM_VM_H_
#define VEXSTATE_VMM_VM_H_

#include <memory>
#include <optional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "vexstate/v1/exception_state.pb.h"
#include "vexstate/v1/host.pb.h"
#include "vexstate/v1/snapshot.pb.h"
#include "vmm/arch/arch_vm.h"
#include "vmm/exit_handler.h"
#include "vmm/guest_memory.h"
#include "vmm/injection.h"
#include "vmm/kvm/system.h"
#include "vmm/kvm/vcpu_fd.h"
#include "vmm/kvm/vm_fd.h"
#include "vmm/vcpu_thread.h"

namespace vexstate {

class Vm {
 public:
  // A fresh VM that will run `image` (x86_64: Multiboot v1 ELF; arm64: flat binary), paused.
  // `devices` must outlive the VM.
  static absl::StatusOr<std::unique_ptr<Vm>> Create(const v1::VmConfig& config, absl::Span<const uint8_t> image,
                                                    ExitHandler* devices);
  // A new VM built from `snapshot` alone, paused. Checks compatibility first (nothing is
  // created if the snapshot cannot be restored here under `policy`).
  static absl::StatusOr<std::unique_ptr<Vm>> Restore(const v1::Snapshot& snapshot, const RestorePolicy& policy,
                                                     ExitHandler* devices, RestoreReport* report = nullptr);
  // An empty VM for an incoming migration: KVM VM, memory (all zero) and vCPUs exist, no
  // guest is loaded, the vCPUs are parked. The caller writes memory (memory()), then calls
  // RestoreState once; only then may it Resume().
  static absl::StatusOr<std::unique_ptr<Vm>> CreateIncoming(const v1::VmConfig& config, ExitHandler* devices);
  // Checks, without changing anything, that `state` could be restored here.
  static absl::Status CheckRestorable(const v1::Snapshot& state, const RestorePolicy& policy,
                                      RestoreReport* report = nullptr);
  // Restores VM devices, every vCPU's registers, then every vCPU's exception state, from a
  // snapshot whose memory is ignored (it is already in place). The VM must be paused and
  // never have run since CreateIncoming.
  absl::Status RestoreState(const v1::Snapshot& state, const RestorePolicy& policy, RestoreReport* report = nullptr);
  // Checks, without changing anything, that RestoreState(state, policy) would be accepted by
  // THIS VM: the checks RestoreState makes first, against this VM's own configuration (e.g.
  // the MCE banks it was given) and without probing the host again (cheap: a migration
  // destination runs it on the final state while the source is paused).
  absl::Status CheckRestorableHere(const v1::Snapshot& state, const RestorePolicy& policy,
                                   RestoreReport* report = nullptr) const;
  ~Vm();

  absl::Status Resume();
  absl::Status Pause(absl::Duration timeout = absl::Seconds(5));
  bool paused() const;

  // The whole VM at this pause point. Memory is included unless `with_memory` is false.
  absl::StatusOr<v1::Snapshot> Capture(bool with_memory = true);
  absl::StatusOr<std::vector<v1::VcpuExceptionState>> CaptureExceptionState();
  absl::Status SetExceptionState(const v1::VcpuExceptionState& state, const RestorePolicy& policy = {});

  absl::Status InjectException(const ExceptionRequest& request);
  absl::Status InjectNmi(const NmiRequest& request);
  absl::Status InjectMachineCheck(const MachineCheckRequest& request);
  absl::Status InjectSError(const SErrorRequest& request);
  absl::Status InjectExternalAbort(const ExternalAbortRequest& request);

  // Dirty-page tracking for live migration (KVM_MEM_LOG_DIRTY_PAGES on the RAM slot).
  // While enabled, FetchDirtyPages returns the pages written since the previous fetch (or
  // since enabling) — KVM clears its log on each read — as a bitmap, one bit per 4 KiB page
  // from the RAM base, 64 pages per word. Usable while running (pre-copy) or paused.
  absl::Status SetDirtyLogging(bool enabled);
  absl::StatusOr<std::vector<uint64_t>> FetchDirtyPages();

  const v1::VmConfig& config() const { return config_; }
  const v1::HostCapabilities& host() const { return host_; }
  GuestMemory& memory() { return *memory_; }
  uint32_t vcpu_count() const { return static_cast<uint32_t>(vcpus_.size()); }
  VcpuRunState vcpu_state(uint32_t index) const { return threads_[index]->state(); }
  absl::Status vcpu_stop_reason(uint32_t index) const { return threads_[index]->stop_reason(); }

 private:
  // Creates the ArchVm too (it refers to kvm_, so it must be made after kvm_ has its place).
  Vm(kvm::KvmSystem kvm, v1::HostCapabilities host, v1::VmConfig config);
  // Creates the KVM VM, memory and vCPUs (threads not yet started).
  absl::Status Build();
  void StartThreads(ExitHandler* devices);
  // OK if the VM is paused and `vcpu` exists; else the precise reason.
  absl::Status CheckPausedVcpu(uint32_t vcpu) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status PauseLocked(absl::Duration timeout) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Runs `change` on vCPU `index` if the VM is paused and the vCPU exists; else the reason.
  template <typename Change>
  absl::Status OnPausedVcpu(uint32_t index, Change change) {
    absl::MutexLock lock(&mu_);
    if (absl::Status s = CheckPausedVcpu(index); !s.ok()) return s;
    return change(*vcpus_[index]);
  }
  absl::Status RegisterRam(bool log_dirty);
  // Validates a snapshot's shape against this build and `host` (format, vCPU list, memory
  // chunk ranges); DATA_LOSS / FAILED_PRECONDITION with the precise reason.
  static absl::Status CheckSnapshotShape(const v1::Snapshot& snapshot, const v1::HostCapabilities& host);
  absl::Status RestoreStateLocked(const v1::Snapshot& state, const RestorePolicy& policy)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckRestorableHereLocked(const v1::Snapshot& state, const RestorePolicy& policy,
                                         RestoreReport* report) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  kvm::KvmSystem kvm_;
  const v1::HostCapabilities host_;
  const v1::VmConfig config_;
  std::unique_ptr<ArchVm> arch_;
  std::optional<kvm::VmFd> vm_fd_;
  std::optional<GuestMemory> memory_;
  std::vector<std::unique_ptr<kvm::VcpuFd>> vcpus_;
  std::vector<kvm::VcpuFd*> vcpu_ptrs_;
  std::vector<std::unique_ptr<VcpuThread>> threads_;
  mutable absl::Mutex mu_;
  bool paused_ ABSL_GUARDED_BY(mu_) = true;
  bool dirty_logging_ ABSL_GUARDED_BY(mu_) = false;
  bool ever_ran_ ABSL_GUARDED_BY(mu_) = false;
};

// Validates a VmConfig against a host: vCPU count, memory size, arch.
absl::Status ValidateVmConfig(const v1::VmConfig& config, const v1::HostCapabilities& host);

}  // namespace vexstate

#endif  // VEXSTATE_VMM_VM_H_
