// Starting one VMM worker process (server/worker/, binary vexd_worker) and waiting until it
// is ready or has failed.
//
// The worker's contract:
//   vexd_worker --socket PATH --name NAME
//               (--config_file VMCONFIG [--start] | --restore_file SNAPSHOT [--allow_degrade] [--resume])
// On success it prints "vexd-worker: ready <socket>" on stdout and serves VmWorker on the
// socket. On a startup failure it prints exactly one line
// "vexd-worker: error: <GRPC_CODE_NAME>: <message>" on stderr and exits with status 2.
//
// The worker runs in its own session (setsid), with stdin from /dev/null and stdout and
// stderr appended to its log file, so it outlives vexd and never writes to a pipe nobody
// reads. vexd finds the ready or error line by reading the log from where it ended before
// the spawn. The worker gets an empty signal mask and default dispositions, whatever vexd
// blocks or ignores, so SIGTERM stops it.
//
// Thread-safety: LaunchWorker may run concurrently for different workers (posix_spawn is
// safe in a multithreaded process; vexd's own fds are close-on-exec, and every fd above 2 is
// closed in the child anyway).
#ifndef VEXSTATE_SERVER_WORKER_LAUNCHER_H_
#define VEXSTATE_SERVER_WORKER_LAUNCHER_H_

#include <sys/types.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "vmm/kvm/fd.h"

namespace vexstate::vexd {

struct WorkerLaunch {
  std::string binary;
  std::string name;
  std::string socket_path;
  std::string log_path;
  // The mode arguments: {"--config_file", PATH, "--start"} or {"--restore_file", PATH, ...}.
  std::vector<std::string> mode_args;
  absl::Duration ready_timeout = absl::Seconds(60);
};

struct LaunchedWorker {
  pid_t pid = 0;
  uint64_t start_time = 0;  // /proc/<pid>/stat field 22
  kvm::ScopedFd pidfd;
};

// Spawns the worker and waits for its ready line. On failure the worker is gone (reaped, or
// killed when it did not become ready in time) and the status is the worker's own error
// line's (code and message), or says how the process ended and quotes its last log lines.
absl::StatusOr<LaunchedWorker> LaunchWorker(const WorkerLaunch& launch);

// What one line of worker output means. Exposed for tests.
struct WorkerLine {
  enum class Kind { kOther, kReady, kError } kind = Kind::kOther;
  absl::Status error;  // kError: the status the line names
};
WorkerLine ParseWorkerLine(absl::string_view line);

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_WORKER_LAUNCHER_H_
