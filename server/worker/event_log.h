// EventLog: the events of one worker's VM (lifecycle changes, injections, guest reports),
// numbered, kept in a bounded buffer, and handed to any number of readers that wait for more.
//
// Sequence numbers start at 1 and increase by one per event, so a reader that sees a gap knows
// exactly how many events it missed. The buffer keeps the newest `capacity` events; older ones
// are dropped (a reader that asks for them is told how many, never silently skipped).
// Close() ends the log: Append() becomes a no-op and readers, once they have drained what is
// held, see `closed`.
//
// Thread-safety: every method is thread-safe. Append() never blocks on readers (it is called
// from vCPU threads through the console listener).
#ifndef VEXSTATE_SERVER_WORKER_EVENT_LOG_H_
#define VEXSTATE_SERVER_WORKER_EVENT_LOG_H_

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "vexstate/v1/control.pb.h"

namespace vexstate::worker {

class EventLog {
 public:
  static constexpr size_t kDefaultCapacity = 10000;

  // `vm` is stamped into every event's `vm` field.
  explicit EventLog(std::string vm, size_t capacity = kDefaultCapacity);

  // Stamps vm, sequence and (unless already set) time_unix_ns, and stores the event. Returns
  // its sequence, or 0 when the log is closed (the event is dropped).
  uint64_t Append(v1::Event event);

  // No more events; wakes every reader.
  void Close();

  struct Batch {
    std::vector<v1::Event> events;  // in sequence order, all with sequence > `after`
    // Events after `after` that the buffer no longer holds (they came before events[0]).
    uint64_t missed = 0;
    // The log is closed and `events` holds everything that is left after `after`.
    bool closed = false;
  };

  // The events with sequence > `after` (at most `max_events`), waiting up to `timeout` for
  // the first one if there is none yet. Returns at once if the log is closed.
  Batch Read(uint64_t after, absl::Duration timeout, size_t max_events = 1000) const;

  // The sequence of the newest event (0 before the first).
  uint64_t last_sequence() const;

 private:
  const std::string vm_;
  const size_t capacity_;
  mutable absl::Mutex mu_;
  std::deque<v1::Event> events_ ABSL_GUARDED_BY(mu_);
  uint64_t last_sequence_ ABSL_GUARDED_BY(mu_) = 0;
  bool closed_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace vexstate::worker

#endif  // VEXSTATE_SERVER_WORKER_EVENT_LOG_H_
