#include "migration/link_timeouts.h"

#include "gtest/gtest.h"

namespace vexstate::migration {
namespace {

TEST(LinkTimeoutsTest, DefaultsFailACutLinkWithinSeconds) {
  const LinkTimeouts timeouts = ScaledLinkTimeouts(1);
  EXPECT_EQ(timeouts.keepalive_time, absl::Seconds(1));
  EXPECT_EQ(timeouts.keepalive_timeout, absl::Seconds(2));
  EXPECT_EQ(timeouts.write_timeout, absl::Seconds(5));
}

TEST(LinkTimeoutsTest, ScaleMultipliesEveryTimeout) {
  const LinkTimeouts timeouts = ScaledLinkTimeouts(10);
  EXPECT_EQ(timeouts.keepalive_time, absl::Seconds(10));
  EXPECT_EQ(timeouts.keepalive_timeout, absl::Seconds(20));
  EXPECT_EQ(timeouts.write_timeout, absl::Seconds(50));
}

TEST(LinkTimeoutsTest, ScaleBelowOneKeepsTheDefaults) {
  EXPECT_EQ(ScaledLinkTimeouts(0).keepalive_timeout, absl::Seconds(2));
  EXPECT_EQ(ScaledLinkTimeouts(-3).write_timeout, absl::Seconds(5));
}

}  // namespace
}  // namespace vexstate::migration
