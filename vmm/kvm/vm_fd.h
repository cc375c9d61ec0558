// VmFd: a KVM VM file descriptor and the VM-level ioctls, each wrapped once.
//
// Thread-safety: KVM serialises VM ioctls itself; this class adds no state of its own.
#ifndef VEXSTATE_VMM_KVM_VM_FD_H_
#define VEXSTATE_VMM_KVM_VM_FD_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vmm/kvm/fd.h"
#include "vmm/kvm/linux_kvm.h"
#include "vmm/kvm/vcpu_fd.h"

namespace vexstate::kvm {

class VmFd {
 public:
  VmFd(ScopedFd fd, int vcpu_mmap_size) : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}
  VmFd(VmFd&&) = default;
  VmFd& operator=(VmFd&&) = default;

  int fd() const { return fd_.get(); }

  // KVM_CHECK_EXTENSION on the VM fd (the answer may differ from the system fd's, e.g. for
  // KVM_CAP_XSAVE2 or arm64 caps that depend on the VM type).
  int CheckExtension(long cap) const;
  absl::Status EnableCap(uint32_t cap, uint64_t arg0 = 0);
  absl::Status SetUserMemoryRegion(const kvm_userspace_memory_region& region);
  absl::StatusOr<VcpuFd> CreateVcpu(uint32_t index);
  // KVM_GET_DIRTY_LOG for `slot`; `bitmap` must hold one bit per page of the slot.
  absl::Status GetDirtyLog(uint32_t slot, void* bitmap);

#if defined(__x86_64__)
  absl::Status SetTssAddr(uint64_t addr);
  absl::Status SetIdentityMapAddr(uint64_t addr);
  absl::Status CreateIrqchip();
  absl::Status CreatePit2();
  absl::Status GetIrqchip(kvm_irqchip* chip);
  absl::Status SetIrqchip(const kvm_irqchip& chip);
  absl::Status GetPit2(kvm_pit_state2* pit);
  absl::Status SetPit2(const kvm_pit_state2& pit);
  absl::Status GetClock(kvm_clock_data* clock);
  absl::Status SetClock(const kvm_clock_data& clock);
#endif
#if defined(__aarch64__)
  absl::Status ArmPreferredTarget(kvm_vcpu_init* init);
#endif

 private:
  ScopedFd fd_;
  int vcpu_mmap_size_ = 0;
};

}  // namespace vexstate::kvm

#endif  // VEXSTATE_VMM_KVM_VM_FD_H_
