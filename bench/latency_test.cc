#include "bench/latency.h"

#include "gtest/gtest.h"

namespace vexstate::bench {
namespace {

TEST(LatencyRecorderTest, NearestRankPercentiles) {
  LatencyRecorder r;
  for (int i = 100; i >= 1; --i) r.Add(i * 1000);  // 1..100 us, unsorted
  EXPECT_EQ(r.PercentileNs(0), 1000);
  EXPECT_EQ(r.PercentileNs(50), 50000);
  EXPECT_EQ(r.PercentileNs(99), 99000);
  EXPECT_EQ(r.PercentileNs(100), 100000);
}

TEST(LatencyRecorderTest, AddAfterPercentileResorts) {
  LatencyRecorder r;
  r.Add(5);
  EXPECT_EQ(r.PercentileNs(100), 5);
  r.Add(1);
  EXPECT_EQ(r.PercentileNs(0), 1);
  EXPECT_EQ(r.PercentileNs(100), 5);
}

TEST(LatencyRecorderTest, EmptyIsZero) {
  LatencyRecorder r;
  EXPECT_EQ(r.PercentileNs(50), 0);
}

}  // namespace
}  // namespace vexstate::bench
