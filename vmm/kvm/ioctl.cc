#include "vmm/kvm/ioctl.h"

#include <errno.h>
#include <string.h>
#include <sys/ioctl.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vexstate::kvm {

namespace {

const char* ErrnoName(int err) {
  switch (err) {
    case EINVAL: return "EINVAL";
    case ENOENT: return "ENOENT";
    case ENXIO: return "ENXIO";
    case EPERM: return "EPERM";
    case EACCES: return "EACCES";
    case EBUSY: return "EBUSY";
    case EEXIST: return "EEXIST";
    case EINTR: return "EINTR";
    case EAGAIN: return "EAGAIN";
    case ENOMEM: return "ENOMEM";
    case E2BIG: return "E2BIG";
    case EFAULT: return "EFAULT";
    case ENOTTY: return "ENOTTY";
    case EOPNOTSUPP: return "EOPNOTSUPP";
    case EIO: return "EIO";
    case ENOEXEC: return "ENOEXEC";
    default: return "errno";
  }
}

}  // namespace

absl::Status ErrnoStatus(int err, std::string_view what) {
  std::string message = absl::StrFormat("%s: %s (%s %d)", what, strerror(err), ErrnoName(err), err);
  switch (err) {
    case EINVAL:
      return absl::InvalidArgumentError(message);
    case ENOENT:
    case ENXIO:
      return absl::NotFoundError(message);
    case EPERM:
    case EACCES:
      return absl::PermissionDeniedError(message);
    case EBUSY:
    case EEXIST:
      return absl::FailedPreconditionError(message);
    case ENOEXEC:
      // arm64 KVM's answer to a vCPU ioctl (ONE_REG, events, KVM_RUN) issued before
      // KVM_ARM_VCPU_INIT (arch/arm64/kvm/arm.c); seen on Linux 6.1.
      return absl::FailedPreconditionError(absl::StrCat(message, ": the vCPU is not initialised (KVM_ARM_VCPU_INIT)"));
    case EINTR:
    case EAGAIN:
      return absl::UnavailableError(message);
    case ENOMEM:
    case E2BIG:
      return absl::ResourceExhaustedError(message);
    default:
      return absl::InternalError(message);
  }
}

absl::StatusOr<int> Ioctl(int fd, unsigned long request, unsigned long arg,
                          std::string_view name, bool retry_eintr) {
  while (true) {
    int ret = ioctl(fd, request, arg);
    if (ret >= 0) return ret;
    if (errno == EINTR && retry_eintr) continue;
    return ErrnoStatus(errno, name);
  }
}

}  // namespace vexstate::kvm
