#include "vmm/guest_memory.h"

#include <errno.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <utility>

#include "absl/strings/str_format.h"
#include "vmm/kvm/ioctl.h"

namespace vexstate {

absl::StatusOr<GuestMemory> GuestMemory::Create(uint64_t base_gpa, uint64_t size, const std::string& name) {
  if (size == 0 || size % kPageSize != 0 || base_gpa % kPageSize != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("guest memory at 0x%x of %u bytes: base and size must be non-zero multiples of %u",
                        base_gpa, size, kPageSize));
  }
  int fd = memfd_create(name.c_str(), MFD_CLOEXEC);
  if (fd < 0) return kvm::ErrnoStatus(errno, "memfd_create");
  kvm::ScopedFd memfd(fd);
  if (ftruncate(fd, size) != 0) {
    return kvm::ErrnoStatus(errno, absl::StrFormat("ftruncate guest memory to %u bytes", size));
  }
  void* host = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (host == MAP_FAILED) return kvm::ErrnoStatus(errno, absl::StrFormat("mmap %u bytes of guest memory", size));
  return GuestMemory(std::move(memfd), base_gpa, size, static_cast<uint8_t*>(host));
}

GuestMemory::GuestMemory(GuestMemory&& other) noexcept
    : memfd_(std::move(other.memfd_)),
      base_gpa_(other.base_gpa_),
      size_(other.size_),
      host_(std::exchange(other.host_, nullptr)) {}

GuestMemory::~GuestMemory() {
  if (host_ != nullptr) munmap(host_, size_);
}

bool GuestMemory::Contains(uint64_t gpa, uint64_t len) const {
  return gpa >= base_gpa_ && len <= size_ && gpa - base_gpa_ <= size_ - len;
}

absl::StatusOr<uint8_t*> GuestMemory::HostPointer(uint64_t gpa, uint64_t len) const {
  if (!Contains(gpa, len)) {
    return absl::OutOfRangeError(absl::StrFormat("guest range [0x%x, 0x%x) is outside RAM [0x%x, 0x%x)", gpa,
                                                 gpa + len, base_gpa_, base_gpa_ + size_));
  }
  return host_ + (gpa - base_gpa_);
}

absl::Status GuestMemory::Write(uint64_t gpa, absl::Span<const uint8_t> bytes) {
  absl::StatusOr<uint8_t*> dst = HostPointer(gpa, bytes.size());
  if (!dst.ok()) return dst.status();
  std::memcpy(*dst, bytes.data(), bytes.size());
  return absl::OkStatus();
}

absl::Status GuestMemory::Read(uint64_t gpa, absl::Span<uint8_t> out) const {
  absl::StatusOr<uint8_t*> src = HostPointer(gpa, out.size());
  if (!src.ok()) return src.status();
  std::memcpy(out.data(), *src, out.size());
  return absl::OkStatus();
}

absl::StatusOr<uint64_t> GuestMemory::ReadU64(uint64_t gpa) const {
  uint64_t value = 0;
  absl::Status status = Read(gpa, absl::MakeSpan(reinterpret_cast<uint8_t*>(&value), sizeof(value)));
  if (!status.ok()) return status;
  return value;
}

absl::Status GuestMemory::WriteU64(uint64_t gpa, uint64_t value) {
  // A single aligned 8-byte store, so a polling guest never sees half of it.
  absl::StatusOr<uint8_t*> dst = HostPointer(gpa, sizeof(value));
  if (!dst.ok()) return dst.status();
  if (gpa % sizeof(value) != 0) return absl::InvalidArgumentError(absl::StrFormat("unaligned u64 at 0x%x", gpa));
  __atomic_store_n(reinterpret_cast<uint64_t*>(*dst), value, __ATOMIC_SEQ_CST);
  return absl::OkStatus();
}

}  // namespace vexstate
