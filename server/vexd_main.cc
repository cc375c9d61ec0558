// vexd: the per-host vexstate daemon. It serves the control plane (control.proto: VmService,
// ExceptionService, SnapshotService, EventService, plus grpc.health.v1.Health and server
// reflection) and runs each VM in its own worker process (vexd_worker), which outlives vexd:
// a restarted vexd re-attaches to its workers.
//
//   vexd [--state_dir DIR] [--listen unix:PATH | --listen tcp:HOST:PORT ...]
//        [--tokens FILE] [--worker_binary PATH]
//        [--tls_cert PEM --tls_key PEM [--tls_client_ca PEM]] [--insecure_tcp]
//        [--migration_listen tcp:HOST:PORT --migration_tls_dir DIR] [--max_mce_banks N]
//
// --state_dir: default /var/lib/vexstate for root, $XDG_RUNTIME_DIR/vexstate for other users
//   (at most 34 bytes: VM sockets live in it). One vexd per state dir (flock on vexd.lock).
// --listen: repeatable and/or comma-separated; default unix:<state_dir>/vexd.sock (mode 0600).
//   TCP is loopback unless HOST says otherwise; a non-loopback TCP address needs TLS
//   (--tls_cert/--tls_key; --tls_client_ca makes it mutual TLS) or --insecure_tcp.
// --tokens: "<token> <viewer|operator> [name]" per line, '#' comments, mode 0600. Default
//   <state_dir>/tokens, created with one random operator and one random viewer token.
// --worker_binary: default vexd_worker next to vexd's own executable (or in worker/ beside
//   it, as in Bazel's output tree).
// --migration_listen: serve MigrationPeer (host-to-host live migration) there, with mutual TLS
//   from --migration_tls_dir (tools/make_certs.sh: ca.pem, server.pem/.key, client.pem/.key; the
//   client pair is used towards other vexds and by source workers). HOST is also where incoming
//   migrations' workers listen for their data stream (port 0). MigrationService (on the normal
//   listeners, operator role) migrates VMs away with the same TLS files.
// --max_mce_banks: a VM created or received here gets at most N MCE banks, and the host
//   capabilities this vexd reports to migration sources say N (0 = all the host offers).
// --testing_delay_before_finish_ms, --testing_delay_before_confirm_ms: FAULT INJECTION FOR TESTS
//   ONLY (off by default): a migration from this vexd logs "testing: ... waiting N ms before
//   <step>" and waits there, so that a test can kill a process in that window.
//
// At start, journalled migrations interrupted by a previous vexd's death are settled
// (supervisor.h for incoming VMs, migration_service.h for outgoing ones; the latter in the
// background, so start-up never waits for a peer).
//
// SIGTERM/SIGINT: stop serving and exit 0; the workers (and their VMs) keep running.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/time.h"
#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "migration/tls.h"
#include "server/auth.h"
#include "server/event_hub.h"
#include "server/event_service.h"
#include "server/exception_service.h"
#include "server/listen.h"
#include "server/logging.h"
#include "server/migration_peer.h"
#include "server/migration_service.h"
#include "server/snapshot_service.h"
#include "server/state_dir.h"
#include "server/supervisor.h"
#include "server/vm_service.h"
#include "server/worker/rpc_tuning.h"
#include "server/worker/socket_path.h"

ABSL_FLAG(std::string, state_dir, "",
          "vexd's state directory (default: /var/lib/vexstate for root, else $XDG_RUNTIME_DIR/vexstate)");
ABSL_FLAG(std::vector<std::string>, listen, {},
          "where to serve: unix:PATH or tcp:HOST:PORT; repeatable, or comma-separated (default: "
          "unix:<state_dir>/vexd.sock)");
ABSL_FLAG(std::string, tokens, "",
          "bearer tokens file, lines '<token> <viewer|operator> [name]' (default: <state_dir>/tokens, created "
          "with one operator and one viewer token)");
ABSL_FLAG(std::string, worker_binary, "", "the vexd_worker binary (default: next to vexd)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain for TLS on TCP listeners");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls_cert");
ABSL_FLAG(std::string, tls_client_ca, "",
          "PEM CA bundle: require client certificates signed by it on TCP listeners (mutual TLS)");
ABSL_FLAG(bool, insecure_tcp, false, "allow plaintext TCP on non-loopback addresses (tokens travel in clear)");
ABSL_FLAG(absl::Duration, worker_ready_timeout, absl::Seconds(60), "how long a new worker may take to be ready");
ABSL_FLAG(std::string, migration_listen, "",
          "tcp:HOST:PORT: serve MigrationPeer there with mutual TLS; incoming data streams listen on HOST");
ABSL_FLAG(std::string, migration_tls_dir, "",
          "directory of tools/make_certs.sh files for migration (ca.pem, server.pem/.key, client.pem/.key)");
ABSL_FLAG(uint32_t, max_mce_banks, 0, "give VMs created or received here at most N MCE banks (0 = all)");
// Fault injection for tests (tests/migration/fault_recovery_test.py); off (0) by default.
ABSL_FLAG(uint32_t, testing_delay_before_finish_ms, 0,
          "TESTS ONLY (fault injection): a migration from this vexd waits this long, with a log line, after "
          "the destination verified the copy (the commit intent is journalled) and before Finish(commit) is "
          "sent (0 = off)");
ABSL_FLAG(uint32_t, testing_delay_before_confirm_ms, 0,
          "TESTS ONLY (fault injection): a migration from this vexd waits this long, with a log line, after the "
          "destination committed and before the source worker is told (0 = off)");
ABSL_FLAG(uint64_t, event_history, vexstate::vexd::EventHub::kDefaultCapacity,
          "how many of the newest events vexd keeps for WatchEvents replay");

namespace vexstate::vexd {
namespace {

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "vexd: %s\n", std::string(status.message()).c_str());
  return 1;
}

// vexd_worker next to this executable, or in worker/ beside it (Bazel's bazel-bin/server).
std::string DefaultWorkerBinary() {
  char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) return "vexd_worker";
  const std::string exe(self, static_cast<size_t>(n));
  const std::string dir = exe.substr(0, exe.rfind('/'));
  for (const std::string& candidate : {dir + "/vexd_worker", dir + "/worker/vexd_worker"}) {
    if (access(candidate.c_str(), X_OK) == 0) return candidate;
  }
  return dir + "/vexd_worker";
}

absl::StatusOr<TokenStore> LoadTokens(const StateDir& dir) {
  std::string path = absl::GetFlag(FLAGS_tokens);
  if (path.empty()) {
    path = dir.default_tokens();
    if (access(path.c_str(), F_OK) != 0) {
      absl::Status created = TokenStore::CreateDefault(path);
      if (!created.ok()) return created;
      Log("created tokens file %s with one operator and one viewer token (pass it to vexctl with --token_file)", path);
    }
  }
  absl::StatusOr<TokenStore> tokens = TokenStore::Load(path);
  if (tokens.ok()) Log("%d bearer tokens from %s", tokens->principals().size(), path);
  return tokens;
}

int Run(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "the per-host vexstate daemon.\n"
      "  vexd [--state_dir DIR] [--listen unix:PATH|tcp:HOST:PORT ...] [--tokens FILE] [--worker_binary PATH]\n"
      "       [--tls_cert PEM --tls_key PEM [--tls_client_ca PEM]] [--insecure_tcp]");
  absl::ParseCommandLine(argc, argv);
  worker::TuneDaemonProcess();
  // Every file and socket vexd creates is its user's alone.
  umask(077);
  signal(SIGPIPE, SIG_IGN);
  // Stop signals are taken by sigwait below; blocked before any thread exists, so every
  // thread inherits the mask. (Workers get a clean mask: worker_launcher.cc.)
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  std::string root = absl::GetFlag(FLAGS_state_dir);
  if (root.empty()) {
    absl::StatusOr<std::string> fallback = DefaultStateDir();
    if (!fallback.ok()) return Fail(fallback.status());
    root = *fallback;
  }
  absl::StatusOr<std::unique_ptr<StateDir>> dir = StateDir::Open(root);
  if (!dir.ok()) return Fail(dir.status());

  TlsOptions tls;
  tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  tls.key_file = absl::GetFlag(FLAGS_tls_key);
  tls.client_ca_file = absl::GetFlag(FLAGS_tls_client_ca);
  tls.insecure_tcp = absl::GetFlag(FLAGS_insecure_tcp);
  if (absl::Status valid = ValidateTlsOptions(tls); !valid.ok()) return Fail(valid);
  std::vector<std::string> specs = RepeatedFlagValues(argc, argv, "listen");
  if (specs.empty()) specs.push_back(absl::StrCat("unix:", (*dir)->default_socket()));
  std::vector<ListenAddress> addresses;
  grpc::ServerBuilder builder;
  std::vector<int> selected_ports(specs.size(), 0);
  for (size_t i = 0; i < specs.size(); ++i) {
    absl::StatusOr<ListenAddress> address = ParseListenAddress(specs[i]);
    if (!address.ok()) return Fail(address.status());
    absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> credentials = CredentialsFor(*address, tls);
    if (!credentials.ok()) return Fail(credentials.status());
    if (address->kind == ListenAddress::Kind::kUnix) {
      if (absl::Status ready = worker::PrepareSocketPath(address->unix_path); !ready.ok()) {
        return Fail(absl::Status(ready.code(), absl::StrCat("--listen ", specs[i], ": ", ready.message())));
      }
    }
    builder.AddListeningPort(address->grpc_address, *credentials, &selected_ports[i]);
    addresses.push_back(std::move(*address));
  }

  absl::StatusOr<TokenStore> tokens = LoadTokens(**dir);
  if (!tokens.ok()) return Fail(tokens.status());
  const Authorizer auth(std::move(*tokens));

  Supervisor::Options options;
  options.worker_binary = absl::GetFlag(FLAGS_worker_binary);
  if (options.worker_binary.empty()) options.worker_binary = DefaultWorkerBinary();
  if (access(options.worker_binary.c_str(), X_OK) != 0) {
    Log("warning: worker binary %s is not executable: VMs cannot be created or restored (--worker_binary)",
        options.worker_binary);
  }
  options.ready_timeout = absl::GetFlag(FLAGS_worker_ready_timeout);
  options.max_mce_banks = absl::GetFlag(FLAGS_max_mce_banks);
  EventHub hub(absl::GetFlag(FLAGS_event_history));
  absl::StatusOr<std::unique_ptr<Supervisor>> supervisor = Supervisor::Start(dir->get(), &hub, options);
  if (!supervisor.ok()) return Fail(supervisor.status());

  VmServiceImpl vm_service(&auth, supervisor->get());
  ExceptionServiceImpl exception_service(&auth, supervisor->get());
  SnapshotServiceImpl snapshot_service(&auth, supervisor->get());
  EventServiceImpl event_service(&auth, &hub);
  MigrationServiceImpl::Options migration_options;
  migration_options.tls_dir = absl::GetFlag(FLAGS_migration_tls_dir);
  migration_options.testing_delay_before_finish =
      absl::Milliseconds(absl::GetFlag(FLAGS_testing_delay_before_finish_ms));
  migration_options.testing_delay_before_confirm =
      absl::Milliseconds(absl::GetFlag(FLAGS_testing_delay_before_confirm_ms));
  if (migration_options.testing_delay_before_finish > absl::ZeroDuration() ||
      migration_options.testing_delay_before_confirm > absl::ZeroDuration()) {
    Log("warning: fault injection on (--testing_delay_before_*_ms): for tests only");
  }
  MigrationServiceImpl migration_service(&auth, supervisor->get(), migration_options);
  // In the background: start-up never waits for a peer.
  migration_service.RecoverJournaled();
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  builder.RegisterService(&vm_service);
  builder.RegisterService(&exception_service);
  builder.RegisterService(&snapshot_service);
  builder.RegisterService(&event_service);
  builder.RegisterService(&migration_service);
  worker::ConfigureSyncServer(builder);
  absl::StatusOr<std::unique_ptr<MigrationPeerServer>> peer =
      MigrationPeerServer::Start(absl::GetFlag(FLAGS_migration_listen), migration_options.tls_dir, supervisor->get());
  if (!peer.ok()) {
    migration_service.Shutdown();
    (*supervisor)->Shutdown();
    return Fail(peer.status());
  }
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr) {
    migration_service.Shutdown();
    (*supervisor)->Shutdown();
    return Fail(absl::UnavailableError(absl::StrCat("cannot listen on ", absl::StrJoin(specs, ", "))));
  }
  std::vector<std::string> serving;
  for (size_t i = 0; i < addresses.size(); ++i) {
    const ListenAddress& address = addresses[i];
    if (address.kind == ListenAddress::Kind::kUnix) {
      chmod(address.unix_path.c_str(), 0600);
      serving.push_back(address.spec);
    } else {
      const bool bracketed = address.host.find(':') != std::string::npos;
      serving.push_back(absl::StrCat("tcp:", bracketed ? "[" : "", address.host, bracketed ? "]" : "", ":",
                                     selected_ports[i], tls.cert_file.empty() ? "" : " (TLS)",
                                     tls.client_ca_file.empty() ? "" : " (mutual TLS)"));
    }
  }
  Log("serving on %s (state dir %s, worker %s)", absl::StrJoin(serving, ", "), (*dir)->root(), options.worker_binary);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  Log("%s: shutting down; the workers keep running", signal_number == SIGTERM ? "SIGTERM" : "SIGINT");
  server->GetHealthCheckService()->SetServingStatus(false);
  hub.Close();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (*peer != nullptr) (*peer)->Shutdown();
  migration_service.Shutdown();
  (*supervisor)->Shutdown();
  for (const ListenAddress& address : addresses) {
    if (address.kind == ListenAddress::Kind::kUnix) unlink(address.unix_path.c_str());
  }
  return 0;
}

}  // namespace
}  // namespace vexstate::vexd

int main(int argc, char** argv) { return vexstate::vexd::Run(argc, argv); }
