// What one vexctl command line asks for: which RPC, its request proto, how to
// connect and how to print. Produced by ParseArgs (args.h), carried out by
// RunInvocation (run.h).
//
// Contract: plain data, movable, not copyable.
#ifndef VEXSTATE_CLIENT_INVOCATION_H_
#define VEXSTATE_CLIENT_INVOCATION_H_

#include <memory>

#include "absl/strings/string_view.h"
#include "client/connect_options.h"
#include "google/protobuf/message.h"

namespace vexstate::client {

// One per RPC vexctl can call, plus kHelp (print the usage, call nothing).
enum class Rpc {
  kHelp,
  kCreateVm,
  kStartVm,
  kPauseVm,
  kResumeVm,
  kStopVm,
  kDeleteVm,
  kGetVm,
  kListVms,
  kGetHostCapabilities,
  kSendGuestCommand,
  kInjectSError,
  kInjectExternalAbort,
  kInjectException,
  kInjectNmi,
  kInjectMachineCheck,
  kQueryPending,
  kGetExceptionState,
  kSaveSnapshot,
  kRestoreSnapshot,
  kInspectSnapshot,
  kWatchEvents,
  kMigrateVm,
  kCancelMigration,
  kQueryMigration,
};

// "CreateVm", "Help", ... (for messages and tests).
absl::string_view RpcName(Rpc rpc);

struct Invocation {
  Rpc rpc = Rpc::kHelp;
  // The request of `rpc` (nullptr for kHelp).
  std::unique_ptr<google::protobuf::Message> request;
  // From the global flags only; the environment is applied when connecting.
  ConnectOptions connect;
  // --json: print each response as one line of JSON.
  bool json = false;
  // events --follow: keep watching after the replay (otherwise stop once vexd
  // has replayed what it holds).
  bool follow = false;

  // Makes `request` a new T for `rpc_` and returns it.
  template <typename T>
  T* SetRequest(Rpc rpc_) {
    rpc = rpc_;
    auto owned = std::make_unique<T>();
    T* raw = owned.get();
    request = std::move(owned);
    return raw;
  }
  // The request as its concrete type; T must be the type SetRequest was given.
  template <typename T>
  const T& Request() const {
    return dynamic_cast<const T&>(*request);
  }
};

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_INVOCATION_H_
