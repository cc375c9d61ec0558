#include "client/commands.h"

#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/connect_options.h"
#include "vexstate/v1/control.pb.h"
#include "vexstate/v1/migration.pb.h"

namespace vexstate::client {
namespace {

namespace v1 = ::vexstate::v1;

constexpr FlagSpec kPauseAround{"pause-around", /*takes_value=*/false};
constexpr FlagSpec kVcpu{"vcpu"};
constexpr FlagSpec kWitnessFlags[] = {{"heartbeat-ms"},
                                      {"workset-pages"},
                                      {"dirty-pages-per-sec"},
                                      {"hold-mask"},
                                      {"touch-pages"}};

constexpr std::pair<absl::string_view, v1::Arch> kArches[] = {
    {"x86_64", v1::ARCH_X86_64}, {"arm64", v1::ARCH_ARM64}};

constexpr std::pair<absl::string_view, v1::SErrorOverwritePolicy>
    kOnPendingPolicies[] = {{"refuse", v1::SERROR_OVERWRITE_REFUSE},
                            {"keep", v1::SERROR_OVERWRITE_KEEP_PENDING},
                            {"replace", v1::SERROR_OVERWRITE_REPLACE}};

constexpr std::pair<absl::string_view, v1::GuestCommand> kGuestActions[] = {
    {"memcheck", v1::GUEST_COMMAND_MEMCHECK},
    {"unmask-serror", v1::GUEST_COMMAND_UNMASK_SERROR},
    {"esb-read-disr", v1::GUEST_COMMAND_ESB_READ_DISR},
    {"read-disr", v1::GUEST_COMMAND_READ_DISR},
    {"settings", v1::GUEST_COMMAND_APPLY_SETTINGS}};

template <size_t N>
std::vector<FlagSpec> With(std::vector<FlagSpec> flags,
                           const FlagSpec (&more)[N]) {
  flags.insert(flags.end(), std::begin(more), std::end(more));
  return flags;
}

bool AnyWitnessFlag(const CommandArgs& args) {
  for (const FlagSpec& flag : kWitnessFlags) {
    if (args.Has(flag.name)) return true;
  }
  return false;
}

void FillWitnessSettings(CommandArgs& args, v1::WitnessSettings* settings) {
  settings->set_heartbeat_ms(args.OptionalUint64("heartbeat-ms").value_or(0));
  settings->set_workset_pages(args.OptionalUint64("workset-pages").value_or(0));
  settings->set_dirty_pages_per_sec(
      args.OptionalUint64("dirty-pages-per-sec").value_or(0));
  settings->set_hold_mask(args.OptionalUint64("hold-mask").value_or(0));
  settings->set_touch_pages(args.OptionalUint64("touch-pages").value_or(0));
}

// -------------------------------------------------------------------------- vm

void BuildCreateVm(CommandArgs& args, Invocation* invocation) {
  auto* request = invocation->SetRequest<v1::CreateVmRequest>(Rpc::kCreateVm);
  v1::VmConfig* config = request->mutable_config();
  config->set_name(args.Arg("NAME"));
  if (!args.Has("arch")) args.Fail("missing --arch");
  config->set_arch(
      args.Choice<v1::Arch>("arch", kArches).value_or(v1::ARCH_UNSPECIFIED));
  config->set_vcpu_count(args.RequiredUint32("vcpus"));
  // MiB on the command line, bytes in the API: refuse what would overflow the
  // shift.
  config->set_memory_bytes(args.RequiredUint64("memory-mib", UINT64_MAX >> 20)
                           << 20);
  if (args.Has("guest") && args.Has("guest-file")) {
    args.Fail("give --guest or --guest-file, not both");
  } else if (args.Has("guest-file")) {
    config->mutable_guest()->set_path(args.PathFlag("guest-file"));
  } else {
    config->mutable_guest()->set_bundled(args.Has("guest") ? args.Value("guest")
                                                           : "witness");
  }
  config->set_mce_banks(args.OptionalUint32("mce-banks").value_or(0));
  if (AnyWitnessFlag(args)) {
    FillWitnessSettings(args, config->mutable_witness());
  }
  request->set_start(args.Has("start"));
}

template <Rpc kRpc>
void BuildVmRef(CommandArgs& args, Invocation* invocation) {
  invocation->SetRequest<v1::VmRef>(kRpc)->set_name(args.Arg("NAME"));
}

void BuildListVms(CommandArgs&, Invocation* invocation) {
  invocation->SetRequest<v1::ListVmsRequest>(Rpc::kListVms);
}

void BuildHostCaps(CommandArgs&, Invocation* invocation) {
  invocation->SetRequest<v1::GetHostCapabilitiesRequest>(
      Rpc::kGetHostCapabilities);
}

void BuildGuestCommand(CommandArgs& args, Invocation* invocation) {
  auto* request =
      invocation->SetRequest<v1::GuestCommandRequest>(Rpc::kSendGuestCommand);
  request->set_vm(args.Arg("NAME"));
  v1::GuestCommand command =
      args.ArgChoice<v1::GuestCommand>("ACTION", kGuestActions)
          .value_or(v1::GUEST_COMMAND_UNSPECIFIED);
  request->set_command(command);
  request->set_arg(args.OptionalUint64("arg").value_or(0));
  request->set_wait_ms(args.OptionalUint32("wait-ms").value_or(0));
  if (command == v1::GUEST_COMMAND_APPLY_SETTINGS) {
    FillWitnessSettings(args, request->mutable_settings());
  } else if (command != v1::GUEST_COMMAND_UNSPECIFIED && AnyWitnessFlag(args)) {
    args.Fail(
        "--heartbeat-ms, --workset-pages, --dirty-pages-per-sec, "
        "--hold-mask and --touch-pages are for 'guest NAME settings'");
  }
}

// ---------------------------------------------------------------------- inject

void BuildInjectSError(CommandArgs& args, Invocation* invocation) {
  auto* request =
      invocation->SetRequest<v1::InjectSErrorRequest>(Rpc::kInjectSError);
  request->set_vm(args.Arg("NAME"));
  request->set_vcpu(args.RequiredUint32("vcpu"));
  if (std::optional<uint64_t> esr = args.OptionalUint64("esr")) {
    request->set_has_esr(true);
    request->set_esr(*esr);
  }
  request->set_on_pending(
      args.Choice<v1::SErrorOverwritePolicy>("on-pending", kOnPendingPolicies)
          .value_or(v1::SERROR_OVERWRITE_REFUSE));
  request->set_pause_around(args.Has("pause-around"));
}

void BuildInjectExtAbort(CommandArgs& args, Invocation* invocation) {
  auto* request = invocation->SetRequest<v1::InjectExternalAbortRequest>(
      Rpc::kInjectExternalAbort);
  request->set_vm(args.Arg("NAME"));
  request->set_vcpu(args.RequiredUint32("vcpu"));
  request->set_pause_around(args.Has("pause-around"));
}

void BuildInjectException(CommandArgs& args, Invocation* invocation) {
  auto* request =
      invocation->SetRequest<v1::InjectExceptionRequest>(Rpc::kInjectException);
  request->set_vm(args.Arg("NAME"));
  request->set_vcpu(args.RequiredUint32("vcpu"));
  request->set_vector(args.RequiredUint32("vector"));
  if (std::optional<uint32_t> error_code = args.OptionalUint32("error-code")) {
    request->set_has_error_code(true);
    request->set_error_code(*error_code);
  }
  if (std::optional<uint64_t> payload = args.OptionalUint64("payload")) {
    request->set_has_payload(true);
    request->set_payload(*payload);
  }
  request->set_pause_around(args.Has("pause-around"));
}

void BuildInjectNmi(CommandArgs& args, Invocation* invocation) {
  auto* request = invocation->SetRequest<v1::InjectNmiRequest>(Rpc::kInjectNmi);
  request->set_vm(args.Arg("NAME"));
  request->set_vcpu(args.RequiredUint32("vcpu"));
  request->set_pause_around(args.Has("pause-around"));
}

void BuildInjectMce(CommandArgs& args, Invocation* invocation) {
  auto* request = invocation->SetRequest<v1::InjectMachineCheckRequest>(
      Rpc::kInjectMachineCheck);
  request->set_vm(args.Arg("NAME"));
  request->set_vcpu(args.RequiredUint32("vcpu"));
  request->set_bank(args.RequiredUint32("bank"));
  request->set_status(args.RequiredUint64("status"));
  request->set_addr(args.OptionalUint64("addr").value_or(0));
  request->set_misc(args.OptionalUint64("misc").value_or(0));
  request->set_mcg_status(args.OptionalUint64("mcg-status").value_or(0));
  request->set_pause_around(args.Has("pause-around"));
}

// ----------------------------------------------------------------------- state

void BuildPending(CommandArgs& args, Invocation* invocation) {
  auto* request =
      invocation->SetRequest<v1::QueryPendingRequest>(Rpc::kQueryPending);
  bool all = args.Has("all");
  const std::string& name = args.Arg("NAME");
  if (all && !name.empty()) args.Fail("give NAME or --all, not both");
  if (!all && name.empty()) args.Fail("missing NAME (or --all)");
  request->set_vm(name);
  request->set_all_vms(all);
}

void BuildState(CommandArgs& args, Invocation* invocation) {
  auto* request = invocation->SetRequest<v1::GetExceptionStateRequest>(
      Rpc::kGetExceptionState);
  request->set_vm(args.Arg("NAME"));
  for (uint32_t vcpu : args.Uint32s("vcpu")) request->add_vcpus(vcpu);
}

// -------------------------------------------------------------------- snapshot

void BuildSnapshotSave(CommandArgs& args, Invocation* invocation) {
  auto* request =
      invocation->SetRequest<v1::SaveSnapshotRequest>(Rpc::kSaveSnapshot);
  request->set_vm(args.Arg("NAME"));
  request->set_path(args.PathArg("FILE"));
  request->set_pause_around(args.Has("pause-around"));
}

void BuildSnapshotRestore(CommandArgs& args, Invocation* invocation) {
  auto* request =
      invocation->SetRequest<v1::RestoreSnapshotRequest>(Rpc::kRestoreSnapshot);
  request->set_path(args.PathArg("FILE"));
  request->set_name(args.Value("name"));
  request->set_resume(args.Has("resume"));
  request->set_allow_degrade(args.Has("allow-degrade"));
}

void BuildSnapshotInspect(CommandArgs& args, Invocation* invocation) {
  invocation->SetRequest<v1::InspectSnapshotRequest>(Rpc::kInspectSnapshot)
      ->set_path(args.PathArg("FILE"));
}

// ---------------------------------------------------------------------- events

void BuildEvents(CommandArgs& args, Invocation* invocation) {
  auto* request =
      invocation->SetRequest<v1::WatchEventsRequest>(Rpc::kWatchEvents);
  request->set_vm(args.Arg("NAME"));
  invocation->follow = args.Has("follow");
  if (args.Has("no-replay") && !invocation->follow) {
    args.Fail("--no-replay needs --follow");
  }
  request->set_replay(!args.Has("no-replay"));
}

// ------------------------------------------------------------------- migration

void BuildMigrate(CommandArgs& args, Invocation* invocation) {
  auto* request = invocation->SetRequest<v1::MigrateVmRequest>(Rpc::kMigrateVm);
  request->set_vm(args.Arg("NAME"));
  const std::string to = args.Value("to");
  if (!args.Has("to")) {
    args.Fail("missing --to tcp:HOST:PORT");
  } else if (!absl::StartsWith(to, "tcp:")) {
    args.Fail(absl::StrCat(
        "--to: '", to,
        "' is not tcp:HOST:PORT (the destination vexd's --migration_listen)"));
  } else if (absl::StatusOr<std::string> target = GrpcTarget(to);
             !target.ok()) {
    args.Fail(absl::StrCat("--to: ", target.status().message()));
  }
  request->set_destination(to);
  request->set_max_downtime_ms(
      args.OptionalUint32("max-downtime-ms").value_or(0));
  request->set_max_precopy_rounds(
      args.OptionalUint32("max-rounds").value_or(0));
  // MiB/s on the command line, bytes/s in the API.
  request->set_max_bandwidth_bytes_per_sec(
      args.OptionalUint64("max-bandwidth-mibps", UINT64_MAX >> 20).value_or(0)
      << 20);
  request->set_timeout_ms(args.OptionalUint32("deadline-ms").value_or(0));
  request->set_allow_degrade(args.Has("degrade"));
  request->set_destination_name(args.Value("name"));
}

void BuildMigrateCancel(CommandArgs& args, Invocation* invocation) {
  invocation->SetRequest<v1::CancelMigrationRequest>(Rpc::kCancelMigration)
      ->set_vm(args.Arg("NAME"));
}

void BuildMigrateStatus(CommandArgs& args, Invocation* invocation) {
  invocation->SetRequest<v1::QueryMigrationRequest>(Rpc::kQueryMigration)
      ->set_vm(args.Arg("NAME"));
}

// ------------------------------------------------------------------------ help

void BuildHelp(CommandArgs&, Invocation* invocation) {
  invocation->rpc = Rpc::kHelp;
}

}  // namespace

const std::vector<CommandSpec>& Commands() {
  static const auto* const kCommands = new std::vector<CommandSpec>{
      {{"vm", "create"},
       "NAME --arch x86_64|arm64 --vcpus N --memory-mib M\n"
       "[--guest witness | --guest-file F] [--mce-banks N] [--start]\n"
       "[--heartbeat-ms N] [--workset-pages N] [--dirty-pages-per-sec N] "
       "[--hold-mask M] [--touch-pages N]",
       "create a VM (CREATED; with --start, RUNNING)",
       {{"NAME"}},
       With({{"arch"},
             {"vcpus"},
             {"memory-mib"},
             {"guest"},
             {"guest-file"},
             {"mce-banks"},
             {"start", false}},
            kWitnessFlags),
       BuildCreateVm},
      {{"vm", "start"},
       "NAME",
       "start a CREATED VM",
       {{"NAME"}},
       {},
       BuildVmRef<Rpc::kStartVm>},
      {{"vm", "pause"},
       "NAME",
       "pause every vCPU",
       {{"NAME"}},
       {},
       BuildVmRef<Rpc::kPauseVm>},
      {{"vm", "resume"},
       "NAME",
       "resume a paused VM",
       {{"NAME"}},
       {},
       BuildVmRef<Rpc::kResumeVm>},
      {{"vm", "stop"},
       "NAME",
       "stop the VM and its worker (it stays listed)",
       {{"NAME"}},
       {},
       BuildVmRef<Rpc::kStopVm>},
      {{"vm", "delete"},
       "NAME",
       "remove a stopped VM from vexd",
       {{"NAME"}},
       {},
       BuildVmRef<Rpc::kDeleteVm>},
      {{"vm", "show"},
       "NAME",
       "one VM in detail",
       {{"NAME"}},
       {},
       BuildVmRef<Rpc::kGetVm>},
      {{"vm", "list"}, "", "every VM, as a table", {}, {}, BuildListVms},
      {{"inject", "serror"},
       "NAME --vcpu I [--esr ISS] [--on-pending refuse|keep|replace] "
       "[--pause-around]",
       "arm64: make a virtual SError pending (ESR: VSESR_EL2 ISS[24:0])",
       {{"NAME"}},
       {kVcpu, {"esr"}, {"on-pending"}, kPauseAround},
       BuildInjectSError},
      {{"inject", "ext-abort"},
       "NAME --vcpu I [--pause-around]",
       "arm64: make an external data abort pending",
       {{"NAME"}},
       {kVcpu, kPauseAround},
       BuildInjectExtAbort},
      {{"inject", "exception"},
       "NAME --vcpu I --vector V [--error-code E] [--payload P] "
       "[--pause-around]",
       "x86_64: make an exception pending (payload: CR2 for #PF, DR6 for #DB)",
       {{"NAME"}},
       {kVcpu, {"vector"}, {"error-code"}, {"payload"}, kPauseAround},
       BuildInjectException},
      {{"inject", "nmi"},
       "NAME --vcpu I [--pause-around]",
       "x86_64: make an NMI pending",
       {{"NAME"}},
       {kVcpu, kPauseAround},
       BuildInjectNmi},
      {{"inject", "mce"},
       "NAME --vcpu I --bank B --status S [--addr A] [--misc M] [--mcg-status "
       "G]\n"
       "[--pause-around]",
       "x86_64: raise a machine check in bank B (uncorrected: #MC pending)",
       {{"NAME"}},
       {kVcpu,
        {"bank"},
        {"status"},
        {"addr"},
        {"misc"},
        {"mcg-status"},
        kPauseAround},
       BuildInjectMce},
      {{"pending"},
       "NAME | --all",
       "what is pending, per vCPU (one atomic read per VM)",
       {{"NAME", /*optional=*/true}},
       {{"all", false}},
       BuildPending},
      {{"state"},
       "NAME [--vcpu I]...",
       "full exception state of every (or the given) vCPU",
       {{"NAME"}},
       {{"vcpu", true, /*repeatable=*/true}},
       BuildState},
      {{"snapshot", "save"},
       "NAME FILE [--pause-around]",
       "write the VM (paused, or with --pause-around) to FILE on the vexd host",
       {{"NAME"}, {"FILE"}},
       {kPauseAround},
       BuildSnapshotSave},
      {{"snapshot", "restore"},
       "FILE [--name NEW] [--resume] [--allow-degrade]",
       "create a VM from FILE (PAUSED; with --resume, RUNNING)",
       {{"FILE"}},
       {{"name"}, {"resume", false}, {"allow-degrade", false}},
       BuildSnapshotRestore},
      {{"snapshot", "inspect"},
       "FILE",
       "what FILE holds, pending exceptions decoded",
       {{"FILE"}},
       {},
       BuildSnapshotInspect},
      {{"events"},
       "[NAME] [--follow [--no-replay]]",
       "the events vexd holds (for NAME, or every VM); --follow keeps watching",
       {{"NAME", /*optional=*/true}},
       {{"follow", false}, {"no-replay", false}},
       BuildEvents},
      {{"guest"},
       "NAME memcheck|unmask-serror|esb-read-disr|read-disr [--arg A] "
       "[--wait-ms N]\n"
       "| NAME settings [--heartbeat-ms N] [--workset-pages N] "
       "[--dirty-pages-per-sec N]\n"
       "[--hold-mask M] [--touch-pages N]",
       "drive the witness guest (--wait-ms: wait for its DONE, print its "
       "reports)",
       {{"NAME"}, {"ACTION"}},
       With({{"arg"}, {"wait-ms"}}, kWitnessFlags),
       BuildGuestCommand},
      {{"host", "caps"},
       "",
       "what this host's KVM can do",
       {},
       {},
       BuildHostCaps},
      {{"migrate"},
       "NAME --to tcp:HOST:PORT [--max-downtime-ms N] [--max-rounds N]\n"
       "[--max-bandwidth-mibps N] [--deadline-ms N] [--degrade] [--name NEW]",
       "live-migrate the VM to the vexd whose --migration_listen is HOST:PORT, "
       "showing progress; --degrade lets the destination drop what it cannot "
       "represent (listed in the result)",
       {{"NAME"}},
       {{"to"},
        {"max-downtime-ms"},
        {"max-rounds"},
        {"max-bandwidth-mibps"},
        {"deadline-ms"},
        {"degrade", false},
        {"name"}},
       BuildMigrate},
      {{"migrate-cancel"},
       "NAME",
       "cancel the VM's migration (it keeps running here)",
       {{"NAME"}},
       {},
       BuildMigrateCancel},
      {{"migrate-status"},
       "NAME",
       "the VM's migration: phase and last progress",
       {{"NAME"}},
       {},
       BuildMigrateStatus},
      {{"help"}, "", "this text", {}, {}, BuildHelp},
  };
  return *kCommands;
}

const std::vector<GlobalFlagSpec>& GlobalFlags() {
  static const auto* const kFlags = new std::vector<GlobalFlagSpec>{
      {{"host"},
       "unix:PATH|tcp:HOST:PORT",
       absl::StrCat(
           "the vexd to talk to (default: $", kHostEnv,
           ", else the local vexd: unix:STATE_DIR/vexd.sock, STATE_DIR "
           "being /var/lib/vexstate for root, $XDG_RUNTIME_DIR/vexstate "
           "for others)")},
      {{"token"},
       "T",
       absl::StrCat("bearer token (default: the one in --token-file, else $",
                    kTokenEnv, ", else the one in $", kTokenFileEnv,
                    ", else for the local vexd STATE_DIR/tokens if readable)")},
      {{"token-file"},
       "F",
       "read the token from F: the first word of its first line that is not "
       "blank or a # comment"},
      {{"tls-ca"},
       "F",
       "verify vexd's certificate against this CA (turns TLS on)"},
      {{"tls-cert"}, "F", "client certificate for mutual TLS (with --tls-key)"},
      {{"tls-key"}, "F", "client private key for mutual TLS"},
      {{"tls-server-name"}, "N", "name to check vexd's certificate against"},
      {{"timeout"},
       "D",
       "deadline of each call, e.g. 30s, 500ms (default 30s)"},
      {{"json", false}, "", "print each response as one line of JSON"},
      {{"help", false}, "", "print this text"},
  };
  return *kFlags;
}

}  // namespace vexstate::client
