// GuestMemory: one contiguous range of guest RAM backed by a memfd.
//
// memfd (not anonymous memory) so the same pages can later be handed to another process
// (a migration helper, a snapshot writer) and so KVM's dirty log tracks them like any other
// slot. The mapping lives as long as the object; KVM keeps using it after registration, so a
// GuestMemory must outlive the VM it is registered with.
//
// Thread-safety: the bytes are shared with running vCPUs; Read/Write are plain memcpy. The
// caller decides what a consistent view is (capture only while every vCPU is paused).
#ifndef VEXSTATE_VMM_GUEST_MEMORY_H_
#define VEXSTATE_VMM_GUEST_MEMORY_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/kvm/fd.h"

namespace vexstate {

class GuestMemory {
 public:
  static constexpr uint64_t kPageSize = 4096;

  // `size` must be a non-zero multiple of kPageSize.
  static absl::StatusOr<GuestMemory> Create(uint64_t base_gpa, uint64_t size, const std::string& name);
  GuestMemory(GuestMemory&& other) noexcept;
  GuestMemory& operator=(GuestMemory&&) = delete;
  GuestMemory(const GuestMemory&) = delete;
  ~GuestMemory();

  uint64_t base_gpa() const { return base_gpa_; }
  uint64_t size() const { return size_; }
  uint8_t* host() const { return host_; }
  int memfd() const { return memfd_.get(); }
  bool Contains(uint64_t gpa, uint64_t len) const;

  // Host pointer for [gpa, gpa+len), or OUT_OF_RANGE naming the range.
  absl::StatusOr<uint8_t*> HostPointer(uint64_t gpa, uint64_t len) const;
  absl::Status Write(uint64_t gpa, absl::Span<const uint8_t> bytes);
  absl::Status Read(uint64_t gpa, absl::Span<uint8_t> out) const;
  absl::StatusOr<uint64_t> ReadU64(uint64_t gpa) const;
  absl::Status WriteU64(uint64_t gpa, uint64_t value);

 private:
  GuestMemory(kvm::ScopedFd memfd, uint64_t base_gpa, uint64_t size, uint8_t* host)
      : memfd_(std::move(memfd)), base_gpa_(base_gpa), size_(size), host_(host) {}
  kvm::ScopedFd memfd_;
  uint64_t base_gpa_;
  uint64_t size_;
  uint8_t* host_;
};

}  // namespace vexstate

#endif  // VEXSTATE_VMM_GUEST_MEMORY_H_
