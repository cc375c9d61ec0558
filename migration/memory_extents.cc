#include "migration/memory_extents.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"

namespace vexstate::migration {

absl::StatusOr<std::vector<MemoryExtent>> PopulatedExtents(const GuestMemory& memory) {
  std::vector<MemoryExtent> extents;
  const off_t size = static_cast<off_t>(memory.size());
  off_t position = 0;
  while (position < size) {
    const off_t data = lseek(memory.memfd(), position, SEEK_DATA);
    if (data < 0) {
      if (errno == ENXIO) break;  // no data after `position`
      return absl::InternalError(
          absl::StrFormat("lseek(SEEK_DATA, %d) on guest memory: %s", position, std::strerror(errno)));
    }
    off_t hole = lseek(memory.memfd(), data, SEEK_HOLE);
    if (hole < 0) {
      return absl::InternalError(
          absl::StrFormat("lseek(SEEK_HOLE, %d) on guest memory: %s", data, std::strerror(errno)));
    }
    if (hole > size) hole = size;
    // Page granularity (shmem reports whole pages; rounding keeps it so in any case).
    const uint64_t begin = static_cast<uint64_t>(data) & ~(kPageSize - 1);
    const uint64_t end = (static_cast<uint64_t>(hole) + kPageSize - 1) & ~(kPageSize - 1);
    extents.push_back({begin, end - begin});
    position = hole;
  }
  return extents;
}

absl::StatusOr<PageBitmap> PopulatedPages(const GuestMemory& memory) {
  absl::StatusOr<std::vector<MemoryExtent>> extents = PopulatedExtents(memory);
  if (!extents.ok()) return extents.status();
  const uint64_t pages = memory.size() / kPageSize;
  PageBitmap bitmap((pages + 63) / 64, 0);
  for (const MemoryExtent& extent : *extents) {
    for (uint64_t p = extent.offset / kPageSize; p < (extent.offset + extent.length) / kPageSize && p < pages; ++p) {
      bitmap[p / 64] |= 1ull << (p % 64);
    }
  }
  return bitmap;
}

}  // namespace vexstate::migration
