// ArchVm: everything about a VM that differs between x86_64 and arm64, behind one interface.
//
// The generic Vm (vmm/vm.h) owns the KVM fds, memory and vCPU threads, and calls these hooks
// in a fixed order: SetUpVm, SetUpVcpu (per vCPU, right after KVM_CREATE_VCPU), FinishSetUp,
// then either Boot (fresh VM) or RestoreVm + RestoreVcpuRegisters + RestoreExceptionState
// (from a snapshot). Every capture/restore/inject hook is called only while all vCPUs are
// paused (out of KVM_RUN with any pending I/O completed).
//
// One implementation per arch: vmm/arch/x86_64/arch_vm_x86.cc, vmm/arch/arm64/arch_vm_arm64.cc;
// the build links the one for the target CPU.
#ifndef VEXSTATE_VMM_ARCH_ARCH_VM_H_
#define VEXSTATE_VMM_ARCH_ARCH_VM_H_

#include <cstdint>
#include <memory>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vexstate/v1/host.pb.h"
#include "vexstate/v1/snapshot.pb.h"
#include "vexstate/v1/vcpu_state.pb.h"
#include "vmm/guest_memory.h"
#include "vmm/injection.h"
#include "vmm/kvm/system.h"
#include "vmm/kvm/vcpu_fd.h"
#include "vmm/kvm/vm_fd.h"

namespace vexstate {

// How a restore treats exception state the destination cannot represent (SPEC §4.4).
struct RestorePolicy {
  // Leave every vCPU's exception state out (the negative controls; never for real use).
  bool skip_exception_state = false;
  // Allow explicit degradation (e.g. deliver an SError without its ESR on a host without
  // KVM_CAP_ARM_INJECT_SERROR_ESR). Without it such a restore is refused before any change.
  bool allow_degrade = false;
};

// What a restore did differently from the snapshot, when allowed to degrade.
struct RestoreReport {
  std::vector<std::string> degradations;
};

class ArchVm {
 public:
  virtual ~ArchVm() = default;

  virtual v1::Arch arch() const = 0;
  // Guest-physical address where RAM starts.
  virtual uint64_t ram_base() const = 0;
  // The KVM_CREATE_VM type argument.
  virtual unsigned long vm_type() const = 0;

  virtual absl::Status SetUpVm(kvm::VmFd& vm) = 0;
  virtual absl::Status SetUpVcpu(kvm::VmFd& vm, kvm::VcpuFd& vcpu) = 0;
  virtual absl::Status FinishSetUp(kvm::VmFd& vm, absl::Span<kvm::VcpuFd* const> vcpus) = 0;

  // Loads `image` into memory and sets every vCPU's entry state.
  virtual absl::Status Boot(GuestMemory& memory, absl::Span<const uint8_t> image,
                            absl::Span<kvm::VcpuFd* const> vcpus) = 0;

  // Checks, without changing anything, that `snapshot` can be restored here under `policy`;
  // fills `report` with the degradations it would apply.
  virtual absl::Status CheckRestorable(const v1::Snapshot& snapshot, const RestorePolicy& policy,
                                       RestoreReport* report) const = 0;

  virtual absl::StatusOr<v1::VmState> CaptureVm(kvm::VmFd& vm) = 0;
  virtual absl::Status RestoreVm(kvm::VmFd& vm, const v1::VmState& state) = 0;
  // Full state, exception state included.
  virtual absl::StatusOr<v1::VcpuState> CaptureVcpu(kvm::VcpuFd& vcpu) = 0;
  virtual absl::StatusOr<v1::VcpuExceptionState> CaptureExceptionState(kvm::VcpuFd& vcpu) = 0;
  // Everything but the exception state.
  virtual absl::Status RestoreVcpuRegisters(kvm::VcpuFd& vcpu, const v1::VcpuState& state) = 0;
  // Must follow RestoreVcpuRegisters (KVM drops events set before the registers).
  virtual absl::Status RestoreExceptionState(kvm::VcpuFd& vcpu, const v1::VcpuExceptionState& state,
                                             const RestorePolicy& policy) = 0;

  // Injection. The other arch's verbs return UNIMPLEMENTED naming the arch.
  virtual absl::Status InjectException(kvm::VcpuFd& vcpu, const ExceptionRequest& request) = 0;
  virtual absl::Status InjectNmi(kvm::VcpuFd& vcpu, const NmiRequest& request) = 0;
  virtual absl::Status InjectMachineCheck(kvm::VcpuFd& vcpu, const MachineCheckRequest& request) = 0;
  virtual absl::Status InjectSError(kvm::VcpuFd& vcpu, const SErrorRequest& request) = 0;
  virtual absl::Status InjectExternalAbort(kvm::VcpuFd& vcpu, const ExternalAbortRequest& request) = 0;
};

// Probes the host's /dev/kvm (generic and arch capabilities).
absl::StatusOr<v1::HostCapabilities> ProbeHost(const kvm::KvmSystem& kvm);

// The ArchVm for this build's CPU.
std::unique_ptr<ArchVm> CreateArchVm(const kvm::KvmSystem& kvm, const v1::HostCapabilities& host,
                                     const v1::VmConfig& config);

}  // namespace vexstate

#endif  // VEXSTATE_VMM_ARCH_ARCH_VM_H_
