#include "server/event_hub.h"

#include <thread>

#include "absl/time/clock.h"
#include "gtest/gtest.h"

namespace vexstate::vexd {
namespace {

v1::Event EventOf(const std::string& vm) {
  v1::Event event;
  event.set_vm(vm);
  event.mutable_lifecycle()->set_state(v1::VM_RUNNING);
  return event;
}

TEST(EventHub, NumbersEventsAndFiltersByVm) {
  EventHub hub;
  EXPECT_EQ(hub.Publish(EventOf("a")), 1u);
  EXPECT_EQ(hub.Publish(EventOf("b")), 2u);
  EXPECT_EQ(hub.Publish(EventOf("a")), 3u);
  EventHub::Batch all = hub.Read(0, "", absl::ZeroDuration());
  ASSERT_EQ(all.events.size(), 3u);
  EXPECT_GT(all.events[0].time_unix_ns(), 0);
  EXPECT_EQ(all.cursor, 3u);
  EventHub::Batch only_a = hub.Read(0, "a", absl::ZeroDuration());
  ASSERT_EQ(only_a.events.size(), 2u);
  EXPECT_EQ(only_a.events[1].sequence(), 3u);
  EventHub::Batch after_first = hub.Read(1, "b", absl::ZeroDuration());
  ASSERT_EQ(after_first.events.size(), 1u);
  EXPECT_EQ(after_first.cursor, 3u);  // skipped past the non-matching event too
  EXPECT_TRUE(hub.Read(3, "", absl::ZeroDuration()).events.empty());
}

TEST(EventHub, ReportsWhatABoundedHistoryLost) {
  EventHub hub(2);
  for (int i = 0; i < 5; ++i) hub.Publish(EventOf("a"));
  EventHub::Batch batch = hub.Read(1, "", absl::ZeroDuration());
  EXPECT_EQ(batch.missed, 2u);  // 2 and 3 are gone
  ASSERT_EQ(batch.events.size(), 2u);
  EXPECT_EQ(batch.events[0].sequence(), 4u);
}

TEST(EventHub, ReadersWaitAndCloseWakesThem) {
  EventHub hub;
  std::thread publisher([&hub] {
    absl::SleepFor(absl::Milliseconds(50));
    hub.Publish(EventOf("a"));
  });
  EventHub::Batch batch = hub.Read(0, "", absl::Seconds(10));
  publisher.join();
  EXPECT_EQ(batch.events.size(), 1u);

  std::thread closer([&hub] {
    absl::SleepFor(absl::Milliseconds(50));
    hub.Close();
  });
  const absl::Time start = absl::Now();
  EventHub::Batch closed = hub.Read(1, "", absl::Seconds(10));
  closer.join();
  EXPECT_TRUE(closed.closed);
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(hub.Publish(EventOf("a")), 0u);
}

// Publishing never waits for readers, however many there are or however slow.
TEST(EventHub, SlowReadersDoNotBlockPublishers) {
  EventHub hub(100);
  const absl::Time start = absl::Now();
  for (int i = 0; i < 10000; ++i) hub.Publish(EventOf("a"));
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(hub.Read(0, "", absl::ZeroDuration()).missed, 9900u);
}

}  // namespace
}  // namespace vexstate::vexd
