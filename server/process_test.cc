#include "server/process.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <fstream>

#include "absl/synchronization/notification.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/exit_watcher.h"
#include "server/worker_launcher.h"

namespace vexstate::vexd {
namespace {

using ::testing::HasSubstr;

TEST(ProcStat, ParsesStateAndStartTimeAfterAnAwkwardComm) {
  // comm may hold spaces and parentheses.
  const std::string text =
      "4242 (we) ird (name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
  absl::StatusOr<ProcStat> stat = ParseProcStat(text);
  ASSERT_TRUE(stat.ok()) << stat.status();
  EXPECT_EQ(stat->state, 'S');
  EXPECT_EQ(stat->start_time, 987654u);
  EXPECT_FALSE(ParseProcStat("4242 (x) S 1 2").ok());
  EXPECT_FALSE(ParseProcStat("no parenthesis").ok());
}

TEST(ProcStat, ReadsThisProcess) {
  absl::StatusOr<ProcStat> self = ReadProcStat(getpid());
  ASSERT_TRUE(self.ok()) << self.status();
  EXPECT_GT(self->start_time, 0u);
  EXPECT_EQ(ReadProcStat(0x3fffffff).status().code(), absl::StatusCode::kNotFound);
}

pid_t Child(int exit_code, int signal_number = 0) {
  const pid_t pid = fork();
  if (pid == 0) {
    if (signal_number != 0) raise(signal_number);
    _exit(exit_code);
  }
  return pid;
}

TEST(PidFd, DescribesHowAChildEnded) {
  const pid_t exits = Child(3);
  absl::StatusOr<kvm::ScopedFd> fd = OpenPidFd(exits);
  ASSERT_TRUE(fd.ok()) << fd.status();
  ASSERT_TRUE(WaitPidFdExit(fd->get(), absl::Seconds(10)));
  EXPECT_EQ(ReapAndDescribeExit(fd->get(), /*is_child=*/true), "exited with status 3");

  const pid_t killed = Child(0, SIGKILL);
  absl::StatusOr<kvm::ScopedFd> kfd = OpenPidFd(killed);
  ASSERT_TRUE(kfd.ok());
  ASSERT_TRUE(WaitPidFdExit(kfd->get(), absl::Seconds(10)));
  EXPECT_EQ(ReapAndDescribeExit(kfd->get(), /*is_child=*/true), "killed by signal 9 (SIGKILL)");
  EXPECT_THAT(ReapAndDescribeExit(kfd->get(), /*is_child=*/false), HasSubstr("exit status unknown"));

  EXPECT_EQ(OpenPidFd(0x3fffffff).status().code(), absl::StatusCode::kNotFound);
}

TEST(PidFd, SignalsAndWaits) {
  const pid_t sleeper = fork();
  if (sleeper == 0) {
    pause();
    _exit(0);
  }
  absl::StatusOr<kvm::ScopedFd> fd = OpenPidFd(sleeper);
  ASSERT_TRUE(fd.ok());
  EXPECT_FALSE(WaitPidFdExit(fd->get(), absl::Milliseconds(50)));
  ASSERT_TRUE(SignalPidFd(fd->get(), SIGTERM).ok());
  ASSERT_TRUE(WaitPidFdExit(fd->get(), absl::Seconds(10)));
  EXPECT_THAT(ReapAndDescribeExit(fd->get(), true), HasSubstr("SIGTERM"));
  EXPECT_EQ(SignalPidFd(fd->get(), SIGTERM).code(), absl::StatusCode::kNotFound);
}

TEST(ExitWatcher, CallsBackOnceOnExitAndNotAfterUnwatch) {
  ExitWatcher watcher;
  const pid_t first = Child(0);
  absl::StatusOr<kvm::ScopedFd> fd = OpenPidFd(first);
  ASSERT_TRUE(fd.ok());
  absl::Notification exited;
  std::atomic<int> calls{0};
  watcher.Watch(fd->get(), [&] {
    ++calls;
    exited.Notify();
  });
  ASSERT_TRUE(exited.WaitForNotificationWithTimeout(absl::Seconds(10)));
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(calls.load(), 1);
  waitpid(first, nullptr, 0);

  const pid_t second = fork();
  if (second == 0) {
    pause();
    _exit(0);
  }
  absl::StatusOr<kvm::ScopedFd> fd2 = OpenPidFd(second);
  ASSERT_TRUE(fd2.ok());
  std::atomic<int> unwanted{0};
  const uint64_t id = watcher.Watch(fd2->get(), [&] { ++unwanted; });
  watcher.Unwatch(id);
  kill(second, SIGKILL);
  waitpid(second, nullptr, 0);
  absl::SleepFor(absl::Milliseconds(100));
  EXPECT_EQ(unwanted.load(), 0);
}

TEST(WorkerLine, ReadyErrorAndOtherLines) {
  EXPECT_EQ(ParseWorkerLine("vexd-worker: ready /x/y.sock").kind, WorkerLine::Kind::kReady);
  EXPECT_EQ(ParseWorkerLine("something else").kind, WorkerLine::Kind::kOther);
  WorkerLine error = ParseWorkerLine("vexd-worker: error: INVALID_ARGUMENT: vcpu_count 0: a VM needs 1 to 8 vCPUs\n");
  ASSERT_EQ(error.kind, WorkerLine::Kind::kError);
  EXPECT_EQ(error.error.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(error.error.message(), "vcpu_count 0: a VM needs 1 to 8 vCPUs");
  EXPECT_EQ(ParseWorkerLine("vexd-worker: error: DATA_LOSS: bad: checksum").error.code(), absl::StatusCode::kDataLoss);
  WorkerLine garbled = ParseWorkerLine("vexd-worker: error: whatever happened");
  EXPECT_EQ(garbled.error.code(), absl::StatusCode::kUnknown);
}

// A stand-in for vexd_worker (a test double: /bin/sh scripts) to check the launcher's
// handling of the startup protocol.
std::string Script(const std::string& name, const std::string& body) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string path = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + name;
  std::ofstream(path) << "#!/bin/sh\n" << body << "\n";
  chmod(path.c_str(), 0700);
  return path;
}

WorkerLaunch LaunchOf(const std::string& binary) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  WorkerLaunch launch;
  launch.binary = binary;
  launch.name = "vm";
  launch.socket_path = "/nonexistent.sock";
  launch.log_path = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + binary.substr(binary.rfind('/') + 1) + ".log";
  launch.ready_timeout = absl::Seconds(10);
  return launch;
}

TEST(LaunchWorker, FollowsTheStartupProtocol) {
  absl::StatusOr<LaunchedWorker> ready =
      LaunchWorker(LaunchOf(Script("ready-double", "echo starting; echo \"vexd-worker: ready $2\"; exec sleep 30")));
  ASSERT_TRUE(ready.ok()) << ready.status();
  EXPECT_GT(ready->start_time, 0u);
  // Its own session: it would survive vexd's process group being killed.
  EXPECT_EQ(getsid(ready->pid), ready->pid);
  ASSERT_TRUE(SignalPidFd(ready->pidfd.get(), SIGTERM).ok());  // SIGTERM is not blocked or ignored in it
  ASSERT_TRUE(WaitPidFdExit(ready->pidfd.get(), absl::Seconds(10)));
  EXPECT_THAT(ReapAndDescribeExit(ready->pidfd.get(), true), HasSubstr("SIGTERM"));

  absl::StatusOr<LaunchedWorker> refused = LaunchWorker(
      LaunchOf(Script("error-double", "echo 'vexd-worker: error: ALREADY_EXISTS: socket in use' >&2; exit 2")));
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_EQ(refused.status().message(), "socket in use");

  absl::StatusOr<LaunchedWorker> crashed =
      LaunchWorker(LaunchOf(Script("crash-double", "echo last words; kill -9 $$")));
  EXPECT_EQ(crashed.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(crashed.status().message(), HasSubstr("killed by signal 9"));
  EXPECT_THAT(crashed.status().message(), HasSubstr("last words"));

  WorkerLaunch slow = LaunchOf(Script("slow-double", "exec sleep 30"));
  slow.ready_timeout = absl::Milliseconds(200);
  EXPECT_EQ(LaunchWorker(slow).status().code(), absl::StatusCode::kUnavailable);

  EXPECT_EQ(LaunchWorker(LaunchOf("/nonexistent/vexd_worker")).status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace vexstate::vexd
