#include "client/invocation.h"

namespace vexstate::client {

absl::string_view RpcName(Rpc rpc) {
  switch (rpc) {
    case Rpc::kHelp:
      return "Help";
    case Rpc::kCreateVm:
      return "CreateVm";
    case Rpc::kStartVm:
      return "StartVm";
    case Rpc::kPauseVm:
      return "PauseVm";
    case Rpc::kResumeVm:
      return "ResumeVm";
    case Rpc::kStopVm:
      return "StopVm";
    case Rpc::kDeleteVm:
      return "DeleteVm";
    case Rpc::kGetVm:
      return "GetVm";
    case Rpc::kListVms:
      return "ListVms";
    case Rpc::kGetHostCapabilities:
      return "GetHostCapabilities";
    case Rpc::kSendGuestCommand:
      return "SendGuestCommand";
    case Rpc::kInjectSError:
      return "InjectSError";
    case Rpc::kInjectExternalAbort:
      return "InjectExternalAbort";
    case Rpc::kInjectException:
      return "InjectException";
    case Rpc::kInjectNmi:
      return "InjectNmi";
    case Rpc::kInjectMachineCheck:
      return "InjectMachineCheck";
    case Rpc::kQueryPending:
      return "QueryPending";
    case Rpc::kGetExceptionState:
      return "GetExceptionState";
    case Rpc::kSaveSnapshot:
      return "SaveSnapshot";
    case Rpc::kRestoreSnapshot:
      return "RestoreSnapshot";
    case Rpc::kInspectSnapshot:
      return "InspectSnapshot";
    case Rpc::kWatchEvents:
      return "WatchEvents";
    case Rpc::kMigrateVm:
      return "MigrateVm";
    case Rpc::kCancelMigration:
      return "CancelMigration";
    case Rpc::kQueryMigration:
      return "QueryMigration";
  }
  return "?";
}

}  // namespace vexstate::client
