// Snapshot files: a vexstate.v1.Snapshot on disk, versioned, self-describing, checksummed.
//
// Layout (all integers little-endian):
//   magic      8 bytes  "VEXSNAP\0"
//   version    u32      SnapshotFormat (1)
//   records    repeated { u32 length; bytes SnapshotFileRecord (length bytes) }
//              first a header record (everything but memory), then memory chunk records
//              (zero pages already elided by the capture), then one trailer record, then
//              the end of the file (a byte after the trailer is corruption)
//   The trailer holds the SHA-256 of every byte before the trailer's length prefix and the
//   count of records (header + chunks) and memory bytes, so truncation anywhere is detected.
// Records are bounded: a chunk carries at most 1 MiB of memory (the writer cuts longer ones),
// no record exceeds 2 MiB, and a reader refuses a longer length before allocating anything:
// it reads one bounded record at a time and never trusts a corrupt length.
// The header's Snapshot.format equals the file's version; the writer accepts only the format
// it writes (INVALID_ARGUMENT otherwise, and for a header record above 2 MiB).
//
// Errors: a missing file -> NOT_FOUND; not a snapshot (bad magic), corrupt, truncated or
// checksum mismatch -> DATA_LOSS, the message naming the file and the offset; a newer format
// version -> FAILED_PRECONDITION ("written by a newer vexstate"). The version is the one
// field read before anything can be verified (a newer format may be framed differently):
// damage that turns it into 0 or a value above 255 (never written by any vexstate) is
// DATA_LOSS, into 2..255 it reads as newer. Other I/O errors -> the errno's code
// (absl::ErrnoToStatus), naming the path; a path that is not a regular file ->
// FAILED_PRECONDITION.
//
// Atomic write: the writer writes "<path>.tmp-<pid>", fsyncs it, renames it over `path` and
// fsyncs the directory, so `path` either holds a complete snapshot or is untouched; on failure
// the temporary file is removed. Two threads of one process must not write the same path at
// once (they would share the temporary name); different paths are independent.
//
// Version policy: every format version ever written keeps loading (one reader per version;
// tests/data/snapshots/ holds files of each, replayed by //tests/replay:replay_corpus_test).
//
// Thread-safety: the functions keep no state; concurrent reads of any files are fine.
#ifndef VEXSTATE_SERVER_SNAPSHOT_FILE_H_
#define VEXSTATE_SERVER_SNAPSHOT_FILE_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "vexstate/v1/snapshot.pb.h"

namespace vexstate {

// What a written or verified file holds.
struct SnapshotFileInfo {
  uint32_t format_version = 0;
  uint64_t file_bytes = 0;
  uint64_t memory_bytes_stored = 0;  // sum of the chunk records' data
  uint64_t memory_chunks = 0;        // chunk records (a long in-memory chunk may become several)
  std::string sha256_hex;            // the trailer's checksum, lowercase hex
};

// Writes `snapshot` to `path` atomically (see above). Returns what was written.
absl::StatusOr<SnapshotFileInfo> WriteSnapshotFile(const v1::Snapshot& snapshot, const std::string& path);

// Reads and verifies the whole file (checksum first-to-last), returning the snapshot.
absl::StatusOr<v1::Snapshot> ReadSnapshotFile(const std::string& path, SnapshotFileInfo* info = nullptr);

// Verifies the whole file but keeps only the header (memory is streamed and discarded): the
// snapshot comes back without memory; `info` still counts the chunks and their bytes.
absl::StatusOr<v1::Snapshot> InspectSnapshotFile(const std::string& path, SnapshotFileInfo* info = nullptr);

}  // namespace vexstate

#endif  // VEXSTATE_SERVER_SNAPSHOT_FILE_H_
