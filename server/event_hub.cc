#include "server/event_hub.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"

namespace vexstate::vexd {

EventHub::EventHub(size_t capacity) : capacity_(std::max<size_t>(capacity, 1)) {}

uint64_t EventHub::Publish(v1::Event event) {
  absl::MutexLock lock(&mu_);
  if (closed_) return 0;
  event.set_sequence(++last_sequence_);
  if (event.time_unix_ns() == 0) event.set_time_unix_ns(absl::ToUnixNanos(absl::Now()));
  events_.push_back(std::move(event));
  if (events_.size() > capacity_) events_.pop_front();
  return last_sequence_;
}

void EventHub::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

EventHub::Batch EventHub::Read(uint64_t after, const std::string& vm, absl::Duration timeout, size_t max_events) const {
  absl::MutexLock lock(&mu_);
  auto ready = [this, after]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return closed_ || last_sequence_ > after; };
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  Batch batch;
  batch.cursor = after;
  if (!events_.empty() && last_sequence_ > after) {
    const uint64_t first_held = events_.front().sequence();
    if (after + 1 < first_held) batch.missed = first_held - (after + 1);
    // The history holds contiguous sequences, so the first one to look at is found by index.
    size_t i = after + 1 <= first_held ? 0 : static_cast<size_t>(after + 1 - first_held);
    for (; i < events_.size() && batch.events.size() < max_events; ++i) {
      const v1::Event& event = events_[i];
      batch.cursor = event.sequence();
      if (vm.empty() || event.vm() == vm) batch.events.push_back(event);
    }
  }
  batch.closed = closed_ && batch.cursor >= last_sequence_;
  return batch;
}

uint64_t EventHub::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return last_sequence_;
}

}  // namespace vexstate::vexd
