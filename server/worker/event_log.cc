#include "server/worker/event_log.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"

namespace vexstate::worker {

EventLog::EventLog(std::string vm, size_t capacity) : vm_(std::move(vm)), capacity_(std::max<size_t>(capacity, 1)) {}

uint64_t EventLog::Append(v1::Event event) {
  absl::MutexLock lock(&mu_);
  if (closed_) return 0;
  event.set_vm(vm_);
  event.set_sequence(++last_sequence_);
  if (event.time_unix_ns() == 0) event.set_time_unix_ns(absl::ToUnixNanos(absl::Now()));
  events_.push_back(std::move(event));
  if (events_.size() > capacity_) events_.pop_front();
  return last_sequence_;
}

void EventLog::Close() {
  absl::MutexLock lock(&mu_);
  closed_ = true;
}

EventLog::Batch EventLog::Read(uint64_t after, absl::Duration timeout, size_t max_events) const {
  absl::MutexLock lock(&mu_);
  auto ready = [this, after]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return closed_ || last_sequence_ > after; };
  // Readers wake on every Append/Close through the mutex's condition (no separate condvar).
  mu_.AwaitWithTimeout(absl::Condition(&ready), timeout);
  Batch batch;
  if (!events_.empty() && last_sequence_ > after) {
    const uint64_t first_held = events_.front().sequence();
    if (after + 1 < first_held) batch.missed = first_held - (after + 1);
    // Sequences are contiguous in the buffer, so the start is an index computation.
    size_t start = after + 1 <= first_held ? 0 : static_cast<size_t>(after + 1 - first_held);
    for (size_t i = start; i < events_.size() && batch.events.size() < max_events; ++i) {
      batch.events.push_back(events_[i]);
    }
  }
  const bool drained = batch.events.empty() || batch.events.back().sequence() == last_sequence_;
  batch.closed = closed_ && drained;
  return batch;
}

uint64_t EventLog::last_sequence() const {
  absl::MutexLock lock(&mu_);
  return last_sequence_;
}

}  // namespace vexstate::worker
