// KvmSystem: the /dev/kvm file descriptor and the system-level ioctls.
//
// Thread-safety: const methods may be called from any thread.
#ifndef VEXSTATE_VMM_KVM_SYSTEM_H_
#define VEXSTATE_VMM_KVM_SYSTEM_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "vmm/kvm/fd.h"
#include "vmm/kvm/linux_kvm.h"
#include "vmm/kvm/vm_fd.h"

namespace vexstate::kvm {

class KvmSystem {
 public:
  // Opens /dev/kvm (or `path`) and checks KVM_GET_API_VERSION == 12.
  static absl::StatusOr<KvmSystem> Open(const std::string& path = "/dev/kvm");

  int api_version() const { return api_version_; }
  // KVM_CHECK_EXTENSION on the system fd: 0 when unsupported.
  int CheckExtension(long cap) const;
  absl::StatusOr<int> VcpuMmapSize() const;
  // KVM_CREATE_VM. `type` is 0 on x86; on arm64 it carries the IPA size.
  absl::StatusOr<VmFd> CreateVm(unsigned long type = 0) const;

#if defined(__x86_64__)
  // KVM_GET_SUPPORTED_CPUID, sized by retrying on E2BIG.
  absl::StatusOr<std::vector<kvm_cpuid_entry2>> GetSupportedCpuid() const;
  // KVM_GET_MSR_INDEX_LIST.
  absl::StatusOr<std::vector<uint32_t>> GetMsrIndexList() const;
  // KVM_X86_GET_MCE_CAP_SUPPORTED.
  absl::StatusOr<uint64_t> GetMceCapSupported() const;
#endif

 private:
  explicit KvmSystem(ScopedFd fd, int api_version) : fd_(std::move(fd)), api_version_(api_version) {}
  ScopedFd fd_;
  int api_version_ = 0;
};

}  // namespace vexstate::kvm

#endif  // VEXSTATE_VMM_KVM_SYSTEM_H_
