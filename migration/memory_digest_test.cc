// Holes of the memfd are found without touching them, and hash as the zeros they are.
#include "migration/memory_digest.h"

#include <openssl/sha.h>

#include <cstring>

#include "gtest/gtest.h"
#include "migration/memory_extents.h"

namespace vexstate::migration {
namespace {

constexpr uint64_t kPages = 1024;

std::string FlatSha256(const std::string& bytes) {
  std::string digest(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), bytes.size(),
         reinterpret_cast<unsigned char*>(digest.data()));
  return digest;
}

TEST(MemoryExtents, FreshMemoryIsOneBigHoleAndWritesMakeExtents) {
  absl::StatusOr<GuestMemory> memory = GuestMemory::Create(0x40000000, kPages * kPageSize, "extents");
  ASSERT_TRUE(memory.ok());
  EXPECT_TRUE(PopulatedExtents(*memory)->empty());
  ASSERT_TRUE(memory->WriteU64(0x40000000 + 5 * kPageSize + 8, 1).ok());
  ASSERT_TRUE(memory->WriteU64(0x40000000 + 6 * kPageSize, 1).ok());
  ASSERT_TRUE(memory->WriteU64(0x40000000 + (kPages - 1) * kPageSize, 1).ok());
  std::vector<MemoryExtent> extents = *PopulatedExtents(*memory);
  ASSERT_EQ(extents.size(), 2u);
  EXPECT_EQ(extents[0].offset, 5 * kPageSize);
  EXPECT_EQ(extents[0].length, 2 * kPageSize);
  EXPECT_EQ(extents[1].offset, (kPages - 1) * kPageSize);
  PageBitmap pages = *PopulatedPages(*memory);
  EXPECT_EQ(CountPages(pages), 3u);
  EXPECT_EQ(pages[0], 0x60u);
  EXPECT_EQ(pages[15], 1ull << 63);
}

TEST(MemoryDigest, EqualsTheHashOfTheFlatBytes) {
  absl::StatusOr<GuestMemory> memory = GuestMemory::Create(0, kPages * kPageSize, "digest");
  ASSERT_TRUE(memory.ok());
  std::string flat(kPages * kPageSize, '\0');
  EXPECT_EQ(*MemorySha256(*memory), FlatSha256(flat)) << "all holes";
  for (uint64_t page : {0, 1, 17, 500, 1023}) {
    ASSERT_TRUE(memory->WriteU64(page * kPageSize + 24, 0x1234567800 + page).ok());
    std::memcpy(flat.data() + page * kPageSize + 24, memory->host() + page * kPageSize + 24, 8);
  }
  EXPECT_EQ(*MemorySha256(*memory), FlatSha256(flat));
  EXPECT_EQ(ToHex(*MemorySha256(*memory)), ToHex(FlatSha256(flat)));
  EXPECT_EQ(MemorySha256(*memory)->size(), kSha256Bytes);
  EXPECT_EQ(ToHex(std::string("\x01\xab", 2)), "01ab");
}

}  // namespace
}  // namespace vexstate::migration
