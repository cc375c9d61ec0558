#include "migration/crc32c.h"

#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vexstate::migration {
namespace {

// RFC 3720 appendix B.4 (iSCSI) test vectors, plus the usual check value.
TEST(Crc32c, KnownVectors) {
  EXPECT_EQ(Crc32c("123456789", 9), 0xE3069283u);
  std::vector<uint8_t> bytes(32, 0);
  EXPECT_EQ(Crc32c(bytes.data(), bytes.size()), 0x8A9136AAu);
  std::fill(bytes.begin(), bytes.end(), 0xff);
  EXPECT_EQ(Crc32c(bytes.data(), bytes.size()), 0x62A8AB43u);
  for (int i = 0; i < 32; ++i) bytes[i] = static_cast<uint8_t>(i);
  EXPECT_EQ(Crc32c(bytes.data(), bytes.size()), 0x46DD794Eu);
  for (int i = 0; i < 32; ++i) bytes[i] = static_cast<uint8_t>(31 - i);
  EXPECT_EQ(Crc32c(bytes.data(), bytes.size()), 0x113FDB5Cu);
  EXPECT_EQ(Crc32c(nullptr, 0), 0u);
}

TEST(Crc32c, ExtendEqualsWholeAndPortableEqualsFast) {
  std::mt19937 random(7);
  std::string data(10000, '\0');
  for (char& c : data) c = static_cast<char>(random());
  for (size_t length : {0, 1, 7, 8, 9, 63, 64, 4095, 4096, 10000}) {
    const uint32_t whole = Crc32c(data.data(), length);
    EXPECT_EQ(Crc32cExtendPortable(0, data.data(), length), whole) << length;
    for (size_t split : {size_t{0}, length / 3, length}) {
      const uint32_t first = Crc32cExtend(0, data.data(), split);
      EXPECT_EQ(Crc32cExtend(first, data.data() + split, length - split), whole) << length << " " << split;
    }
  }
}

TEST(Crc32c, EveryFlippedBitChangesTheValue) {
  std::string data(64, 'x');
  const uint32_t clean = Crc32c(data.data(), data.size());
  for (size_t i = 0; i < data.size() * 8; ++i) {
    data[i / 8] ^= static_cast<char>(1 << (i % 8));
    EXPECT_NE(Crc32c(data.data(), data.size()), clean) << "bit " << i;
    data[i / 8] ^= static_cast<char>(1 << (i % 8));
  }
}

}  // namespace
}  // namespace vexstate::migration
