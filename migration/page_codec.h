// page_codec: guest pages <-> PageRun (proto/vexstate/v1/migration.proto), the unit of the
// migration data stream.
//
// A PageRun covers `count` (1..kMaxRunPages) contiguous 4 KiB pages from `gpa`:
//   zero_bitmap  exactly ceil(count / 8) bytes; bit i (byte i / 8, bit i % 8) set = page i is
//                all zeros and is not in `data`; the padding bits above `count` are zero.
//   data         the other pages, in order, 4096 bytes each.
//   crc32c       CRC-32C (migration/crc32c.h) over: gpa as 8 bytes little-endian, count as 4
//                bytes little-endian, zero_bitmap, data — in that order.
// The decoder checks the CRC and the shape of a run against the destination's memory before
// it writes a byte: a corrupted or misplaced run is DATA_LOSS naming its gpa, and changes
// nothing (ApplyRuns: nothing of the whole batch).
//
// The encoder reads guest memory that vCPUs may be writing (pre-copy): a page can be torn,
// which is harmless because the dirty log reports it again for the next round. The CRC covers
// the bytes as copied, so a torn page still decodes.
//
// Thread-safety: pure functions; concurrent calls on different memory ranges are fine.
#ifndef VEXSTATE_MIGRATION_PAGE_CODEC_H_
#define VEXSTATE_MIGRATION_PAGE_CODEC_H_

#include <cstdint>
#include <functional>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "google/protobuf/repeated_field.h"
#include "vexstate/v1/migration.pb.h"
#include "vmm/guest_memory.h"

namespace vexstate::migration {

inline constexpr uint64_t kPageSize = GuestMemory::kPageSize;
// Bounds a run to 1 MiB of data: a bounded piece to check, apply and (on error) name.
inline constexpr uint32_t kMaxRunPages = 256;

// A page bitmap as KVM's dirty log has it (Vm::FetchDirtyPages): bit p % 64 of word p / 64
// is page p, counted from the memory's base GPA.
using PageBitmap = std::vector<uint64_t>;

// Every page of `memory` set.
PageBitmap AllPages(const GuestMemory& memory);
uint64_t CountPages(absl::Span<const uint64_t> bitmap);
// into |= from (sizes must match; the longer tail is ignored).
void MergeInto(PageBitmap& into, absl::Span<const uint64_t> from);

// What EncodePages does with a selected page that is all zeros.
enum class ZeroPages {
  // Left out entirely: for pre-copy round 0, since the destination's memory starts zeroed.
  kSkip,
  // Sent as a bit in zero_bitmap: for later rounds, where the page may hold data already.
  kElide,
};

struct EncodeStats {
  uint64_t pages = 0;       // pages covered by the emitted runs
  uint64_t zero_pages = 0;  // of which elided into zero_bitmap
  uint64_t skipped = 0;     // selected zero pages left out (ZeroPages::kSkip)
  uint64_t runs = 0;
};

// Where EncodePages puts its runs.
struct RunSink {
  // An empty run to fill: e.g. a reused element of a PageBatch, whose buffers keep their
  // capacity (fresh 1 MiB buffers cost page faults on every batch).
  std::function<v1::PageRun*()> start;
  // The run from `start` is complete and sealed with its CRC; an error stops the encoding.
  std::function<absl::Status(v1::PageRun&)> done;
};

// Encodes the pages selected by `bitmap` as runs of at most kMaxRunPages contiguous pages,
// in GPA order; stops at (and returns) the sink's first error. `bitmap` must have one bit per
// page of `memory` (bits beyond are ignored). `stats`, if given, is added to.
absl::Status EncodePages(const GuestMemory& memory, absl::Span<const uint64_t> bitmap, ZeroPages zero_pages,
                         const RunSink& sink, EncodeStats* stats = nullptr);

// One run of `count` pages from `gpa` (zero pages elided). OUT_OF_RANGE / INVALID_ARGUMENT
// if the range is not whole pages of `memory` or count is not in [1, kMaxRunPages].
absl::StatusOr<v1::PageRun> EncodeRun(const GuestMemory& memory, uint64_t gpa, uint32_t count);

// The CRC-32C a run should carry (over gpa, count, zero_bitmap, data as described above).
uint32_t RunCrc32c(const v1::PageRun& run);

// Checks `run` (CRC, then shape: count, bitmap length and padding, data length, page
// alignment, inside `memory`) without writing. DATA_LOSS naming the run's gpa.
absl::Status VerifyRun(const v1::PageRun& run, const GuestMemory& memory);

// VerifyRun, then writes the run's pages (zero pages as zeros) into `memory`.
absl::Status ApplyRun(const v1::PageRun& run, GuestMemory& memory);

// Verifies every run, then writes them all; if any run is bad nothing is written.
// `pages_written`, if given, is added to.
absl::Status ApplyRuns(const google::protobuf::RepeatedPtrField<v1::PageRun>& runs, GuestMemory& memory,
                       uint64_t* pages_written = nullptr);

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_PAGE_CODEC_H_
