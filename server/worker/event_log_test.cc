#include "server/worker/event_log.h"

#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace vexstate::worker {
namespace {

v1::Event Lifecycle(v1::VmRunState state) {
  v1::Event event;
  event.mutable_lifecycle()->set_state(state);
  return event;
}

TEST(EventLog, NumbersAndStampsEvents) {
  EventLog log("vm1");
  EXPECT_EQ(log.last_sequence(), 0u);
  EXPECT_EQ(log.Append(Lifecycle(v1::VM_CREATED)), 1u);
  v1::Event timed = Lifecycle(v1::VM_RUNNING);
  timed.set_time_unix_ns(42);
  EXPECT_EQ(log.Append(timed), 2u);
  EventLog::Batch batch = log.Read(0, absl::ZeroDuration());
  ASSERT_EQ(batch.events.size(), 2u);
  EXPECT_EQ(batch.events[0].vm(), "vm1");
  EXPECT_EQ(batch.events[0].sequence(), 1u);
  EXPECT_GT(batch.events[0].time_unix_ns(), 0);
  EXPECT_EQ(batch.events[1].time_unix_ns(), 42) << "a time set by the producer is kept";
  EXPECT_EQ(batch.missed, 0u);
  EXPECT_FALSE(batch.closed);
  EXPECT_EQ(log.Read(1, absl::ZeroDuration()).events.size(), 1u);
  EXPECT_TRUE(log.Read(2, absl::ZeroDuration()).events.empty());
}

TEST(EventLog, ReadWaitsForTheNextAppend) {
  EventLog log("vm1");
  std::thread producer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    log.Append(Lifecycle(v1::VM_RUNNING));
  });
  const absl::Time start = absl::Now();
  EventLog::Batch batch = log.Read(0, absl::Seconds(10));
  producer.join();
  ASSERT_EQ(batch.events.size(), 1u);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5)) << "woken by the append, not by the timeout";
}

TEST(EventLog, ReadTimesOutEmpty) {
  EventLog log("vm1");
  EventLog::Batch batch = log.Read(0, absl::Milliseconds(20));
  EXPECT_TRUE(batch.events.empty());
  EXPECT_FALSE(batch.closed);
}

TEST(EventLog, DroppedEventsAreCountedNotHidden) {
  EventLog log("vm1", 3);
  for (int i = 0; i < 5; ++i) log.Append(Lifecycle(v1::VM_RUNNING));
  EventLog::Batch batch = log.Read(0, absl::ZeroDuration());
  EXPECT_EQ(batch.missed, 2u);
  ASSERT_EQ(batch.events.size(), 3u);
  EXPECT_EQ(batch.events[0].sequence(), 3u);
  EXPECT_EQ(batch.events[2].sequence(), 5u);
  batch = log.Read(3, absl::ZeroDuration());
  EXPECT_EQ(batch.missed, 0u);
  ASSERT_EQ(batch.events.size(), 2u);
  EXPECT_EQ(batch.events[0].sequence(), 4u);
}

TEST(EventLog, MaxEventsLimitsABatch) {
  EventLog log("vm1");
  for (int i = 0; i < 10; ++i) log.Append(Lifecycle(v1::VM_RUNNING));
  EventLog::Batch batch = log.Read(0, absl::ZeroDuration(), 4);
  ASSERT_EQ(batch.events.size(), 4u);
  EXPECT_EQ(batch.events.back().sequence(), 4u);
}

TEST(EventLog, CloseWakesReadersAfterTheyDrain) {
  EventLog log("vm1");
  log.Append(Lifecycle(v1::VM_RUNNING));
  std::thread closer([&] {
    absl::SleepFor(absl::Milliseconds(50));
    log.Append(Lifecycle(v1::VM_STOPPED));
    log.Close();
  });
  EventLog::Batch first = log.Read(0, absl::ZeroDuration());
  ASSERT_EQ(first.events.size(), 1u);
  EXPECT_FALSE(first.closed);
  uint64_t cursor = 1;
  bool closed = false;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!closed && absl::Now() < deadline) {
    EventLog::Batch batch = log.Read(cursor, absl::Seconds(10));
    if (!batch.events.empty()) cursor = batch.events.back().sequence();
    closed = batch.closed;
  }
  closer.join();
  EXPECT_TRUE(closed);
  EXPECT_EQ(cursor, 2u) << "the last event before Close is delivered";
  EXPECT_EQ(log.Append(Lifecycle(v1::VM_RUNNING)), 0u) << "a closed log takes nothing";
  EXPECT_TRUE(log.Read(2, absl::Seconds(10)).closed);
}

}  // namespace
}  // namespace vexstate::worker
