#include "server/exit_watcher.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

namespace vexstate::vexd {

ExitWatcher::ExitWatcher() : wake_(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  thread_ = std::thread([this] { Run(); });
}

ExitWatcher::~ExitWatcher() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
  }
  Wake();
  thread_.join();
}

uint64_t ExitWatcher::Watch(int pidfd, std::function<void()> on_exit) {
  uint64_t id;
  {
    absl::MutexLock lock(&mu_);
    id = next_id_++;
    watched_[id] = Watched{pidfd, std::move(on_exit)};
  }
  Wake();
  return id;
}

void ExitWatcher::Unwatch(uint64_t id) {
  {
    absl::MutexLock lock(&mu_);
    watched_.erase(id);
  }
  Wake();
}

void ExitWatcher::Wake() {
  const uint64_t one = 1;
  (void)!write(wake_.get(), &one, sizeof(one));
}

void ExitWatcher::Run() {
  for (;;) {
    std::vector<pollfd> fds = {{wake_.get(), POLLIN, 0}};
    std::vector<uint64_t> ids = {0};
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      for (const auto& [id, watched] : watched_) {
        fds.push_back({watched.pidfd, POLLIN, 0});
        ids.push_back(id);
      }
    }
    if (poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      return;  // only EFAULT/EINVAL/ENOMEM: nothing sensible is left to do
    }
    if (fds[0].revents != 0) {
      uint64_t count;
      (void)!read(wake_.get(), &count, sizeof(count));
    }
    for (size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents == 0) continue;
      std::function<void()> on_exit;
      {
        absl::MutexLock lock(&mu_);
        // Unwatched since the poll set was built: the fd may already belong to someone else.
        auto it = watched_.find(ids[i]);
        if (it == watched_.end()) continue;
        on_exit = std::move(it->second.on_exit);
        watched_.erase(it);
      }
      on_exit();
    }
  }
}

}  // namespace vexstate::vexd
