// Test helpers for the worker binary: a scratch directory, one vexd_worker process with a
// VmWorker stub, and a WatchEvents reader that collects the stream in the background.
//
// Thread-safety: WorkerProcess is used from the test thread; EventWatcher's accessors are
// thread-safe (its reader thread appends while the test waits).
#ifndef VEXSTATE_SERVER_WORKER_WORKER_PROCESS_TESTING_H_
#define VEXSTATE_SERVER_WORKER_WORKER_PROCESS_TESTING_H_

#include <sys/types.h>

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "vexstate/v1/worker.grpc.pb.h"

namespace vexstate::worker::testing {

// A directory under /tmp, removed with its contents at destruction. Not under TEST_TMPDIR:
// Bazel's sandbox paths are longer than a Unix socket path may be (107 bytes).
class ScratchDir {
 public:
  ScratchDir();
  ~ScratchDir();
  const std::string& path() const { return path_; }
  std::string File(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// The vexd_worker binary in this test's runfiles (data = [":vexd_worker"]).
std::string WorkerBinary();

// Writes `config` as a binary VmConfig file; returns its path.
std::string WriteConfigFile(const ScratchDir& dir, const std::string& name, const v1::VmConfig& config);

class WorkerProcess {
 public:
  // Runs the worker with `args` plus "--socket <dir>/<socket_name>", stdout and stderr into
  // files next to it, and waits until it printed its ready line or exited.
  static std::unique_ptr<WorkerProcess> Start(const ScratchDir& dir, const std::string& socket_name,
                                              const std::vector<std::string>& args,
                                              absl::Duration timeout = absl::Seconds(60));
  ~WorkerProcess();  // SIGKILL if it still runs

  bool ready() const { return ready_; }
  pid_t pid() const { return pid_; }
  const std::string& socket() const { return socket_; }
  std::string Stdout() const;
  std::string Stderr() const;
  // Waits for the process to end: its exit status, 128 + signal if killed, -1 on timeout.
  int WaitExit(absl::Duration timeout = absl::Seconds(20));

  v1::VmWorker::Stub& stub() { return *stub_; }

 private:
  WorkerProcess() = default;
  pid_t pid_ = 0;
  bool ready_ = false;
  bool exited_ = false;
  int exit_status_ = -1;
  std::string socket_, stdout_path_, stderr_path_;
  std::unique_ptr<v1::VmWorker::Stub> stub_;
};

// A ClientContext with a deadline, so a hung worker fails the test instead of hanging it.
std::unique_ptr<grpc::ClientContext> Context(absl::Duration timeout = absl::Seconds(30));

// Reads WatchEvents on its own thread until the stream ends or the watcher is destroyed.
class EventWatcher {
 public:
  using Predicate = std::function<bool(const v1::Event&)>;

  EventWatcher(v1::VmWorker::Stub& stub, bool replay);
  ~EventWatcher();  // cancels the call and joins the reader

  // The first event matching `match`, waiting up to `timeout` for it.
  std::optional<v1::Event> WaitFor(const Predicate& match, absl::Duration timeout = absl::Seconds(20));
  std::vector<v1::Event> Events() const;
  size_t Count(const Predicate& match) const;
  // Waits for the stream's end and returns its status (DEADLINE_EXCEEDED if it did not end).
  grpc::Status WaitEnd(absl::Duration timeout = absl::Seconds(20));
  void Cancel() { context_.TryCancel(); }

 private:
  grpc::ClientContext context_;
  mutable absl::Mutex mu_;
  std::vector<v1::Event> events_ ABSL_GUARDED_BY(mu_);
  std::optional<grpc::Status> end_ ABSL_GUARDED_BY(mu_);
  std::thread reader_;
};

// Predicates.
EventWatcher::Predicate IsLifecycle(v1::VmRunState state);
EventWatcher::Predicate IsReport(const std::string& kind, const std::map<std::string, uint64_t>& fields = {});
EventWatcher::Predicate IsInjection();

}  // namespace vexstate::worker::testing

#endif  // VEXSTATE_SERVER_WORKER_WORKER_PROCESS_TESTING_H_
