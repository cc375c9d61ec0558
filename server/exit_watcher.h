// ExitWatcher: one thread that waits on the pidfds of every supervised worker and calls a
// callback when a worker process exits — for children and re-attached non-children alike
// (a pidfd becomes readable when its process exits, whoever its parent is).
//
// Thread-safety: every method is thread-safe. Callbacks run on the watcher thread, one at a
// time, without any ExitWatcher lock held; a callback may call Watch/Unwatch. After
// Unwatch(id) returns, the callback of `id` is not started any more (it may be running on
// the watcher thread at that moment if the exit was just seen).
#ifndef VEXSTATE_SERVER_EXIT_WATCHER_H_
#define VEXSTATE_SERVER_EXIT_WATCHER_H_

#include <cstdint>
#include <functional>
#include <map>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "vmm/kvm/fd.h"

namespace vexstate::vexd {

class ExitWatcher {
 public:
  ExitWatcher();
  // Stops the thread; pending callbacks are dropped.
  ~ExitWatcher();
  ExitWatcher(const ExitWatcher&) = delete;
  ExitWatcher& operator=(const ExitWatcher&) = delete;

  // Calls `on_exit` once when the process behind `pidfd` exits (at once if it already has).
  // `pidfd` stays owned by the caller and must stay open until the callback has run or
  // Unwatch has returned. Returns an id for Unwatch.
  uint64_t Watch(int pidfd, std::function<void()> on_exit);
  void Unwatch(uint64_t id);

 private:
  struct Watched {
    int pidfd;
    std::function<void()> on_exit;
  };
  void Run();
  void Wake();

  kvm::ScopedFd wake_;  // eventfd: makes the thread rebuild its poll set
  absl::Mutex mu_;
  std::map<uint64_t, Watched> watched_ ABSL_GUARDED_BY(mu_);
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 1;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_EXIT_WATCHER_H_
