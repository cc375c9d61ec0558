// EventHub: every event of every VM of this vexd (worker events republished, plus vexd's own
// lifecycle events such as CRASHED), numbered by vexd, kept in a bounded history, and read
// by any number of WatchEvents streams, each at its own pace.
//
// Sequence numbers start at 1 and increase by one per event (per vexd process). Readers hold
// a cursor (the last sequence they have seen) instead of a queue: Publish() only appends, so
// a slow reader never blocks the publishers or the other readers. A reader that falls
// further behind than the history holds is told how many events it missed (`missed`), never
// silently skipped.
//
// Thread-safety: every method is thread-safe. Publish() never blocks on readers.
#ifndef VEXSTATE_SERVER_EVENT_HUB_H_
#define VEXSTATE_SERVER_EVENT_HUB_H_

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "vexstate/v1/control.pb.h"

namespace vexstate::vexd {

class EventHub {
 public:
  static constexpr size_t kDefaultCapacity = 10000;

  explicit EventHub(size_t capacity = kDefaultCapacity);

  // Stamps the next sequence and, unless set, time_unix_ns; stores the event and wakes the
  // readers. Returns the sequence, or 0 once the hub is closed (the event is dropped).
  uint64_t Publish(v1::Event event);

  // No more events (vexd is shutting down): wakes every reader.
  void Close();

  struct Batch {
    // Events with sequence > `after` for the VM asked for (all VMs when empty), in order.
    std::vector<v1::Event> events;
    // The cursor to pass next time: the last sequence examined, matching or not.
    uint64_t cursor = 0;
    // Events (of any VM) after `after` that the history no longer holds.
    uint64_t missed = 0;
    // Closed, and nothing is left after `cursor`.
    bool closed = false;
  };

  // Waits up to `timeout` for an event after `after`, then returns what is there (at most
  // `max_events` matching events). Returns at once when closed.
  Batch Read(uint64_t after, const std::string& vm, absl::Duration timeout, size_t max_events = 1000) const;

  // The newest sequence (0 before the first event): a cursor that skips the history.
  uint64_t last_sequence() const;

 private:
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<v1::Event> events_ ABSL_GUARDED_BY(mu_);
  uint64_t last_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_EVENT_HUB_H_
