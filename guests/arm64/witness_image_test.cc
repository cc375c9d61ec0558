// The embedded witness image is the linked guest: right entry instruction, fits its slot.
#include "guests/arm64/witness_image.h"

#include <cstring>

#include "gtest/gtest.h"

namespace vexstate::guests::arm64 {
namespace {

TEST(WitnessImageTest, StartsWithTheEntryPoint) {
  absl::Span<const uint8_t> image = WitnessImage();
  ASSERT_GE(image.size(), 4u);
  uint32_t first;
  std::memcpy(&first, image.data(), sizeof(first));
  // `msr daifset, #0xf`: _start is the image's first byte (witness.lds.S asserts it too).
  EXPECT_EQ(first, 0xd5034fdfu);
}

TEST(WitnessImageTest, FitsBetweenImageOffsetAndWorkingSet) {
  EXPECT_LE(kWitnessLoadAddress + WitnessImage().size(),
            uint64_t{VEX_ARM64_RAM_BASE} + VEX_WORKSET_OFFSET);
  EXPECT_EQ(kWitnessLoadAddress % 4096, 0u);
}

}  // namespace
}  // namespace vexstate::guests::arm64
