#include "vmm/kvm/system.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/ioctl.h>

#include <memory>

#include "absl/strings/str_format.h"
#include "vmm/kvm/ioctl.h"

namespace vexstate::kvm {

absl::StatusOr<KvmSystem> KvmSystem::Open(const std::string& path) {
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return ErrnoStatus(errno, absl::StrFormat("open %s", path));
  ScopedFd owned(fd);
  absl::StatusOr<int> version = Ioctl(fd, KVM_GET_API_VERSION, 0ul, "KVM_GET_API_VERSION");
  if (!version.ok()) return version.status();
  // api.rst: "Applications should refuse to run if KVM_GET_API_VERSION returns a value
  // other than 12."
  if (*version != KVM_API_VERSION) {
    return absl::FailedPreconditionError(
        absl::StrFormat("%s: KVM API version %d, expected %d", path, *version, KVM_API_VERSION));
  }
  return KvmSystem(std::move(owned), *version);
}

int KvmSystem::CheckExtension(long cap) const {
  int ret = ioctl(fd_.get(), KVM_CHECK_EXTENSION, cap);
  return ret < 0 ? 0 : ret;
}

absl::StatusOr<int> KvmSystem::VcpuMmapSize() const {
  return Ioctl(fd_.get(), KVM_GET_VCPU_MMAP_SIZE, 0ul, "KVM_GET_VCPU_MMAP_SIZE");
}

absl::StatusOr<VmFd> KvmSystem::CreateVm(unsigned long type) const {
  absl::StatusOr<int> mmap_size = VcpuMmapSize();
  if (!mmap_size.ok()) return mmap_size.status();
  absl::StatusOr<int> vm = Ioctl(fd_.get(), KVM_CREATE_VM, type, "KVM_CREATE_VM");
  if (!vm.ok()) return vm.status();
  return VmFd(ScopedFd(*vm), *mmap_size);
}

#if defined(__x86_64__)
absl::StatusOr<std::vector<kvm_cpuid_entry2>> KvmSystem::GetSupportedCpuid() const {
  for (int n = 64; n <= 4096; n *= 2) {
    std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + n * sizeof(kvm_cpuid_entry2));
    auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buf.data());
    cpuid->nent = n;
    if (ioctl(fd_.get(), KVM_GET_SUPPORTED_CPUID, cpuid) == 0) {
      return std::vector<kvm_cpuid_entry2>(cpuid->entries, cpuid->entries + cpuid->nent);
    }
    if (errno != E2BIG) return ErrnoStatus(errno, "KVM_GET_SUPPORTED_CPUID");
  }
  return absl::ResourceExhaustedError("KVM_GET_SUPPORTED_CPUID: more than 4096 entries");
}

absl::StatusOr<std::vector<uint32_t>> KvmSystem::GetMsrIndexList() const {
  kvm_msr_list probe = {};
  // The first call fails with E2BIG and tells the count.
  if (ioctl(fd_.get(), KVM_GET_MSR_INDEX_LIST, &probe) < 0 && errno != E2BIG) {
    return ErrnoStatus(errno, "KVM_GET_MSR_INDEX_LIST");
  }
  std::vector<uint8_t> buf(sizeof(kvm_msr_list) + probe.nmsrs * sizeof(uint32_t));
  auto* list = reinterpret_cast<kvm_msr_list*>(buf.data());
  list->nmsrs = probe.nmsrs;
  absl::StatusOr<int> ret = Ioctl(fd_.get(), KVM_GET_MSR_INDEX_LIST, list, "KVM_GET_MSR_INDEX_LIST");
  if (!ret.ok()) return ret.status();
  return std::vector<uint32_t>(list->indices, list->indices + list->nmsrs);
}

absl::StatusOr<uint64_t> KvmSystem::GetMceCapSupported() const {
  uint64_t cap = 0;
  absl::StatusOr<int> ret =
      Ioctl(fd_.get(), KVM_X86_GET_MCE_CAP_SUPPORTED, &cap, "KVM_X86_GET_MCE_CAP_SUPPORTED");
  if (!ret.ok()) return ret.status();
  return cap;
}
#endif

}  // namespace vexstate::kvm
