#include "server/worker/worker_process_testing.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/time/clock.h"
#include "gtest/gtest.h"

extern char** environ;

namespace vexstate::worker::testing {

namespace {

std::string ReadAll(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

}  // namespace

ScratchDir::ScratchDir() {
  std::string tmpl = "/tmp/vexd-worker-test-XXXXXX";
  if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << strerror(errno);
  path_ = tmpl;
}

ScratchDir::~ScratchDir() {
  std::error_code ignored;
  std::filesystem::remove_all(path_, ignored);
}

std::string WorkerBinary() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  return std::string(srcdir ? srcdir : ".") + "/" + (workspace ? workspace : "vexstate") + "/server/worker/vexd_worker";
}

std::string WriteConfigFile(const ScratchDir& dir, const std::string& name, const v1::VmConfig& config) {
  const std::string path = dir.File(name);
  std::ofstream out(path, std::ios::binary);
  EXPECT_TRUE(config.SerializeToOstream(&out));
  return path;
}

std::unique_ptr<WorkerProcess> WorkerProcess::Start(const ScratchDir& dir, const std::string& socket_name,
                                                    const std::vector<std::string>& args, absl::Duration timeout) {
  std::unique_ptr<WorkerProcess> p(new WorkerProcess());
  p->socket_ = dir.File(socket_name);
  p->stdout_path_ = dir.File(socket_name + ".stdout");
  p->stderr_path_ = dir.File(socket_name + ".stderr");
  std::vector<std::string> argv_strings = {WorkerBinary(), "--socket", p->socket_};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (std::string& arg : argv_strings) argv.push_back(arg.data());
  argv.push_back(nullptr);

  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, p->stdout_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  posix_spawn_file_actions_addopen(&actions, 2, p->stderr_path_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  const int rc = posix_spawn(&p->pid_, argv[0], &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    ADD_FAILURE() << "posix_spawn " << argv[0] << ": " << strerror(rc);
    p->pid_ = 0;
    return p;
  }
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (absl::StrContains(p->Stdout(), "vexd-worker: ready ")) {
      p->ready_ = true;
      break;
    }
    if (p->WaitExit(absl::ZeroDuration()) >= 0) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  if (p->ready_) {
    p->stub_ = v1::VmWorker::NewStub(grpc::CreateChannel("unix:" + p->socket_, grpc::InsecureChannelCredentials()));
  }
  return p;
}

WorkerProcess::~WorkerProcess() {
  if (pid_ > 0 && !exited_) {
    kill(pid_, SIGKILL);
    WaitExit();
  }
}

std::string WorkerProcess::Stdout() const { return ReadAll(stdout_path_); }
std::string WorkerProcess::Stderr() const { return ReadAll(stderr_path_); }

int WorkerProcess::WaitExit(absl::Duration timeout) {
  if (exited_) return exit_status_;
  if (pid_ <= 0) return -1;
  const absl::Time deadline = absl::Now() + timeout;
  do {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      exited_ = true;
      exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      return exit_status_;
    }
    if (timeout > absl::ZeroDuration()) absl::SleepFor(absl::Milliseconds(10));
  } while (absl::Now() < deadline);
  return -1;
}

std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

EventWatcher::EventWatcher(v1::VmWorker::Stub& stub, bool replay) {
  v1::WatchWorkerEventsRequest request;
  request.set_replay(replay);
  reader_ = std::thread([this, &stub, request] {
    std::unique_ptr<grpc::ClientReader<v1::Event>> reader = stub.WatchEvents(&context_, request);
    v1::Event event;
    while (reader->Read(&event)) {
      absl::MutexLock lock(&mu_);
      events_.push_back(event);
    }
    grpc::Status status = reader->Finish();
    absl::MutexLock lock(&mu_);
    end_ = status;
  });
}

EventWatcher::~EventWatcher() {
  context_.TryCancel();
  reader_.join();
}

std::optional<v1::Event> EventWatcher::WaitFor(const Predicate& match, absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  std::optional<v1::Event> found;
  auto done = [&]() ABSL_SHARED_LOCKS_REQUIRED(mu_) {
    for (const v1::Event& event : events_) {
      if (match(event)) {
        found = event;
        return true;
      }
    }
    return end_.has_value();
  };
  mu_.AwaitWithTimeout(absl::Condition(&done), timeout);
  return found;
}

std::vector<v1::Event> EventWatcher::Events() const {
  absl::MutexLock lock(&mu_);
  return events_;
}

size_t EventWatcher::Count(const Predicate& match) const {
  absl::MutexLock lock(&mu_);
  size_t n = 0;
  for (const v1::Event& event : events_) n += match(event);
  return n;
}

grpc::Status EventWatcher::WaitEnd(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto ended = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return end_.has_value(); };
  if (!mu_.AwaitWithTimeout(absl::Condition(&ended), timeout)) {
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "the event stream did not end");
  }
  return *end_;
}

EventWatcher::Predicate IsLifecycle(v1::VmRunState state) {
  return [state](const v1::Event& e) { return e.has_lifecycle() && e.lifecycle().state() == state; };
}

EventWatcher::Predicate IsReport(const std::string& kind, const std::map<std::string, uint64_t>& fields) {
  return [kind, fields](const v1::Event& e) {
    if (!e.has_guest_report() || e.guest_report().kind() != kind) return false;
    for (const auto& [key, value] : fields) {
      auto it = e.guest_report().fields().find(key);
      if (it == e.guest_report().fields().end() || it->second != value) return false;
    }
    return true;
  };
}

EventWatcher::Predicate IsInjection() {
  return [](const v1::Event& e) { return e.has_injection(); };
}

}  // namespace vexstate::worker::testing
