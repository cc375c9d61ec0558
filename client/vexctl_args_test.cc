// vexctl's command line: every command of the contract parses to the request it
// should, global flags land in the connection options wherever they are, and
// each kind of bad input gives its precise usage error.
#include <set>
#include <string>
#include <vector>

#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "client/args.h"
#include "client/commands.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "vexstate/v1/control.pb.h"

namespace vexstate::client {
namespace {

constexpr char kCwd[] = "/home/op";

std::vector<std::string> Split(const std::string& line) {
  return absl::StrSplit(line, ' ', absl::SkipEmpty());
}

absl::StatusOr<Invocation> Parse(const std::string& line) {
  return ParseArgs(Split(line), kCwd);
}

struct Case {
  std::string line;
  Rpc rpc;
  std::string request_type;  // full proto name
  std::string request;       // text format
};

class ParsesTo : public testing::TestWithParam<Case> {};

TEST_P(ParsesTo, TheRequest) {
  const Case& c = GetParam();
  absl::StatusOr<Invocation> invocation = Parse(c.line);
  ASSERT_TRUE(invocation.ok()) << invocation.status();
  EXPECT_EQ(RpcName(invocation->rpc), RpcName(c.rpc));
  ASSERT_NE(invocation->request, nullptr);
  ASSERT_EQ(invocation->request->GetDescriptor()->full_name(), c.request_type);
  std::unique_ptr<google::protobuf::Message> expected(
      invocation->request->New());
  ASSERT_TRUE(
      google::protobuf::TextFormat::ParseFromString(c.request, expected.get()))
      << c.request;
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(
      *invocation->request, *expected))
      << "got:\n"
      << invocation->request->DebugString() << "want:\n"
      << expected->DebugString();
}

INSTANTIATE_TEST_SUITE_P(
    Contract, ParsesTo,
    testing::Values(
        // vm
        Case{"vm create a --arch x86_64 --vcpus 2 --memory-mib 64 --guest "
             "witness",
             Rpc::kCreateVm, "vexstate.v1.CreateVmRequest",
             R"pb(config {
                    name: "a"
                    arch: ARCH_X86_64
                    vcpu_count: 2
                    memory_bytes: 67108864
                    guest { bundled: "witness" }
                  })pb"},
        Case{"vm create a --arch x86_64 --vcpus 1 --memory-mib 16",
             Rpc::kCreateVm, "vexstate.v1.CreateVmRequest",
             R"pb(config {
                    name: "a"
                    arch: ARCH_X86_64
                    vcpu_count: 1
                    memory_bytes: 16777216
                    guest { bundled: "witness" }
                  })pb"},
        Case{"vm create b --arch arm64 --vcpus 0x4 --memory-mib 0x100 "
             "--guest-file img/guest.bin --mce-banks 4 --start "
             "--heartbeat-ms 100 --workset-pages 16 --dirty-pages-per-sec 1000 "
             "--hold-mask 0x1",
             Rpc::kCreateVm, "vexstate.v1.CreateVmRequest",
             R"pb(config {
                    name: "b"
                    arch: ARCH_ARM64
                    vcpu_count: 4
                    memory_bytes: 268435456
                    guest { path: "/home/op/img/guest.bin" }
                    mce_banks: 4
                    witness {
                      heartbeat_ms: 100
                      workset_pages: 16
                      dirty_pages_per_sec: 1000
                      hold_mask: 1
                    }
                  }
                  start: true)pb"},
        Case{"vm start a", Rpc::kStartVm, "vexstate.v1.VmRef",
             R"pb(name: "a")pb"},
        Case{"vm pause a", Rpc::kPauseVm, "vexstate.v1.VmRef",
             R"pb(name: "a")pb"},
        Case{"vm resume a", Rpc::kResumeVm, "vexstate.v1.VmRef",
             R"pb(name: "a")pb"},
        Case{"vm stop a", Rpc::kStopVm, "vexstate.v1.VmRef",
             R"pb(name: "a")pb"},
        Case{"vm show a", Rpc::kGetVm, "vexstate.v1.VmRef", R"pb(name: "a")pb"},
        Case{"vm delete a", Rpc::kDeleteVm, "vexstate.v1.VmRef",
             R"pb(name: "a")pb"},
        Case{"vm list", Rpc::kListVms, "vexstate.v1.ListVmsRequest", ""},
        // inject
        Case{"inject serror a --vcpu 1", Rpc::kInjectSError,
             "vexstate.v1.InjectSErrorRequest", R"pb(vm: "a" vcpu: 1)pb"},
        Case{"inject serror a --vcpu 0 --esr 0x1234 --on-pending replace "
             "--pause-around",
             Rpc::kInjectSError, "vexstate.v1.InjectSErrorRequest",
             R"pb(vm: "a"
                  vcpu: 0
                  has_esr: true
                  esr: 0x1234
                  on_pending: SERROR_OVERWRITE_REPLACE
                  pause_around: true)pb"},
        Case{"inject serror a --vcpu 0 --esr 0 --on-pending keep",
             Rpc::kInjectSError, "vexstate.v1.InjectSErrorRequest",
             R"pb(vm: "a"
                  has_esr: true
                  on_pending: SERROR_OVERWRITE_KEEP_PENDING)pb"},
        Case{"inject ext-abort a --vcpu 2", Rpc::kInjectExternalAbort,
             "vexstate.v1.InjectExternalAbortRequest",
             R"pb(vm: "a" vcpu: 2)pb"},
        Case{"inject exception a --vcpu 0 --vector 14 --error-code 2 "
             "--payload 0xdead000",
             Rpc::kInjectException, "vexstate.v1.InjectExceptionRequest",
             R"pb(vm: "a"
                  vector: 14
                  has_error_code: true
                  error_code: 2
                  has_payload: true
                  payload: 0xdead000)pb"},
        Case{"inject exception a --vcpu 1 --vector 6 --pause-around",
             Rpc::kInjectException, "vexstate.v1.InjectExceptionRequest",
             R"pb(vm: "a" vcpu: 1 vector: 6 pause_around: true)pb"},
        Case{"inject nmi a --vcpu 0", Rpc::kInjectNmi,
             "vexstate.v1.InjectNmiRequest", R"pb(vm: "a")pb"},
        Case{"inject mce a --vcpu 0 --bank 3 --status 0xbc0000000000009f "
             "--addr 0x12345000 --misc 0x86 --mcg-status 0x5 --pause-around",
             Rpc::kInjectMachineCheck, "vexstate.v1.InjectMachineCheckRequest",
             R"pb(vm: "a"
                  bank: 3
                  status: 0xbc0000000000009f
                  addr: 0x12345000
                  misc: 0x86
                  mcg_status: 5
                  pause_around: true)pb"},
        Case{"inject mce a --vcpu 1 --bank 0 --status 18446744073709551615",
             Rpc::kInjectMachineCheck, "vexstate.v1.InjectMachineCheckRequest",
             R"pb(vm: "a" vcpu: 1 status: 0xffffffffffffffff)pb"},
        // state
        Case{"pending a", Rpc::kQueryPending, "vexstate.v1.QueryPendingRequest",
             R"pb(vm: "a")pb"},
        Case{"pending --all", Rpc::kQueryPending,
             "vexstate.v1.QueryPendingRequest", R"pb(all_vms: true)pb"},
        Case{"state a", Rpc::kGetExceptionState,
             "vexstate.v1.GetExceptionStateRequest", R"pb(vm: "a")pb"},
        Case{"state a --vcpu 0 --vcpu 0x2", Rpc::kGetExceptionState,
             "vexstate.v1.GetExceptionStateRequest", R"pb(vm: "a"
                                                          vcpus: 0
                                                          vcpus: 2)pb"},
        // snapshot: FILE is made absolute against the cwd
        Case{"snapshot save a snaps/a.vxs", Rpc::kSaveSnapshot,
             "vexstate.v1.SaveSnapshotRequest",
             R"pb(vm: "a" path: "/home/op/snaps/a.vxs")pb"},
        Case{"snapshot save a /srv/a.vxs --pause-around", Rpc::kSaveSnapshot,
             "vexstate.v1.SaveSnapshotRequest", R"pb(vm: "a"
                                                     path: "/srv/a.vxs"
                                                     pause_around: true)pb"},
        Case{"snapshot restore a.vxs", Rpc::kRestoreSnapshot,
             "vexstate.v1.RestoreSnapshotRequest",
             R"pb(path: "/home/op/a.vxs")pb"},
        Case{"snapshot restore ../a.vxs --name b --resume --allow-degrade",
             Rpc::kRestoreSnapshot, "vexstate.v1.RestoreSnapshotRequest",
             R"pb(path: "/home/op/../a.vxs"
                  name: "b"
                  resume: true
                  allow_degrade: true)pb"},
        Case{"snapshot inspect ./a.vxs", Rpc::kInspectSnapshot,
             "vexstate.v1.InspectSnapshotRequest",
             R"pb(path: "/home/op/./a.vxs")pb"},
        // events
        Case{"events", Rpc::kWatchEvents, "vexstate.v1.WatchEventsRequest",
             R"pb(replay: true)pb"},
        Case{"events a --follow", Rpc::kWatchEvents,
             "vexstate.v1.WatchEventsRequest", R"pb(vm: "a" replay: true)pb"},
        Case{"events --follow --no-replay", Rpc::kWatchEvents,
             "vexstate.v1.WatchEventsRequest", ""},
        // migration
        Case{"migrate a --to tcp:10.77.0.2:7500", Rpc::kMigrateVm,
             "vexstate.v1.MigrateVmRequest",
             R"pb(vm: "a" destination: "tcp:10.77.0.2:7500")pb"},
        Case{"migrate a --to tcp:[::1]:7500 --max-downtime-ms 30 "
             "--max-rounds 5 --max-bandwidth-mibps 100 --deadline-ms 60000 "
             "--degrade --name b",
             Rpc::kMigrateVm, "vexstate.v1.MigrateVmRequest",
             R"pb(vm: "a"
                  destination: "tcp:[::1]:7500"
                  max_downtime_ms: 30
                  max_precopy_rounds: 5
                  max_bandwidth_bytes_per_sec: 104857600
                  timeout_ms: 60000
                  allow_degrade: true
                  destination_name: "b")pb"},
        Case{"migrate-cancel a", Rpc::kCancelMigration,
             "vexstate.v1.CancelMigrationRequest", R"pb(vm: "a")pb"},
        Case{"migrate-status a", Rpc::kQueryMigration,
             "vexstate.v1.QueryMigrationRequest", R"pb(vm: "a")pb"},
        // extras
        Case{"guest a memcheck --wait-ms 2000", Rpc::kSendGuestCommand,
             "vexstate.v1.GuestCommandRequest",
             R"pb(vm: "a" command: GUEST_COMMAND_MEMCHECK wait_ms: 2000)pb"},
        Case{"guest a unmask-serror", Rpc::kSendGuestCommand,
             "vexstate.v1.GuestCommandRequest",
             R"pb(vm: "a" command: GUEST_COMMAND_UNMASK_SERROR)pb"},
        Case{"guest a esb-read-disr --arg 7", Rpc::kSendGuestCommand,
             "vexstate.v1.GuestCommandRequest",
             R"pb(vm: "a" command: GUEST_COMMAND_ESB_READ_DISR arg: 7)pb"},
        Case{"guest a read-disr", Rpc::kSendGuestCommand,
             "vexstate.v1.GuestCommandRequest",
             R"pb(vm: "a" command: GUEST_COMMAND_READ_DISR)pb"},
        Case{"guest a settings --heartbeat-ms 50 --hold-mask 0x40000",
             Rpc::kSendGuestCommand, "vexstate.v1.GuestCommandRequest",
             R"pb(vm: "a"
                  command: GUEST_COMMAND_APPLY_SETTINGS
                  settings { heartbeat_ms: 50 hold_mask: 0x40000 })pb"},
        Case{"host caps", Rpc::kGetHostCapabilities,
             "vexstate.v1.GetHostCapabilitiesRequest", ""},
        // spelling variants
        Case{"inject exception a --vcpu=0 --vector=0xE --error_code 0",
             Rpc::kInjectException, "vexstate.v1.InjectExceptionRequest",
             R"pb(vm: "a" vector: 14 has_error_code: true)pb"},
        Case{"pending -- -odd-name", Rpc::kQueryPending,
             "vexstate.v1.QueryPendingRequest", R"pb(vm: "-odd-name")pb"}));

TEST(ParseArgs, EventsFollowFlag) {
  EXPECT_FALSE(Parse("events a")->follow);
  EXPECT_TRUE(Parse("events a --follow")->follow);
}

TEST(ParseArgs, MigrateJsonIsTheGlobalFlag) {
  EXPECT_FALSE(Parse("migrate a --to tcp:h:7500")->json);
  EXPECT_TRUE(Parse("migrate a --to tcp:h:7500 --json")->json);
  EXPECT_TRUE(Parse("--json migrate a --to tcp:h:7500")->json);
}

TEST(ParseArgs, GlobalFlagsBeforeOrAfterTheCommand) {
  absl::StatusOr<Invocation> before =
      Parse("--host tcp:vex1:7443 --token t0k --json --timeout 5s vm list");
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->connect.target, "tcp:vex1:7443");
  EXPECT_EQ(before->connect.token, "t0k");
  EXPECT_TRUE(before->json);
  EXPECT_EQ(before->connect.deadline, absl::Seconds(5));

  absl::StatusOr<Invocation> after = Parse(
      "vm show a --json --host=unix:/run/v.sock --token_file /etc/vex/token "
      "--tls-ca ca.pem --tls-cert c.pem --tls-key k.pem --tls-server-name "
      "vex1");
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_TRUE(after->json);
  EXPECT_EQ(after->connect.target, "unix:/run/v.sock");
  EXPECT_EQ(after->connect.token_file, "/etc/vex/token");
  EXPECT_EQ(after->connect.tls_ca_file, "ca.pem");
  EXPECT_EQ(after->connect.tls_cert_file, "c.pem");
  EXPECT_EQ(after->connect.tls_key_file, "k.pem");
  EXPECT_EQ(after->connect.tls_server_name, "vex1");
}

TEST(ParseArgs, DefaultsLeaveConnectionToTheEnvironment) {
  absl::StatusOr<Invocation> invocation = Parse("vm list");
  ASSERT_TRUE(invocation.ok());
  EXPECT_FALSE(invocation->json);
  EXPECT_EQ(invocation->connect.target, "");
  EXPECT_EQ(invocation->connect.token, "");
  EXPECT_EQ(invocation->connect.deadline, absl::Seconds(30));
}

TEST(ParseArgs, HelpAnywhere) {
  for (const char* line :
       {"help", "--help", "-h", "vm create --help", "inject mce a -h"}) {
    absl::StatusOr<Invocation> invocation = Parse(line);
    ASSERT_TRUE(invocation.ok()) << line << ": " << invocation.status();
    EXPECT_EQ(invocation->rpc, Rpc::kHelp) << line;
  }
}

struct BadCase {
  std::string line;
  std::string error;
};

class UsageError : public testing::TestWithParam<BadCase> {};

TEST_P(UsageError, NamesTheProblem) {
  absl::StatusOr<Invocation> invocation = Parse(GetParam().line);
  ASSERT_FALSE(invocation.ok()) << GetParam().line;
  EXPECT_EQ(invocation.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(invocation.status().message(), GetParam().error);
}

INSTANTIATE_TEST_SUITE_P(
    BadInput, UsageError,
    testing::Values(
        BadCase{"", "missing COMMAND (see vexctl help)"},
        BadCase{"--json", "missing COMMAND (see vexctl help)"},
        BadCase{"bogus", "unknown command 'bogus'"},
        BadCase{"vm",
                "vm: missing subcommand "
                "(create|start|pause|resume|stop|delete|show|list)"},
        BadCase{"vm frob a",
                "vm: unknown subcommand 'frob' "
                "(create|start|pause|resume|stop|delete|show|list)"},
        BadCase{"inject --vcpu 0",
                "inject: missing subcommand "
                "(serror|ext-abort|exception|nmi|mce)"},
        BadCase{"vm start", "vm start: missing NAME"},
        BadCase{"vm start a b", "vm start: unexpected argument 'b'"},
        BadCase{"vm list a", "vm list: unexpected argument 'a'"},
        BadCase{"snapshot save a", "snapshot save: missing FILE"},
        BadCase{"vm create a --vcpus 1 --memory-mib 1",
                "vm create: missing --arch"},
        BadCase{"vm create a --arch mips --vcpus 1 --memory-mib 1",
                "vm create: --arch: 'mips' is not one of x86_64|arm64"},
        BadCase{"vm create a --arch x86_64 --memory-mib 1",
                "vm create: missing --vcpus"},
        BadCase{"vm create a --arch x86_64 --vcpus 1",
                "vm create: missing --memory-mib"},
        BadCase{
            "vm create a --arch x86_64 --vcpus 1 --memory-mib 0x100000000000",
            "vm create: --memory-mib: '0x100000000000' is out of range "
            "(max 17592186044415 = 0xfffffffffff)"},
        BadCase{"vm create a --arch x86_64 --vcpus 1 --memory-mib 1 --guest "
                "witness --guest-file g",
                "vm create: give --guest or --guest-file, not both"},
        BadCase{"inject nmi a", "inject nmi: missing --vcpu"},
        BadCase{"inject nmi a --vcpu x",
                "inject nmi: --vcpu: 'x' is not a number (decimal, or hex with "
                "0x)"},
        BadCase{"inject nmi a --vcpu -1",
                "inject nmi: --vcpu: '-1' is not a number (decimal, or hex "
                "with 0x)"},
        BadCase{"inject nmi a --vcpu 0x",
                "inject nmi: --vcpu: '0x' is not a number"},
        BadCase{"inject nmi a --vcpu 12abc",
                "inject nmi: --vcpu: '12abc' is not a number (decimal, or hex "
                "with 0x)"},
        BadCase{"inject nmi a --vcpu 0x100000000",
                "inject nmi: --vcpu: '0x100000000' is out of range (max "
                "4294967295 = 0xffffffff)"},
        BadCase{"inject mce a --vcpu 0 --bank 1 --status 0x10000000000000000",
                "inject mce: --status: '0x10000000000000000' is out of range "
                "(max 18446744073709551615 = 0xffffffffffffffff)"},
        BadCase{"inject mce a --vcpu 0 --bank 1 --status 18446744073709551616",
                "inject mce: --status: '18446744073709551616' is out of range "
                "(max 18446744073709551615 = 0xffffffffffffffff)"},
        BadCase{"inject mce a --vcpu 0 --status 1",
                "inject mce: missing --bank"},
        BadCase{"inject exception a --vcpu 0",
                "inject exception: missing --vector"},
        BadCase{"inject nmi a --vcpu 0 --bank 1",
                "inject nmi: unknown flag --bank"},
        BadCase{"inject nmi a --vcpu", "inject nmi: --vcpu needs a value"},
        BadCase{"inject nmi a --vcpu 1 --vcpu 2",
                "inject nmi: --vcpu given twice"},
        BadCase{"inject serror a --vcpu 0 --on-pending maybe",
                "inject serror: --on-pending: 'maybe' is not one of "
                "refuse|keep|replace"},
        BadCase{"vm list --json=yes", "vm list: --json takes no value"},
        BadCase{"vm list --json --json", "vm list: --json given twice"},
        BadCase{"vm list -x", "vm list: unknown flag -x"},
        BadCase{"--vcpu 1 vm list",
                "unknown flag --vcpu (before the command only global flags are "
                "allowed)"},
        BadCase{"--timeout soon vm list",
                "--timeout: 'soon' is not a positive duration (e.g. 30s, "
                "500ms, 2m)"},
        BadCase{"--timeout 0s vm list",
                "--timeout: '0s' is not a positive duration (e.g. 30s, 500ms, "
                "2m)"},
        BadCase{"--host tcp:vex1 vm list",
                "--host: target 'tcp:vex1': no port (expected unix:PATH or "
                "tcp:HOST:PORT)"},
        BadCase{"vm list --host vex1:7443",
                "--host: target 'vex1:7443': unknown scheme (expected "
                "unix:PATH or tcp:HOST:PORT)"},
        BadCase{"vm list --tls-cert c.pem",
                "--tls-cert and --tls-key go together (mutual TLS)"},
        BadCase{"pending", "pending: missing NAME (or --all)"},
        BadCase{"pending a --all", "pending: give NAME or --all, not both"},
        BadCase{"state a --vcpu 1 --vcpu z",
                "state: --vcpu: 'z' is not a number (decimal, or hex with 0x)"},
        BadCase{"events --no-replay", "events: --no-replay needs --follow"},
        BadCase{"events a b", "events: unexpected argument 'b'"},
        BadCase{"guest a", "guest: missing ACTION"},
        BadCase{"guest a dance",
                "guest: ACTION: 'dance' is not one of "
                "memcheck|unmask-serror|esb-read-disr|read-disr|settings"},
        BadCase{"guest a memcheck --heartbeat-ms 5",
                "guest: --heartbeat-ms, --workset-pages, --dirty-pages-per-sec, "
                "--hold-mask and --touch-pages are for 'guest NAME settings'"},
        BadCase{"host", "host: missing subcommand (caps)"},
        BadCase{"migrate a", "migrate: missing --to tcp:HOST:PORT"},
        BadCase{"migrate --to tcp:h:7500", "migrate: missing NAME"},
        BadCase{"migrate a --to unix:/run/v.sock",
                "migrate: --to: 'unix:/run/v.sock' is not tcp:HOST:PORT (the "
                "destination vexd's --migration_listen)"},
        BadCase{"migrate a --to tcp:h",
                "migrate: --to: target 'tcp:h': no port (expected unix:PATH "
                "or tcp:HOST:PORT)"},
        BadCase{"migrate a --to tcp:h:7500 --max-rounds x",
                "migrate: --max-rounds: 'x' is not a number (decimal, or hex "
                "with 0x)"},
        BadCase{"migrate a --to tcp:h:7500 --degrade=yes",
                "migrate: --degrade takes no value"},
        BadCase{"migrate-cancel", "migrate-cancel: missing NAME"},
        BadCase{"migrate-status a b",
                "migrate-status: unexpected argument 'b'"}));

TEST(UsageHint, ShowsTheNamedCommand) {
  EXPECT_EQ(UsageHint({"vm", "start"}),
            "usage: vexctl vm start NAME\n"
            "(vexctl help lists every command and flag)\n");
  EXPECT_EQ(UsageHint({"--json", "pending", "a", "--all"}),
            "usage: vexctl pending NAME | --all\n"
            "(vexctl help lists every command and flag)\n");
}

TEST(UsageHint, ShowsTheGroupForAnUnknownSubcommand) {
  std::string hint = UsageHint({"snapshot", "frob"});
  EXPECT_NE(hint.find("usage: vexctl snapshot save NAME FILE"),
            std::string::npos);
  EXPECT_NE(hint.find("usage: vexctl snapshot restore FILE"),
            std::string::npos);
  EXPECT_NE(hint.find("usage: vexctl snapshot inspect FILE"),
            std::string::npos);
}

TEST(UsageHint, GeneralFormForAnUnknownCommand) {
  EXPECT_EQ(UsageHint({"frob"}),
            "usage: vexctl [FLAGS] COMMAND [ARGS]\n"
            "(vexctl help lists every command and flag)\n");
}

TEST(UsageText, ListsEveryCommandAndGlobalFlag) {
  const std::string usage = UsageText();
  for (const CommandSpec& command : Commands()) {
    std::string words = absl::StrJoin(command.words, " ");
    EXPECT_NE(usage.find("  " + words), std::string::npos) << words;
  }
  for (const GlobalFlagSpec& global : GlobalFlags()) {
    EXPECT_NE(usage.find("--" + std::string(global.flag.name)),
              std::string::npos);
  }
}

// A command's flags are unique and never shadow a global flag (which would make
// the global one unreachable after that command).
TEST(CommandTable, FlagsAreUniqueAndLeaveGlobalFlagsAlone) {
  for (const CommandSpec& command : Commands()) {
    std::set<std::string> seen;
    for (const FlagSpec& flag : command.flags) {
      EXPECT_TRUE(seen.insert(std::string(flag.name)).second)
          << absl::StrJoin(command.words, " ") << " --" << flag.name;
      for (const GlobalFlagSpec& global : GlobalFlags()) {
        EXPECT_NE(flag.name, global.flag.name)
            << absl::StrJoin(command.words, " ") << " shadows a global flag";
      }
    }
  }
}

}  // namespace
}  // namespace vexstate::client
