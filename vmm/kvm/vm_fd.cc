#include "vmm/kvm/vm_fd.h"

#include <errno.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "absl/strings/str_format.h"
#include "vmm/kvm/ioctl.h"

namespace vexstate::kvm {

namespace {
absl::Status Call(int fd, unsigned long request, const void* arg, std::string_view name) {
  return Ioctl(fd, request, const_cast<void*>(arg), name).status();
}
}  // namespace

int VmFd::CheckExtension(long cap) const {
  int ret = ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return ret < 0 ? 0 : ret;
}

absl::Status VmFd::EnableCap(uint32_t cap, uint64_t arg0) {
  kvm_enable_cap enable = {};
  enable.cap = cap;
  enable.args[0] = arg0;
  return Call(fd_.get(), KVM_ENABLE_CAP, &enable, absl::StrFormat("KVM_ENABLE_CAP(%u)", cap));
}

absl::Status VmFd::SetUserMemoryRegion(const kvm_userspace_memory_region& region) {
  return Call(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region,
              absl::StrFormat("KVM_SET_USER_MEMORY_REGION(slot %u, gpa 0x%x, %u bytes)",
                              region.slot, region.guest_phys_addr, region.memory_size));
}

absl::StatusOr<VcpuFd> VmFd::CreateVcpu(uint32_t index) {
  absl::StatusOr<int> fd = Ioctl(fd_.get(), KVM_CREATE_VCPU, static_cast<unsigned long>(index),
                                 absl::StrFormat("KVM_CREATE_VCPU(%u)", index));
  if (!fd.ok()) return fd.status();
  ScopedFd owned(*fd);
  void* run = mmap(nullptr, vcpu_mmap_size_, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  if (run == MAP_FAILED) return ErrnoStatus(errno, absl::StrFormat("mmap kvm_run of vCPU %u", index));
  return VcpuFd(std::move(owned), index, static_cast<kvm_run*>(run), vcpu_mmap_size_);
}

absl::Status VmFd::GetDirtyLog(uint32_t slot, void* bitmap) {
  kvm_dirty_log log = {};
  log.slot = slot;
  log.dirty_bitmap = bitmap;
  return Call(fd_.get(), KVM_GET_DIRTY_LOG, &log, absl::StrFormat("KVM_GET_DIRTY_LOG(slot %u)", slot));
}

#if defined(__x86_64__)
absl::Status VmFd::SetTssAddr(uint64_t addr) {
  return Ioctl(fd_.get(), KVM_SET_TSS_ADDR, static_cast<unsigned long>(addr), "KVM_SET_TSS_ADDR")
      .status();
}
absl::Status VmFd::SetIdentityMapAddr(uint64_t addr) {
  return Call(fd_.get(), KVM_SET_IDENTITY_MAP_ADDR, &addr, "KVM_SET_IDENTITY_MAP_ADDR");
}
absl::Status VmFd::CreateIrqchip() {
  return Ioctl(fd_.get(), KVM_CREATE_IRQCHIP, 0ul, "KVM_CREATE_IRQCHIP").status();
}
absl::Status VmFd::CreatePit2() {
  kvm_pit_config config = {};
  return Call(fd_.get(), KVM_CREATE_PIT2, &config, "KVM_CREATE_PIT2");
}
absl::Status VmFd::GetIrqchip(kvm_irqchip* chip) {
  return Call(fd_.get(), KVM_GET_IRQCHIP, chip, absl::StrFormat("KVM_GET_IRQCHIP(%u)", chip->chip_id));
}
absl::Status VmFd::SetIrqchip(const kvm_irqchip& chip) {
  return Call(fd_.get(), KVM_SET_IRQCHIP, &chip, absl::StrFormat("KVM_SET_IRQCHIP(%u)", chip.chip_id));
}
absl::Status VmFd::GetPit2(kvm_pit_state2* pit) { return Call(fd_.get(), KVM_GET_PIT2, pit, "KVM_GET_PIT2"); }
absl::Status VmFd::SetPit2(const kvm_pit_state2& pit) {
  return Call(fd_.get(), KVM_SET_PIT2, &pit, "KVM_SET_PIT2");
}
absl::Status VmFd::GetClock(kvm_clock_data* clock) {
  return Call(fd_.get(), KVM_GET_CLOCK, clock, "KVM_GET_CLOCK");
}
absl::Status VmFd::SetClock(const kvm_clock_data& clock) {
  return Call(fd_.get(), KVM_SET_CLOCK, &clock, "KVM_SET_CLOCK");
}
#endif

#if defined(__aarch64__)
absl::Status VmFd::ArmPreferredTarget(kvm_vcpu_init* init) {
  return Call(fd_.get(), KVM_ARM_PREFERRED_TARGET, init, "KVM_ARM_PREFERRED_TARGET");
}
#endif

}  // namespace vexstate::kvm
