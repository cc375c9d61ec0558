#include "client/run.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "client/format_event.h"
#include "client/format_exception.h"
#include "client/format_json.h"
#include "client/format_migration.h"
#include "client/format_snapshot.h"
#include "client/format_vm.h"

namespace vexstate::client {
namespace {

// Where and how responses are printed.
struct Printer {
  std::ostream& out;
  std::ostream& err;
  bool json;

  // Prints `response` (human: with `human`, which ends its text with '\n');
  // returns the exit status.
  template <typename Response>
  int Print(const Response& response,
            std::string (*human)(const Response&)) const {
    if (!json) {
      out << human(response);
    } else if (absl::StatusOr<std::string> line = ToJsonLine(response);
               line.ok()) {
      out << *line << '\n';
    } else {
      return ReportError(line.status(), err);
    }
    out.flush();
    return out ? 0
               : ReportError(absl::UnavailableError("cannot write the output"),
                             err);
  }
};

std::string EventLine(const v1::Event& event) {
  return FormatEvent(event) + "\n";
}

template <typename Request, typename Response>
int CallAndPrint(const Invocation& invocation, const VexClient& client,
                 absl::StatusOr<Response> (VexClient::*method)(const Request&)
                     const,
                 std::string (*human)(const Response&),
                 const Printer& printer) {
  absl::StatusOr<Response> response =
      (client.*method)(invocation.Request<Request>());
  if (!response.ok()) return ReportError(response.status(), printer.err);
  return printer.Print(*response, human);
}

int WatchAndPrint(const Invocation& invocation, const VexClient& client,
                  const Printer& printer) {
  WatchOptions options;
  if (!invocation.follow) options.stop_when_idle = kReplayQuietPeriod;
  int print_status = 0;
  absl::Status status = client.WatchEvents(
      invocation.Request<v1::WatchEventsRequest>(),
      [&](const v1::Event& event) {
        print_status = printer.Print(event, EventLine);
        return print_status == 0;
      },
      options);
  if (!status.ok()) return ReportError(status, printer.err);
  return print_status;
}

// Progress as it comes (a bar redrawn in place on a terminal, else one line or
// JSON object per message), then the result; exit 0 only for COMPLETED.
int MigrateAndPrint(const Invocation& invocation, const VexClient& client,
                    const Printer& printer, bool out_is_terminal) {
  const bool bar = out_is_terminal && !printer.json;
  int print_status = 0;
  absl::StatusOr<v1::MigrationResult> result = client.MigrateVm(
      invocation.Request<v1::MigrateVmRequest>(),
      [&](const v1::MigrationProgress& progress) {
        if (bar) {
          printer.out << "\r\033[K" << FormatMigrationProgressBar(progress)
                      << std::flush;
        } else if (print_status == 0) {
          print_status = printer.Print(progress, FormatMigrationProgressLine);
        }
      });
  if (bar) printer.out << "\n";
  if (!result.ok()) return ReportError(result.status(), printer.err);
  if (!printer.json) {
    printer.out << FormatMigrationResult(*result) << std::flush;
  }
  if (result->outcome() != v1::MIGRATION_COMPLETED) {
    printer.err << "vexctl: migration " << MigrationPhaseName(result->outcome())
                << ": "
                << (result->error().empty() ? "(vexd gave no reason)"
                                            : result->error())
                << std::endl;
    return 1;
  }
  return print_status;
}

}  // namespace

int ReportError(const absl::Status& status, std::ostream& err) {
  err << "vexctl: " << absl::StatusCodeToString(status.code()) << ": "
      << status.message() << std::endl;
  return 1;
}

int RunInvocation(const Invocation& invocation, const VexClient& client,
                  std::ostream& out, std::ostream& err, bool out_is_terminal) {
  const Printer printer{out, err, invocation.json};
  const Invocation& i = invocation;
  const VexClient& c = client;
  switch (invocation.rpc) {
    case Rpc::kCreateVm:
      return CallAndPrint(i, c, &VexClient::CreateVm, FormatVmInfo, printer);
    case Rpc::kStartVm:
      return CallAndPrint(i, c, &VexClient::StartVm, FormatVmStateLine,
                          printer);
    case Rpc::kPauseVm:
      return CallAndPrint(i, c, &VexClient::PauseVm, FormatVmStateLine,
                          printer);
    case Rpc::kResumeVm:
      return CallAndPrint(i, c, &VexClient::ResumeVm, FormatVmStateLine,
                          printer);
    case Rpc::kStopVm:
      return CallAndPrint(i, c, &VexClient::StopVm, FormatVmStateLine, printer);
    case Rpc::kDeleteVm:
      return CallAndPrint(i, c, &VexClient::DeleteVm, FormatVmStateLine,
                          printer);
    case Rpc::kGetVm:
      return CallAndPrint(i, c, &VexClient::GetVm, FormatVmInfo, printer);
    case Rpc::kListVms:
      return CallAndPrint(i, c, &VexClient::ListVms, FormatVmList, printer);
    case Rpc::kGetHostCapabilities:
      return CallAndPrint(i, c, &VexClient::GetHostCapabilities,
                          FormatHostCapabilities, printer);
    case Rpc::kSendGuestCommand:
      return CallAndPrint(i, c, &VexClient::SendGuestCommand,
                          FormatGuestCommandResponse, printer);
    case Rpc::kInjectSError:
      return CallAndPrint(i, c, &VexClient::InjectSError, FormatInjectResponse,
                          printer);
    case Rpc::kInjectExternalAbort:
      return CallAndPrint(i, c, &VexClient::InjectExternalAbort,
                          FormatInjectResponse, printer);
    case Rpc::kInjectException:
      return CallAndPrint(i, c, &VexClient::InjectException,
                          FormatInjectResponse, printer);
    case Rpc::kInjectNmi:
      return CallAndPrint(i, c, &VexClient::InjectNmi, FormatInjectResponse,
                          printer);
    case Rpc::kInjectMachineCheck:
      return CallAndPrint(i, c, &VexClient::InjectMachineCheck,
                          FormatInjectResponse, printer);
    case Rpc::kQueryPending:
      return CallAndPrint(i, c, &VexClient::QueryPending, FormatQueryPending,
                          printer);
    case Rpc::kGetExceptionState:
      return CallAndPrint(i, c, &VexClient::GetExceptionState,
                          FormatExceptionState, printer);
    case Rpc::kSaveSnapshot:
      return CallAndPrint(i, c, &VexClient::SaveSnapshot, FormatSaveSnapshot,
                          printer);
    case Rpc::kRestoreSnapshot:
      return CallAndPrint(i, c, &VexClient::RestoreSnapshot,
                          FormatRestoreSnapshot, printer);
    case Rpc::kInspectSnapshot:
      return CallAndPrint(i, c, &VexClient::InspectSnapshot,
                          FormatInspectSnapshot, printer);
    case Rpc::kWatchEvents:
      return WatchAndPrint(i, c, printer);
    case Rpc::kMigrateVm:
      return MigrateAndPrint(i, c, printer, out_is_terminal);
    case Rpc::kCancelMigration:
      return CallAndPrint(i, c, &VexClient::CancelMigration,
                          FormatMigrationStatus, printer);
    case Rpc::kQueryMigration:
      return CallAndPrint(i, c, &VexClient::QueryMigration,
                          FormatMigrationStatus, printer);
    case Rpc::kHelp:
      break;
  }
  return ReportError(absl::InternalError(absl::StrCat("no handler for ",
                                                      RpcName(invocation.rpc))),
                     err);
}

}  // namespace vexstate::client
