#include "server/testing/vexd_harness.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpcpp/completion_queue.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "server/journal.h"
#include "server/process.h"

extern char** environ;

namespace vexstate::vexd::testing {
namespace {

// grpc.health.v1.HealthCheckResponse{status: SERVING}, serialized.
constexpr char kServing[] = "\x08\x01";

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// Spawns `args` with stdout and stderr appended to `log`.
absl::StatusOr<pid_t> SpawnLogged(const std::vector<std::string>& args, const std::string& log) {
  std::vector<std::string> copy = args;
  std::vector<char*> argv;
  for (std::string& arg : copy) argv.push_back(arg.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0600);
  posix_spawn_file_actions_adddup2(&actions, 1, 2);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return absl::ErrnoToStatus(rc, absl::StrCat("spawning ", args[0]));
  return pid;
}

// waitpid with a timeout; the exit status, or DEADLINE_EXCEEDED.
absl::StatusOr<int> WaitExit(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  for (;;) {
    int status = 0;
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (done < 0) return absl::ErrnoToStatus(errno, "waitpid");
    if (absl::Now() > deadline) return absl::DeadlineExceededError(absl::StrCat("pid ", pid, " did not exit"));
    absl::SleepFor(absl::Milliseconds(20));
  }
}

void* Tag(intptr_t n) { return reinterpret_cast<void*>(n); }

// True when something accepts connections on the Unix socket `path` (a stale socket file
// left by a killed vexd does not).
bool Accepts(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un address = {};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof(address.sun_path), "%s", path.c_str());
  const bool accepted = connect(fd, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0;
  close(fd);
  return accepted;
}

}  // namespace

std::string Runfile(const std::string& path) {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  if (srcdir != nullptr) return absl::StrCat(srcdir, "/vexstate/", path);
  return absl::StrCat(std::filesystem::read_symlink("/proc/self/exe").string(), ".runfiles/vexstate/", path);
}

RawCall CallRaw(const std::shared_ptr<grpc::Channel>& channel, const std::string& method, const std::string& request,
                const std::string& token, absl::Duration deadline) {
  RawCall result;
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  if (!token.empty()) context.AddMetadata("authorization", absl::StrCat("Bearer ", token));
  context.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  grpc::CompletionQueue cq;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> call = stub.PrepareCall(&context, method, &cq);
  void* got = nullptr;
  bool ok = false;
  // Every operation is awaited before the next, so the tags only mark progress.
  call->StartCall(Tag(1));
  cq.Next(&got, &ok);
  if (ok) {
    grpc::Slice slice(request);
    grpc::ByteBuffer message(&slice, 1);
    call->Write(message, Tag(2));
    cq.Next(&got, &ok);
    call->WritesDone(Tag(3));
    cq.Next(&got, &ok);
    for (;;) {
      grpc::ByteBuffer response;
      call->Read(&response, Tag(4));
      cq.Next(&got, &ok);
      if (!ok) break;
      std::vector<grpc::Slice> slices;
      (void)response.Dump(&slices);
      std::string bytes;
      for (const grpc::Slice& s : slices) bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
      result.responses.push_back(std::move(bytes));
    }
  }
  call->Finish(&result.status, Tag(5));
  cq.Next(&got, &ok);
  cq.Shutdown();
  while (cq.Next(&got, &ok)) {
  }
  return result;
}

VexdHarness::VexdHarness() {
  char dir[] = "/tmp/vexd-test-XXXXXX";
  state_dir_ = mkdtemp(dir) != nullptr ? dir : "/tmp/vexd-test-failed";
  std::ofstream tokens(tokens_file());
  tokens << "# tokens of vexd_test\n"
         << kOperatorToken << " operator test-operator\n"
         << kViewerToken << " viewer test-viewer\n";
  tokens.close();
  chmod(tokens_file().c_str(), 0600);
}

VexdHarness::~VexdHarness() {
  if (pid_ != 0) (void)Stop();
  KillAllWorkers();
  std::error_code ignored;
  std::filesystem::remove_all(state_dir_, ignored);
}

std::string VexdHarness::Log() const { return ReadAll(state_dir_ + "/vexd.stderr"); }

absl::Status VexdHarness::Start(const std::vector<std::string>& extra, bool default_tokens) {
  std::vector<std::string> args = {Runfile("server/vexd"), "--state_dir", state_dir_, "--worker_binary",
                                   Runfile("server/worker/vexd_worker")};
  if (!default_tokens) args.insert(args.end(), {"--tokens", tokens_file()});
  args.insert(args.end(), extra.begin(), extra.end());
  absl::StatusOr<pid_t> pid = SpawnLogged(args, state_dir_ + "/vexd.stderr");
  if (!pid.ok()) return pid.status();
  pid_ = *pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  // A channel that failed to connect retries only after its backoff (seconds): connect
  // once the socket accepts, with a fresh channel (also after a restart of vexd).
  while (!Accepts(socket()) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  Connect();
  while (absl::Now() < deadline) {
    RawCall health = CallRaw(channel_, "/grpc.health.v1.Health/Check", "", "", absl::Seconds(1));
    if (health.status.ok() && health.responses.size() == 1 && health.responses[0] == std::string(kServing, 2)) {
      return absl::OkStatus();
    }
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = 0;
      return absl::InternalError(absl::StrCat("vexd exited during start-up (status ", status, "): ", Log()));
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return absl::DeadlineExceededError(absl::StrCat("vexd was not SERVING within 30 s: ", Log()));
}

absl::StatusOr<std::pair<int, std::string>> VexdHarness::RunToExit(const std::vector<std::string>& args,
                                                                   absl::Duration timeout) {
  char path[] = "/tmp/vexd-run-XXXXXX";
  const int fd = mkstemp(path);
  if (fd < 0) return absl::ErrnoToStatus(errno, "mkstemp");
  close(fd);
  absl::StatusOr<pid_t> pid = SpawnLogged(args, path);
  if (!pid.ok()) return pid.status();
  absl::StatusOr<int> status = WaitExit(*pid, timeout);
  if (!status.ok()) {
    kill(*pid, SIGKILL);
    (void)WaitExit(*pid, absl::Seconds(5));
  }
  std::string output = ReadAll(path);
  unlink(path);
  if (!status.ok()) return absl::Status(status.status().code(), absl::StrCat(status.status().message(), ": ", output));
  return std::make_pair(*status, output);
}

absl::StatusOr<int> VexdHarness::Stop() {
  if (pid_ == 0) return absl::FailedPreconditionError("vexd is not running");
  // A connected client holds vexd's shutdown up to its grace period: hang up first.
  vms_.reset();
  exceptions_.reset();
  snapshots_.reset();
  events_.reset();
  channel_.reset();
  kill(pid_, SIGTERM);
  absl::StatusOr<int> status = WaitExit(pid_, absl::Seconds(20));
  if (!status.ok()) {
    kill(pid_, SIGKILL);
    (void)WaitExit(pid_, absl::Seconds(5));
  }
  pid_ = 0;
  return status;
}

void VexdHarness::Connect() {
  channel_ = grpc::CreateChannel(absl::StrCat("unix:", socket()), grpc::InsecureChannelCredentials());
  vms_ = v1::VmService::NewStub(channel_);
  exceptions_ = v1::ExceptionService::NewStub(channel_);
  snapshots_ = v1::SnapshotService::NewStub(channel_);
  events_ = v1::EventService::NewStub(channel_);
}

void VexdHarness::Kill() {
  if (pid_ == 0) return;
  kill(pid_, SIGKILL);
  (void)WaitExit(pid_, absl::Seconds(10));
  pid_ = 0;
}

std::unique_ptr<grpc::ClientContext> VexdHarness::Context(const std::string& token, absl::Duration deadline) {
  auto context = std::make_unique<grpc::ClientContext>();
  if (!token.empty()) context->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  context->set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  return context;
}

void VexdHarness::KillAllWorkers() {
  absl::StatusOr<Journal::Loaded> loaded = Journal(state_dir_ + "/vms").LoadAll();
  if (!loaded.ok()) return;
  for (const v1::VmRecord& record : loaded->records) {
    if (record.worker_pid() == 0) continue;
    absl::StatusOr<kvm::ScopedFd> pidfd = OpenPidFd(record.worker_pid());
    absl::StatusOr<ProcStat> stat = ReadProcStat(record.worker_pid());
    if (!pidfd.ok() || !stat.ok() || stat->start_time != record.worker_start_time()) continue;
    (void)SignalPidFd(pidfd->get(), SIGKILL);
    WaitPidFdExit(pidfd->get(), absl::Seconds(5));
  }
}

}  // namespace vexstate::vexd::testing
