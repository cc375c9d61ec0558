// Linux process facts vexd's supervision relies on: /proc/<pid>/stat start times, pidfds,
// and how a process ended, in words.
//
// A pid alone is not an identity (pids are recycled). vexd identifies a worker by (pid,
// start time from /proc/<pid>/stat) and then holds a pidfd (pidfd_open(2), Linux 5.3), which
// refers to that one process for as long as it is open: it becomes readable when the
// process exits, for children and non-children alike, and signals sent through it can
// never reach a recycled pid.
//
// Thread-safety: free functions without shared state.
#ifndef VEXSTATE_SERVER_PROCESS_H_
#define VEXSTATE_SERVER_PROCESS_H_

#include <signal.h>
#include <sys/types.h>

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "vmm/kvm/fd.h"

namespace vexstate::vexd {

struct ProcStat {
  char state = '?';         // field 3: R, S, D, Z (zombie), ...
  uint64_t start_time = 0;  // field 22: clock ticks since boot
};

// Parses the text of /proc/<pid>/stat (exposed for tests). INVALID_ARGUMENT if malformed.
absl::StatusOr<ProcStat> ParseProcStat(const std::string& text);
// Reads /proc/<pid>/stat. NOT_FOUND when there is no such process.
absl::StatusOr<ProcStat> ReadProcStat(pid_t pid);

// pidfd_open(pid). NOT_FOUND when there is no such process. The fd is close-on-exec.
absl::StatusOr<kvm::ScopedFd> OpenPidFd(pid_t pid);
// True once the process behind `pidfd` has exited (zombies included). Waits up to `timeout`.
bool WaitPidFdExit(int pidfd, absl::Duration timeout);
// pidfd_send_signal. NOT_FOUND if the process is gone.
absl::Status SignalPidFd(int pidfd, int signal);

// Reaps the exited child behind `pidfd` (waitid P_PIDFD) and describes how it ended:
// "exited with status 2", "killed by signal 9 (SIGKILL)". For a process that is not our
// child (a worker re-attached after a vexd restart), the exit status is not ours to know:
// the description says so.
std::string ReapAndDescribeExit(int pidfd, bool is_child);

// "SIGKILL" for 9, "signal 64" for what has no name.
std::string SignalName(int signal);

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_PROCESS_H_
