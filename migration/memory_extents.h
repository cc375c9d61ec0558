// Which parts of guest RAM hold data. GuestMemory is a memfd: pages nobody ever wrote (or
// read) are holes in it — zero, and not even allocated. SEEK_DATA/SEEK_HOLE (lseek(2), which
// shmem supports) finds them without touching them, so migration can skip them instead of
// faulting them in (each first access of a hole allocates a zeroed page: ~15 us here, more
// than copying it).
//
// Thread-safety: pure; a vCPU that writes meanwhile may fill a hole (pre-copy: the dirty log
// has that page for the next round).
#ifndef VEXSTATE_MIGRATION_MEMORY_EXTENTS_H_
#define VEXSTATE_MIGRATION_MEMORY_EXTENTS_H_

#include <cstdint>
#include <vector>

#include "absl/status/statusor.h"
#include "migration/page_codec.h"
#include "vmm/guest_memory.h"

namespace vexstate::migration {

// [offset, offset + length) from the start of RAM; page aligned.
struct MemoryExtent {
  uint64_t offset = 0;
  uint64_t length = 0;
};

// The extents that may hold non-zero data, in order; everything else is zero. INTERNAL
// naming errno if lseek fails.
absl::StatusOr<std::vector<MemoryExtent>> PopulatedExtents(const GuestMemory& memory);

// The same as a page bitmap (one bit per page, as Vm::FetchDirtyPages).
absl::StatusOr<PageBitmap> PopulatedPages(const GuestMemory& memory);

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_MEMORY_EXTENTS_H_
