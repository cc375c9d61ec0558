// Snapshot files: a vexstate.v1.Snapshot on disk, versioned, self-describing, checksummed.
//
// Layout (all integers little-endian):
//   magic      8 bytes  "VEXSNAP\0"
//   version    u32      SnapshotFormat (1)
//   records    repeated { u32 length; bytes SnapshotFileRecord (length bytes) }
//              first a header record (everything but memory), then memory chunk records
//              (zero pages already elided by the capture), then one trailer record
//   The trailer holds the SHA-256 of every byte before the trailer's length prefix and the
//   count of records and memory bytes, so truncation anywhere is detected.
// Records are bounded (a chunk is at most 1 MiB of memory), so a reader never allocates
// more than a record at a time and a corrupt length is caught before it is trusted.
//
// Errors: a missing file -> NOT_FOUND; not a snapshot (bad magic), corrupt, truncated or
// checksum mismatch -> DATA_LOSS; a newer format version -> FAILED_PRECONDITION ("written by
// a newer vexstate"). Writers write to "<path>.tmp-<pid>", fsync, then rename, so `path`
// either holds a complete snapshot or is untouched.
#ifndef VEXSTATE_SERVER_SNAPSHOT_FILE_H_
#define VEXSTATE_SERVER_SNAPSHOT_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "vexstate/v1/snapshot.pb.h"

namespace vexstate {

struct SnapshotFileInfo {
  uint32_t format_version = 0;
  uint64_t file_bytes = 0;
  uint64_t memory_bytes_stored = 0;
  uint64_t memory_chunks = 0;
  std::string sha256_hex;
};

absl::StatusOr<SnapshotFileInfo> WriteSnapshotFile(const v1::Snapshot& snapshot, const std::string& path);

// Reads and verifies the whole file (checksum first-to-last), returning the snapshot.
absl::StatusOr<v1::Snapshot> ReadSnapshotFile(const std::string& path, SnapshotFileInfo* info = nullptr);

// Verifies the whole file but keeps only the header (memory is streamed and discarded).
absl::StatusOr<v1::Snapshot> InspectSnapshotFile(const std::string& path, SnapshotFileInfo* info = nullptr);

}  // namespace vexstate

#endif  // VEXSTATE_SERVER_SNAPSHOT_FILE_H_
