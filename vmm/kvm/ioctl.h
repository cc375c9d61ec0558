// The one place where a KVM ioctl's errno becomes an absl::Status.
//
// Every wrapper in vmm/kvm/ calls these, so an error always names the ioctl that failed and
// the errno ("KVM_SET_VCPU_EVENTS: Invalid argument (EINVAL)"); callers add what they were
// doing with absl::Status annotations.
#ifndef VEXSTATE_VMM_KVM_IOCTL_H_
#define VEXSTATE_VMM_KVM_IOCTL_H_

#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace vexstate::kvm {

// Maps an errno from `what` to a Status: EINVAL -> INVALID_ARGUMENT, ENOENT/ENXIO ->
// NOT_FOUND, EPERM/EACCES -> PERMISSION_DENIED, EBUSY/EEXIST/ENOEXEC -> FAILED_PRECONDITION,
// EINTR/EAGAIN -> UNAVAILABLE, ENOMEM/E2BIG -> RESOURCE_EXHAUSTED, others -> INTERNAL.
absl::Status ErrnoStatus(int err, std::string_view what);

// ioctl(fd, request, arg); retries on EINTR unless `retry_eintr` is false.
// Returns the ioctl's non-negative result.
absl::StatusOr<int> Ioctl(int fd, unsigned long request, unsigned long arg,
                          std::string_view name, bool retry_eintr = true);

inline absl::StatusOr<int> Ioctl(int fd, unsigned long request, void* arg,
                                 std::string_view name) {
  return Ioctl(fd, request, reinterpret_cast<unsigned long>(arg), name);
}

}  // namespace vexstate::kvm

#endif  // VEXSTATE_VMM_KVM_IOCTL_H_
