#include "server/worker_launcher.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "server/process.h"

extern char** environ;

namespace vexstate::vexd {
namespace {

constexpr absl::string_view kReadyPrefix = "vexd-worker: ready";
constexpr absl::string_view kErrorPrefix = "vexd-worker: error: ";
constexpr size_t kTailLines = 5;

// Owns posix_spawn's attribute and file-action objects.
class SpawnSetup {
 public:
  SpawnSetup() {
    posix_spawnattr_init(&attr_);
    posix_spawn_file_actions_init(&actions_);
  }
  ~SpawnSetup() {
    posix_spawn_file_actions_destroy(&actions_);
    posix_spawnattr_destroy(&attr_);
  }
  posix_spawnattr_t* attr() { return &attr_; }
  posix_spawn_file_actions_t* actions() { return &actions_; }

 private:
  posix_spawnattr_t attr_;
  posix_spawn_file_actions_t actions_;
};

absl::StatusOr<pid_t> Spawn(const WorkerLaunch& launch) {
  std::vector<std::string> args = {launch.binary, "--socket", launch.socket_path, "--name", launch.name};
  args.insert(args.end(), launch.mode_args.begin(), launch.mode_args.end());
  std::vector<char*> argv;
  for (std::string& arg : args) argv.push_back(arg.data());
  argv.push_back(nullptr);

  SpawnSetup setup;
  // Its own session: the worker survives vexd and a terminal's or test runner's signals to
  // vexd's process group. A clean signal state: vexd blocks SIGTERM/SIGINT (it waits for
  // them with sigwait) and ignores SIGPIPE, and both would otherwise be inherited.
  sigset_t none;
  sigemptyset(&none);
  sigset_t all;
  sigfillset(&all);
  int rc = posix_spawnattr_setflags(setup.attr(), POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  if (rc == 0) rc = posix_spawnattr_setsigmask(setup.attr(), &none);
  if (rc == 0) rc = posix_spawnattr_setsigdefault(setup.attr(), &all);
  if (rc == 0) rc = posix_spawn_file_actions_addopen(setup.actions(), 0, "/dev/null", O_RDONLY, 0);
  if (rc == 0) {
    rc = posix_spawn_file_actions_addopen(setup.actions(), 1, launch.log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND,
                                          0600);
  }
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(setup.actions(), 1, 2);
  if (rc == 0) rc = posix_spawn_file_actions_addclosefrom_np(setup.actions(), 3);
  if (rc != 0) return absl::ErrnoToStatus(rc, "preparing posix_spawn of the worker");

  pid_t pid = 0;
  rc = posix_spawn(&pid, launch.binary.c_str(), setup.actions(), setup.attr(), argv.data(), environ);
  if (rc != 0) return absl::ErrnoToStatus(rc, absl::StrCat("spawning worker ", launch.binary));
  return pid;
}

// Reads what the log gained since `*offset`; returns the complete lines, advancing `*offset`
// past them.
std::vector<std::string> NewLines(int fd, off_t* offset) {
  std::string text;
  char buffer[4096];
  for (;;) {
    const ssize_t n = pread(fd, buffer, sizeof(buffer), *offset + static_cast<off_t>(text.size()));
    if (n <= 0) break;
    text.append(buffer, static_cast<size_t>(n));
  }
  const size_t last_newline = text.rfind('\n');
  if (last_newline == std::string::npos) return {};
  *offset += static_cast<off_t>(last_newline + 1);
  return absl::StrSplit(text.substr(0, last_newline), '\n');
}

}  // namespace

WorkerLine ParseWorkerLine(absl::string_view line) {
  WorkerLine parsed;
  line = absl::StripTrailingAsciiWhitespace(line);
  if (absl::StartsWith(line, kReadyPrefix)) {
    parsed.kind = WorkerLine::Kind::kReady;
  } else if (absl::ConsumePrefix(&line, kErrorPrefix)) {
    parsed.kind = WorkerLine::Kind::kError;
    const size_t colon = line.find(": ");
    const absl::string_view code_name = line.substr(0, colon);
    const absl::string_view message = colon == absl::string_view::npos ? "" : line.substr(colon + 2);
    absl::StatusCode code = absl::StatusCode::kUnknown;
    for (int c = 1; c <= 16; ++c) {
      if (absl::StatusCodeToString(static_cast<absl::StatusCode>(c)) == code_name) {
        code = static_cast<absl::StatusCode>(c);
      }
    }
    parsed.error = code == absl::StatusCode::kUnknown && message.empty() ? absl::UnknownError(std::string(line))
                                                                         : absl::Status(code, std::string(message));
  }
  return parsed;
}

absl::StatusOr<LaunchedWorker> LaunchWorker(const WorkerLaunch& launch) {
  if (access(launch.binary.c_str(), X_OK) != 0) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "worker binary %s is not executable (%s): install vexd_worker next to vexd or pass --worker_binary",
        launch.binary, std::strerror(errno)));
  }
  // The log is appended to across restarts of a VM: remember where this run's output begins.
  kvm::ScopedFd log(open(launch.log_path.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600));
  if (!log.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("opening worker log ", launch.log_path));
  struct stat st;
  off_t offset = fstat(log.get(), &st) == 0 ? st.st_size : 0;

  absl::StatusOr<pid_t> pid = Spawn(launch);
  if (!pid.ok()) return pid.status();
  LaunchedWorker worker;
  worker.pid = *pid;
  // A child stays a zombie until reaped, so its pidfd and /proc entry exist even if it has
  // already died.
  absl::StatusOr<kvm::ScopedFd> pidfd = OpenPidFd(worker.pid);
  if (!pidfd.ok()) return pidfd.status();
  worker.pidfd = std::move(*pidfd);
  absl::StatusOr<ProcStat> stat = ReadProcStat(worker.pid);
  if (!stat.ok()) return stat.status();
  worker.start_time = stat->start_time;

  const std::string what =
      absl::StrFormat("worker of VM %s (pid %d, log %s)", launch.name, worker.pid, launch.log_path);
  std::vector<std::string> tail;
  const absl::Time deadline = absl::Now() + launch.ready_timeout;
  for (;;) {
    const bool exited = WaitPidFdExit(worker.pidfd.get(), absl::Milliseconds(20));
    for (std::string& line : NewLines(log.get(), &offset)) {
      WorkerLine parsed = ParseWorkerLine(line);
      if (parsed.kind == WorkerLine::Kind::kReady) return worker;
      if (parsed.kind == WorkerLine::Kind::kError) {
        // The worker exits right after its error line; reap it so no zombie is left.
        if (!WaitPidFdExit(worker.pidfd.get(), absl::Seconds(5)))
          SignalPidFd(worker.pidfd.get(), SIGKILL).IgnoreError();
        WaitPidFdExit(worker.pidfd.get(), absl::Seconds(5));
        ReapAndDescribeExit(worker.pidfd.get(), /*is_child=*/true);
        return parsed.error;
      }
      tail.push_back(std::move(line));
      if (tail.size() > kTailLines) tail.erase(tail.begin());
    }
    if (exited) {
      const std::string how = ReapAndDescribeExit(worker.pidfd.get(), /*is_child=*/true);
      return absl::InternalError(
          absl::StrFormat("%s %s before it was ready; its last output: [%s]", what, how, absl::StrJoin(tail, " | ")));
    }
    if (absl::Now() > deadline) {
      SignalPidFd(worker.pidfd.get(), SIGKILL).IgnoreError();
      WaitPidFdExit(worker.pidfd.get(), absl::Seconds(5));
      ReapAndDescribeExit(worker.pidfd.get(), /*is_child=*/true);
      return absl::UnavailableError(absl::StrFormat("%s was not ready within %s and was killed; its last output: [%s]",
                                                    what, absl::FormatDuration(launch.ready_timeout),
                                                    absl::StrJoin(tail, " | ")));
    }
  }
}

}  // namespace vexstate::vexd
