// The chunked memory digest of a migration (MemoryDigest.chunk_root_sha256 in migration.proto):
//   chunk hash  SHA-256 of each kDigestChunkBytes of RAM, in GPA order
//   root        SHA-256 of the chunk hashes, concatenated in order
// Equal roots mean the destination holds exactly the source's memory, like one SHA-256 over
// all of RAM — but a side can keep the chunk hashes up to date while memory is still moving
// and, at the pause point, re-hash only the chunks written since. That takes the hash of all
// of RAM (seconds for GiBs here) out of the downtime.
//
// IncrementalChunkDigest is told which pages were written (MarkWritten: the source from KVM's
// dirty log, the destination from the page runs it applied) and hashes the chunks written
// since their last hash on a background thread (StartHashing), while memory may still be
// written: every write marked after a hash started makes that chunk stale again, so a torn
// read is never trusted. Root() is called once memory is final (source paused, or the
// destination got the final state): it re-hashes what is still stale and returns the root.
//
// Which pages are read: only pages marked written or given as `populated` at construction;
// every other page is known to be zero (a memfd hole, or fresh destination memory) and is
// hashed from a zero buffer, so hashing never faults a hole in (~15 us a page here).
// Correctness rests on every write to guest memory during the migration being marked: guest
// writes are in KVM's dirty log (so are KVM's own writes to guest memory), and the worker
// writes no guest memory while a migration holds its operation lock.
//
// Thread-safety: MarkWritten, StartHashing and Root are called from one thread; the hashing
// thread is internal. The destructor waits for it. The memory must outlive this object.
#ifndef VEXSTATE_MIGRATION_CHUNK_DIGEST_H_
#define VEXSTATE_MIGRATION_CHUNK_DIGEST_H_

#include <array>
#include <atomic>
#include <cstdint>
#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/guest_memory.h"

namespace vexstate::migration {

// 256 KiB: 2,048 chunk hashes (64 KiB to hash for the root) per 512 MiB, 1 MiB per 8 GiB;
// a page dirtied after its chunk was hashed costs one chunk (~0.2 ms) at the pause point.
inline constexpr uint32_t kDigestChunkBytes = 256 << 10;

class IncrementalChunkDigest {
 public:
  // `populated`: one bit per page (as Vm::FetchDirtyPages) of the pages that may hold data
  // now; all other pages must be zero. Those pages' chunks start stale.
  IncrementalChunkDigest(const GuestMemory& memory, absl::Span<const uint64_t> populated,
                         uint32_t chunk_bytes = kDigestChunkBytes);
  ~IncrementalChunkDigest();
  IncrementalChunkDigest(const IncrementalChunkDigest&) = delete;
  IncrementalChunkDigest& operator=(const IncrementalChunkDigest&) = delete;

  uint32_t chunk_bytes() const { return chunk_bytes_; }

  // The pages of `bitmap` (one bit per page) / [first_page, first_page + count) were written
  // (call after the write, not before).
  void MarkWritten(absl::Span<const uint64_t> bitmap);
  void MarkWritten(uint64_t first_page, uint64_t count);
  // Hashes the stale chunks in the background, unless a hash pass is still running (the next
  // call catches up).
  void StartHashing();
  // Like StartHashing, but first waits for a running pass: the stale backlog then never grows
  // beyond what was marked during one pass, so Root() has little left to do even when the
  // hashing thread gets less CPU than the writer (2 cores here, shared with the guests).
  void KeepUp();
  // Memory is final: waits for the background pass, hashes what is stale, returns the 32-byte
  // root. INTERNAL only if OpenSSL fails.
  absl::StatusOr<std::string> Root();

 private:
  using Hash = std::array<uint8_t, 32>;
  void MarkChunk(uint64_t chunk, uint64_t stamp);
  // Hashes every chunk marked at or before `stamp` and not hashed since; false on an OpenSSL
  // failure.
  bool HashStale(uint64_t stamp);
  bool HashChunk(uint64_t chunk, Hash& out) const;
  void WaitForPass();

  const GuestMemory& memory_;
  const uint32_t chunk_bytes_;
  const uint64_t pages_;
  const uint64_t chunks_;
  // One bit per page: may hold data (read it) or is known zero (hash zeros).
  std::unique_ptr<std::atomic<uint64_t>[]> populated_;
  // Per chunk: the stamp of the latest MarkWritten that touched it, and the stamp the stored
  // hash is valid for (stale while marked > hashed).
  std::unique_ptr<std::atomic<uint64_t>[]> marked_;
  std::vector<uint64_t> hashed_;  // written by the hashing pass only
  std::vector<Hash> hashes_;      // likewise
  Hash zero_chunk_{};             // the hash of an all-zero chunk
  uint64_t stamp_ = 1;            // MarkWritten calls so far (+1)
  std::future<bool> pass_;
  bool failed_ = false;
};

// The same root computed from scratch over all of `memory` (holes read as zeros without
// faulting them in): for tests and for checking a root whose chunk size differs from ours.
absl::StatusOr<std::string> ChunkRootSha256(const GuestMemory& memory, uint32_t chunk_bytes = kDigestChunkBytes);

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_CHUNK_DIGEST_H_
