// The chunked digest: its root is the SHA-256 of the chunk hashes, holes hash as zeros, and an
// incremental digest told about every write ends with the root computed from scratch — also
// when writes land while a background pass hashes.
#include "migration/chunk_digest.h"

#include <openssl/sha.h>

#include <cstring>

#include "gtest/gtest.h"
#include "migration/memory_extents.h"
#include "migration/page_codec.h"

namespace vexstate::migration {
namespace {

constexpr uint64_t kPages = 1000;  // not a whole number of chunks: the last one is short
constexpr uint32_t kChunk = 16 * kPageSize;

std::string Sha(const void* data, size_t size) {
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256(static_cast<const unsigned char*>(data), size, reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string FlatRoot(const std::string& flat) {
  std::string hashes;
  for (size_t at = 0; at < flat.size(); at += kChunk) {
    hashes += Sha(flat.data() + at, std::min<size_t>(kChunk, flat.size() - at));
  }
  return Sha(hashes.data(), hashes.size());
}

std::string Flat(const GuestMemory& memory) {
  return std::string(reinterpret_cast<const char*>(memory.host()), memory.size());
}

GuestMemory NewMemory() {
  absl::StatusOr<GuestMemory> memory = GuestMemory::Create(0, kPages * kPageSize, "chunks");
  EXPECT_TRUE(memory.ok());
  return std::move(*memory);
}

TEST(ChunkRootSha256, IsTheHashOfTheChunkHashes) {
  GuestMemory memory = NewMemory();
  const std::string zeros(kPages * kPageSize, '\0');
  EXPECT_EQ(*ChunkRootSha256(memory, kChunk), FlatRoot(zeros)) << "all holes";
  for (uint64_t page : {0, 17, 500, 999}) ASSERT_TRUE(memory.WriteU64(page * kPageSize + 8, page + 1).ok());
  EXPECT_EQ(*ChunkRootSha256(memory, kChunk), FlatRoot(Flat(memory)));
  EXPECT_NE(*ChunkRootSha256(memory, kChunk), FlatRoot(zeros));
  EXPECT_FALSE(ChunkRootSha256(memory, 1000).ok()) << "not whole pages";
}

TEST(IncrementalChunkDigest, FollowsMarkedWritesAndIgnoresNothing) {
  GuestMemory memory = NewMemory();
  ASSERT_TRUE(memory.WriteU64(3 * kPageSize, 7).ok());
  IncrementalChunkDigest digest(memory, *PopulatedPages(memory), kChunk);
  digest.StartHashing();
  // Writes while (or after) the pass runs, each marked after it is made.
  for (uint64_t page = 0; page < kPages; page += 37) {
    ASSERT_TRUE(memory.WriteU64(page * kPageSize + 16, page * 3 + 1).ok());
    digest.MarkWritten(page, 1);
    if (page % 5 == 0) digest.StartHashing();
  }
  PageBitmap bitmap((kPages + 63) / 64, 0);
  ASSERT_TRUE(memory.WriteU64(640 * kPageSize, 9).ok());
  bitmap[10] = 1;  // page 640
  digest.MarkWritten(bitmap);
  EXPECT_EQ(*digest.Root(), FlatRoot(Flat(memory)));
}

TEST(IncrementalChunkDigest, AnUnmarkedWriteIsMissedWhichIsWhyEveryWriteMustBeMarked) {
  // The negative control: the digest trusts the marks. The migration marks every write (dirty
  // log, applied runs); a write it is not told about gives a different root than the memory.
  GuestMemory memory = NewMemory();
  IncrementalChunkDigest digest(memory, *PopulatedPages(memory), kChunk);
  digest.StartHashing();
  absl::StatusOr<std::string> before = ChunkRootSha256(memory, kChunk);
  ASSERT_TRUE(memory.WriteU64(200 * kPageSize, 1).ok());
  const std::string root = *digest.Root();
  EXPECT_EQ(root, *before);
  EXPECT_NE(root, *ChunkRootSha256(memory, kChunk));
}

}  // namespace
}  // namespace vexstate::migration
