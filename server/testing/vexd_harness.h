// Test harness for vexd end-to-end tests: runs the real vexd binary (and, through it, real
// vexd_worker processes on real KVM) in a fresh state directory, and talks to it over its
// Unix socket like any client.
//
// Cleanup is thorough because workers outlive vexd by design: the destructor stops vexd and
// SIGKILLs every worker named in the journal whose /proc start time still matches.
//
// Thread-safety: none; one test thread drives one harness.
#ifndef VEXSTATE_SERVER_TESTING_VEXD_HARNESS_H_
#define VEXSTATE_SERVER_TESTING_VEXD_HARNESS_H_

#include <sys/types.h>

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/status.h"
#include "gtest/gtest.h"
#include "vexstate/v1/control.grpc.pb.h"

namespace vexstate::vexd::testing {

inline constexpr char kOperatorToken[] = "operator-token-for-tests";
inline constexpr char kViewerToken[] = "viewer-token-for-tests";

// A binary of this workspace from the test's runfiles ("server/vexd").
std::string Runfile(const std::string& path);

// The result of a call made without generated stubs (grpc::GenericStub).
struct RawCall {
  grpc::Status status;
  std::vector<std::string> responses;  // serialized response messages
};
// Calls `method` ("/pkg.Service/Method") with one serialized request; works for unary and
// streaming methods (reads responses until the stream ends or the deadline passes).
RawCall CallRaw(const std::shared_ptr<grpc::Channel>& channel, const std::string& method, const std::string& request,
                const std::string& token, absl::Duration deadline);

class VexdHarness {
 public:
  // Makes a fresh state dir under /tmp (short: socket paths live in it) with a tokens file
  // holding kOperatorToken and kViewerToken.
  VexdHarness();
  ~VexdHarness();

  const std::string& state_dir() const { return state_dir_; }
  std::string socket() const { return state_dir_ + "/vexd.sock"; }
  std::string tokens_file() const { return state_dir_ + "/test-tokens"; }

  // Starts vexd with --state_dir, --tokens (unless `default_tokens`: then vexd makes its own
  // <state_dir>/tokens), --worker_binary and `extra` flags, and waits until its health
  // service answers SERVING on socket().
  absl::Status Start(const std::vector<std::string>& extra = {}, bool default_tokens = false);
  // Runs vexd with `args` (no defaults added) until it exits; returns its exit status and
  // stderr. For start-up refusals.
  static absl::StatusOr<std::pair<int, std::string>> RunToExit(const std::vector<std::string>& args,
                                                               absl::Duration timeout);
  // Drops the channel (and stubs) and SIGTERMs vexd; returns its exit status. Start() again
  // reconnects.
  absl::StatusOr<int> Stop();
  // SIGKILL: vexd dies without any cleanup (its lock goes with it; its socket file stays).
  void Kill();
  pid_t pid() const { return pid_; }
  // Everything vexd wrote to stderr (all its runs).
  std::string Log() const;

  std::shared_ptr<grpc::Channel> channel() const { return channel_; }
  v1::VmService::Stub& vms() { return *vms_; }
  v1::ExceptionService::Stub& exceptions() { return *exceptions_; }
  v1::SnapshotService::Stub& snapshots() { return *snapshots_; }
  v1::EventService::Stub& events() { return *events_; }

  // A context carrying `token` (none if empty) with a deadline.
  static std::unique_ptr<grpc::ClientContext> Context(const std::string& token = kOperatorToken,
                                                      absl::Duration deadline = absl::Seconds(30));

  // SIGKILLs the live workers named in the journal (pid and start time checked).
  void KillAllWorkers();

 private:
  // A new channel to socket() and stubs on it.
  void Connect();

  std::string state_dir_;
  pid_t pid_ = 0;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::VmService::Stub> vms_;
  std::unique_ptr<v1::ExceptionService::Stub> exceptions_;
  std::unique_ptr<v1::SnapshotService::Stub> snapshots_;
  std::unique_ptr<v1::EventService::Stub> events_;
};

}  // namespace vexstate::vexd::testing

// Fails the test (ASSERT) with the call, code and message when a gRPC call was not OK.
#define ASSERT_GRPC_OK(expr)                                                               \
  do {                                                                                     \
    const grpc::Status _s = (expr);                                                        \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.error_code() << " " << _s.error_message(); \
  } while (0)

#endif  // VEXSTATE_SERVER_TESTING_VEXD_HARNESS_H_
