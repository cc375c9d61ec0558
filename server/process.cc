#include "server/process.h"

#include <poll.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"

#ifndef P_PIDFD
#define P_PIDFD 3  // waitid(2) id type, Linux 5.4
#endif

namespace vexstate::vexd {

absl::StatusOr<ProcStat> ParseProcStat(const std::string& text) {
  // "pid (comm) state ppid ...": comm may hold spaces and ')' itself, so the fields start
  // after the last ')' (proc(5)).
  const size_t close = text.rfind(')');
  if (close == std::string::npos) return absl::InvalidArgumentError("/proc stat: no ')' after comm");
  const absl::string_view after_comm = absl::string_view(text).substr(close + 1);
  std::vector<absl::string_view> fields = absl::StrSplit(after_comm, ' ', absl::SkipEmpty());
  // fields[0] is field 3 (state); field 22 (starttime) is fields[19].
  if (fields.size() < 20) {
    return absl::InvalidArgumentError(absl::StrFormat("/proc stat: %d fields after comm, need 20", fields.size()));
  }
  ProcStat stat;
  stat.state = fields[0].empty() ? '?' : fields[0][0];
  if (!absl::SimpleAtoi(fields[19], &stat.start_time)) {
    return absl::InvalidArgumentError(absl::StrCat("/proc stat: start time '", fields[19], "' is not a number"));
  }
  return stat;
}

absl::StatusOr<ProcStat> ReadProcStat(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/stat");
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("process ", pid, " does not exist (", path, ")"));
  std::stringstream text;
  text << in.rdbuf();
  absl::StatusOr<ProcStat> stat = ParseProcStat(text.str());
  if (!stat.ok()) return absl::Status(stat.status().code(), absl::StrCat(path, ": ", stat.status().message()));
  return stat;
}

absl::StatusOr<kvm::ScopedFd> OpenPidFd(pid_t pid) {
  if (pid <= 0) return absl::InvalidArgumentError(absl::StrCat("pidfd_open: bad pid ", pid));
  const int fd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    if (errno == ESRCH) return absl::NotFoundError(absl::StrCat("process ", pid, " does not exist"));
    return absl::ErrnoToStatus(errno, absl::StrCat("pidfd_open(", pid, ")"));
  }
  return kvm::ScopedFd(fd);  // pidfds are always O_CLOEXEC
}

bool WaitPidFdExit(int pidfd, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    pollfd pfd = {pidfd, POLLIN, 0};
    const int64_t ms = std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - absl::Now()));
    const int n = poll(&pfd, 1, static_cast<int>(std::min<int64_t>(ms, 1 << 30)));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

absl::Status SignalPidFd(int pidfd, int signal) {
  if (syscall(SYS_pidfd_send_signal, pidfd, signal, nullptr, 0) == 0) return absl::OkStatus();
  if (errno == ESRCH) return absl::NotFoundError("the process has already exited");
  return absl::ErrnoToStatus(errno, absl::StrCat("pidfd_send_signal(", SignalName(signal), ")"));
}

std::string SignalName(int signal) {
  const char* abbrev = sigabbrev_np(signal);
  if (abbrev == nullptr) return absl::StrCat("signal ", signal);
  return absl::StrCat("SIG", abbrev);
}

std::string ReapAndDescribeExit(int pidfd, bool is_child) {
  if (!is_child) {
    return "exit status unknown (the worker was re-attached after a vexd restart, so it is not vexd's child)";
  }
  siginfo_t info;
  std::memset(&info, 0, sizeof(info));
  if (waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG) != 0) {
    return absl::StrCat("exit status unknown (waitid: ", std::strerror(errno), ")");
  }
  switch (info.si_code) {
    case CLD_EXITED:
      return absl::StrCat("exited with status ", info.si_status);
    case CLD_KILLED:
      return absl::StrFormat("killed by signal %d (%s)", info.si_status, SignalName(info.si_status));
    case CLD_DUMPED:
      return absl::StrFormat("killed by signal %d (%s), core dumped", info.si_status, SignalName(info.si_status));
    default:
      return absl::StrCat("ended (waitid si_code ", info.si_code, ")");
  }
}

}  // namespace vexstate::vexd
