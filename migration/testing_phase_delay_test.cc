#include "migration/testing_phase_delay.h"

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace vexstate::migration {
namespace {

TEST(TestingPhaseDelay, OffUnlessSet) {
  EXPECT_FALSE(TestingPhaseDelay::Parse(nullptr).active());
  EXPECT_FALSE(TestingPhaseDelay::Parse("").active());
}

TEST(TestingPhaseDelay, ParsesPhaseWithOrWithoutPrefix) {
  TestingPhaseDelay short_name = TestingPhaseDelay::Parse("STOP_AND_COPY:1500");
  EXPECT_EQ(short_name.phase(), v1::MIGRATION_STOP_AND_COPY);
  EXPECT_EQ(short_name.delay(), absl::Milliseconds(1500));
  EXPECT_EQ(TestingPhaseDelay::Parse("MIGRATION_BEGIN:0").phase(), v1::MIGRATION_BEGIN);
}

TEST(TestingPhaseDelay, MalformedIsIgnored) {
  for (const char* bad : {"PRECOPY", "PRECOPY:", "PRECOPY:-1", "NOPE:100", ":100", "PHASE_UNSPECIFIED:5",
                          "MIGRATION_PHASE_UNSPECIFIED:5", "PRECOPY:1s"}) {
    EXPECT_FALSE(TestingPhaseDelay::Parse(bad).active()) << bad;
  }
}

TEST(TestingPhaseDelay, HoldsOnlyItsPhaseAndOnlyOnce) {
  TestingPhaseDelay hook = TestingPhaseDelay::Parse("PREPARE:200");
  absl::Time start = absl::Now();
  hook.At(v1::MIGRATION_BEGIN);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(100)) << "another phase is not held";
  start = absl::Now();
  hook.At(v1::MIGRATION_PREPARE);
  EXPECT_GE(absl::Now() - start, absl::Milliseconds(200));
  start = absl::Now();
  hook.At(v1::MIGRATION_PREPARE);
  EXPECT_LT(absl::Now() - start, absl::Milliseconds(100)) << "held once per migration";
}

}  // namespace
}  // namespace vexstate::migration
