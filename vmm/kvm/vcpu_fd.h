// VcpuFd: a KVM vCPU file descriptor, its mmap'ed kvm_run page, and the vCPU ioctls, each
// wrapped once.
//
// Thread-safety: KVM takes the vCPU mutex in every vCPU ioctl, so state ioctls may be issued
// from a controller thread while the vCPU's own thread is parked outside KVM_RUN (vexstate's
// pause protocol guarantees that before any capture or restore; see vmm/vcpu_thread.h).
#ifndef VEXSTATE_VMM_KVM_VCPU_FD_H_
#define VEXSTATE_VMM_KVM_VCPU_FD_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/kvm/fd.h"
#include "vmm/kvm/linux_kvm.h"

namespace vexstate::kvm {

class VcpuFd {
 public:
  VcpuFd(ScopedFd fd, uint32_t index, kvm_run* run, int run_size);
  VcpuFd(VcpuFd&& other) noexcept;
  VcpuFd& operator=(VcpuFd&&) = delete;
  VcpuFd(const VcpuFd&) = delete;
  ~VcpuFd();

  uint32_t index() const { return index_; }
  int fd() const { return fd_.get(); }
  kvm_run* run() const { return run_; }

  // KVM_RUN once. Returns OK on a userspace exit (see run()->exit_reason), UNAVAILABLE on
  // EINTR (a signal kick or immediate_exit) or EAGAIN, other errors as they come.
  absl::Status Run();

  absl::Status GetMpState(kvm_mp_state* state);
  absl::Status SetMpState(const kvm_mp_state& state);
  absl::Status GetVcpuEvents(kvm_vcpu_events* events);
  absl::Status SetVcpuEvents(const kvm_vcpu_events& events);

#if defined(__x86_64__)
  absl::Status GetRegs(kvm_regs* regs);
  absl::Status SetRegs(const kvm_regs& regs);
  absl::Status GetSregs(kvm_sregs* sregs);
  absl::Status SetSregs(const kvm_sregs& sregs);
  // XSAVE area of `size` bytes (>= sizeof(kvm_xsave)); uses KVM_GET_XSAVE2 when size > 4096.
  absl::Status GetXsave(std::vector<uint8_t>* area, size_t size);
  absl::Status SetXsave(const std::vector<uint8_t>& area);
  absl::Status GetXcrs(kvm_xcrs* xcrs);
  absl::Status SetXcrs(const kvm_xcrs& xcrs);
  absl::Status GetLapic(kvm_lapic_state* lapic);
  absl::Status SetLapic(const kvm_lapic_state& lapic);
  // KVM_GET_MSRS / KVM_SET_MSRS. KVM stops at the first MSR it cannot access and returns how
  // many it processed; anything short of all of them is an error naming that MSR. At most
  // kMaxMsrsPerCall per call (RESOURCE_EXHAUSTED beforehand otherwise, as KVM's E2BIG would be).
  // The buffer KVM reads lives on the stack: the exception state's 131 machine-check MSRs are
  // read and written on every capture and restore.
  // arch/x86/kvm/x86.c msr_io() refuses nmsrs >= MAX_IO_MSRS (256) with E2BIG (seen here: 256
  // fails, 255 works).
  static constexpr size_t kMaxMsrsPerCall = 255;
  absl::Status GetMsrs(absl::Span<const uint32_t> indices, std::vector<uint64_t>* values);
  // `values` must have one slot per index (INVALID_ARGUMENT otherwise).
  absl::Status GetMsrs(absl::Span<const uint32_t> indices, absl::Span<uint64_t> values);
  // `values` must have one value per index (INVALID_ARGUMENT otherwise).
  absl::Status SetMsrs(absl::Span<const uint32_t> indices, absl::Span<const uint64_t> values);
  // KVM_GET_MSRS, returning how many of `indices` (a prefix) were read.
  absl::StatusOr<int> GetMsrsPrefix(absl::Span<const uint32_t> indices, std::vector<uint64_t>* values);
  absl::Status GetDebugRegs(kvm_debugregs* regs);
  absl::Status SetDebugRegs(const kvm_debugregs& regs);
  absl::Status SetCpuid2(const std::vector<kvm_cpuid_entry2>& entries);
  absl::Status SetupMce(uint64_t mcg_cap);
  absl::Status SetMce(const kvm_x86_mce& mce);
  absl::Status Nmi();
  absl::StatusOr<uint32_t> GetTscKhz();
  absl::Status SetTscKhz(uint32_t khz);
#endif

#if defined(__aarch64__)
  absl::Status ArmVcpuInit(const kvm_vcpu_init& init);
  absl::StatusOr<std::vector<uint64_t>> GetRegList();
  // ONE_REG: `value` must have the size encoded in `id`.
  absl::Status GetOneReg(uint64_t id, void* value);
  absl::Status SetOneReg(uint64_t id, const void* value);
#endif

 private:
  ScopedFd fd_;
  uint32_t index_;
  kvm_run* run_;
  int run_size_;
};

}  // namespace vexstate::kvm

#endif  // VEXSTATE_VMM_KVM_VCPU_FD_H_
