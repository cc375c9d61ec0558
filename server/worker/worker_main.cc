// vexd_worker: the VMM worker process vexd runs once per VM. It serves the private VmWorker
// service (proto/vexstate/v1/worker.proto) on a Unix socket.
//
//   vexd_worker --socket=PATH --config_file=FILE [--name=NAME] [--start]
//   vexd_worker --socket=PATH --restore_file=FILE [--name=NAME] [--allow_degrade] [--resume]
//   vexd_worker --socket=PATH --incoming_config_file=FILE --migration_id=ID --data_listen=HOST:0
//               --tls_dir=DIR [--name=NAME] [--allow_degrade]
//
// --config_file holds a binary vexstate.v1.VmConfig: a fresh VM, VM_CREATED until Resume (or
// running at once with --start). --restore_file is a snapshot file: the VM saved in it,
// VM_PAUSED until Resume (or running at once with --resume). --incoming_config_file (a binary
// VmConfig) makes the empty VM of an incoming live migration, VM_CREATED, and serves its
// MigrationData stream on --data_listen with mutual TLS (tools/make_certs.sh files in
// --tls_dir, "server" role); GetIncoming tells vexd the endpoint and the one-time token, and the
// VM runs only after FinishIncoming(commit).
//
// Startup protocol, for vexd:
//   success: "vexd-worker: ready <socket>" on stdout (flushed) once the server listens (and,
//            with --start/--resume, the VM runs);
//   failure: exactly one line "vexd-worker: error: <GRPC_CODE_NAME>: <message>" on stderr and
//            exit status 2, so vexd can answer with the same status.
// Only flags absl cannot parse at all (an unknown flag, a malformed value) end differently:
// absl's message and exit status 1.
//
// Lifetime: until the Shutdown RPC or SIGTERM/SIGINT (the VM is stopped, the socket removed,
// exit status 0). The worker does not depend on its parent: vexd starts it in a session of its
// own, SIGHUP is ignored, and a restarted vexd re-attaches through the socket.
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "grpc/support/log.h"
#include "grpcpp/security/server_credentials.h"
#include "grpcpp/server.h"
#include "grpcpp/server_builder.h"
#include "migration/data_service.h"
#include "migration/tls.h"
#include "server/worker/console_mirror.h"
#include "server/worker/read_file.h"
#include "server/worker/rpc_tuning.h"
#include "server/worker/socket_path.h"
#include "server/worker/worker_service.h"
#include "server/worker/worker_vm.h"

ABSL_FLAG(std::string, socket, "", "Unix socket to serve VmWorker on (created with mode 0600)");
ABSL_FLAG(std::string, name, "", "the VM's name (default: the name in the config or the snapshot)");
ABSL_FLAG(std::string, config_file, "", "binary vexstate.v1.VmConfig: create a fresh VM");
ABSL_FLAG(std::string, restore_file, "", "snapshot file: restore the VM saved in it");
ABSL_FLAG(bool, allow_degrade, false,
          "with --restore_file: deliver what this host can and record what was dropped (default: refuse)");
ABSL_FLAG(bool, start, false, "with --config_file: run the VM at once (default: VM_CREATED until Resume)");
ABSL_FLAG(bool, resume, false, "with --restore_file: run the VM at once (default: VM_PAUSED until Resume)");
ABSL_FLAG(std::string, incoming_config_file, "",
          "binary vexstate.v1.VmConfig: the empty VM of an incoming live migration");
ABSL_FLAG(std::string, migration_id, "", "with --incoming_config_file: the migration's id");
ABSL_FLAG(std::string, data_listen, "", "with --incoming_config_file: HOST:PORT to serve MigrationData on");
ABSL_FLAG(std::string, tls_dir, "", "with --incoming_config_file: ca.pem, server.pem and server.key");
ABSL_FLAG(uint64_t, event_buffer, vexstate::worker::EventLog::kDefaultCapacity,
          "how many of the newest events the worker keeps for WatchEvents replay");

namespace vexstate::worker {
namespace {

// gRPC logs nothing of ours before "ready": a startup failure is our one line only.
std::atomic<bool> g_ready{false};

void GrpcLog(gpr_log_func_args* args) {
  if (g_ready.load()) std::fprintf(stderr, "vexd-worker: grpc: %s\n", args->message);
}

int Fail(const absl::Status& status) {
  std::string message(status.message());
  std::replace(message.begin(), message.end(), '\n', ' ');  // one line, whatever the message holds
  std::fprintf(stderr, "vexd-worker: error: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               message.c_str());
  return 2;
}

absl::Status CheckFlags(const std::vector<char*>& args) {
  if (args.size() > 1) return absl::InvalidArgumentError(absl::StrFormat("unexpected argument \"%s\"", args[1]));
  if (absl::GetFlag(FLAGS_socket).empty()) return absl::InvalidArgumentError("--socket is required");
  const bool create = !absl::GetFlag(FLAGS_config_file).empty();
  const bool restore = !absl::GetFlag(FLAGS_restore_file).empty();
  const bool incoming = !absl::GetFlag(FLAGS_incoming_config_file).empty();
  if (int(create) + int(restore) + int(incoming) != 1) {
    return absl::InvalidArgumentError(
        "give exactly one of --config_file (a new VM), --restore_file (a snapshot) and --incoming_config_file (an "
        "incoming migration)");
  }
  if (incoming) {
    if (absl::GetFlag(FLAGS_migration_id).empty() || absl::GetFlag(FLAGS_data_listen).empty() ||
        absl::GetFlag(FLAGS_tls_dir).empty()) {
      return absl::InvalidArgumentError("--incoming_config_file needs --migration_id, --data_listen and --tls_dir");
    }
    if (absl::GetFlag(FLAGS_start) || absl::GetFlag(FLAGS_resume)) {
      return absl::InvalidArgumentError("an incoming VM runs only when its migration commits: no --start/--resume");
    }
    return absl::OkStatus();
  }
  if (create && (absl::GetFlag(FLAGS_resume) || absl::GetFlag(FLAGS_allow_degrade))) {
    return absl::InvalidArgumentError(
        "--resume and --allow_degrade go with --restore_file; a new VM runs with --start");
  }
  if (restore && absl::GetFlag(FLAGS_start)) {
    return absl::InvalidArgumentError("--start goes with --config_file; a restored VM runs with --resume");
  }
  if (absl::GetFlag(FLAGS_event_buffer) == 0) return absl::InvalidArgumentError("--event_buffer must be at least 1");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<WorkerVm>> StartVm() {
  const size_t capacity = absl::GetFlag(FLAGS_event_buffer);
  const std::string name = absl::GetFlag(FLAGS_name);
  if (!absl::GetFlag(FLAGS_restore_file).empty()) {
    return WorkerVm::Restore(absl::GetFlag(FLAGS_restore_file), name, absl::GetFlag(FLAGS_allow_degrade), capacity);
  }
  const bool incoming = !absl::GetFlag(FLAGS_incoming_config_file).empty();
  const std::string path = incoming ? absl::GetFlag(FLAGS_incoming_config_file) : absl::GetFlag(FLAGS_config_file);
  absl::StatusOr<std::string> bytes = ReadWholeFile(path, "config file");
  if (!bytes.ok()) return bytes.status();
  v1::VmConfig config;
  if (!config.ParseFromString(*bytes)) {
    return absl::InvalidArgumentError(absl::StrFormat("config file %s is not a binary vexstate.v1.VmConfig", path));
  }
  if (!name.empty()) config.set_name(name);
  if (incoming) {
    return WorkerVm::CreateIncoming(std::move(config), absl::GetFlag(FLAGS_migration_id),
                                    absl::GetFlag(FLAGS_allow_degrade), capacity);
  }
  return WorkerVm::Create(std::move(config), capacity);
}

// An incoming migration's MigrationData server (null for other workers).
absl::StatusOr<std::unique_ptr<migration::DataServer>> StartDataServer(WorkerVm& worker) {
  if (worker.incoming() == nullptr) return std::unique_ptr<migration::DataServer>();
  absl::StatusOr<migration::TlsPem> tls =
      migration::LoadTls(migration::TlsFilesIn(absl::GetFlag(FLAGS_tls_dir), "server"));
  if (!tls.ok()) return tls.status();
  return migration::DataServer::Start(absl::GetFlag(FLAGS_data_listen), *tls, worker.incoming());
}

// Set once, by the Shutdown RPC or a stop signal, whichever comes first.
class ShutdownRequest {
 public:
  void Request(const std::string& reason) {
    absl::MutexLock lock(&mu_);
    if (requested_) return;
    requested_ = true;
    reason_ = reason;
  }
  std::string Wait() {
    absl::MutexLock lock(&mu_);
    mu_.Await(absl::Condition(&requested_));
    return reason_;
  }

 private:
  absl::Mutex mu_;
  bool requested_ ABSL_GUARDED_BY(mu_) = false;
  std::string reason_ ABSL_GUARDED_BY(mu_);
};

// SIGTERM and SIGINT are blocked in every thread (threads inherit the mask, so this runs
// before any is created) and taken by one thread with sigwait, where stopping is safe to do.
// The vCPU kick signal (SIGRTMIN+3, vcpu_thread.cc) stays unblocked.
sigset_t BlockStopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  return set;
}

void WatchStopSignals(sigset_t set, ShutdownRequest* shutdown) {
  std::thread([set, shutdown] {
    int signal_number = 0;
    if (sigwait(&set, &signal_number) == 0) {
      shutdown->Request(absl::StrFormat("stopped by %s", signal_number == SIGTERM ? "SIGTERM" : "SIGINT"));
    }
  }).detach();  // blocked in sigwait for the life of the process when shutdown comes by RPC
}

// Every answer (Shutdown's included) and the streams' last events are handed to the
// transport when their handlers return, which they do at once once the VM is stopped. The
// deadline only bounds gRPC's wait for clients to close their connections: an idle client
// channel is polled only every few seconds (gRPC's backup poller), so without it a connected
// vexd would hold the exit that long.
void StopServer(grpc::Server& server) { server.Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1)); }

int Run(int argc, char** argv) {
  absl::SetProgramUsageMessage(
      "the VMM worker vexd runs once per VM.\n"
      "  vexd_worker --socket=PATH --config_file=FILE [--name=NAME] [--start]\n"
      "  vexd_worker --socket=PATH --restore_file=FILE [--name=NAME] [--allow_degrade] [--resume]");
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  TuneDaemonProcess();
  gpr_set_log_function(GrpcLog);
  // vexd may die or close its end of our stdout: neither is a reason to stop the VM.
  signal(SIGHUP, SIG_IGN);
  signal(SIGPIPE, SIG_IGN);
  const sigset_t stop_signals = BlockStopSignals();

  if (absl::Status s = CheckFlags(args); !s.ok()) return Fail(s);
  if (absl::Status s = ConsoleMirrorFromEnvironment().status(); !s.ok()) return Fail(s);
  const std::string socket_path = absl::GetFlag(FLAGS_socket);
  if (absl::Status s = PrepareSocketPath(socket_path); !s.ok()) return Fail(s);
  absl::StatusOr<std::unique_ptr<WorkerVm>> worker = StartVm();
  if (!worker.ok()) return Fail(worker.status());

  ShutdownRequest shutdown;
  WorkerService service(worker->get(), [&shutdown] { shutdown.Request("stopped by request (Shutdown)"); });
  // Declared after the worker: shut down before the destination it feeds is destroyed.
  absl::StatusOr<std::unique_ptr<migration::DataServer>> data_server = StartDataServer(**worker);
  if (!data_server.ok()) return Fail(data_server.status());
  if (*data_server != nullptr) service.set_data_endpoint((*data_server)->endpoint());
  grpc::ServerBuilder builder;
  builder.AddListeningPort("unix:" + socket_path, grpc::InsecureServerCredentials());
  builder.RegisterService(&service);
  ConfigureSyncServer(builder);
  // Only vexd's user may connect: the socket is created 0600 (umask) and checked after.
  const mode_t old_umask = umask(0177);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  umask(old_umask);
  if (server == nullptr) {
    return Fail(absl::UnavailableError(absl::StrFormat("cannot listen on unix socket %s", socket_path)));
  }
  absl::Status ready = chmod(socket_path.c_str(), 0600) == 0
                           ? absl::OkStatus()
                           : absl::ErrnoToStatus(errno, absl::StrFormat("chmod 0600 %s", socket_path));
  if (ready.ok() && (absl::GetFlag(FLAGS_start) || absl::GetFlag(FLAGS_resume))) {
    ready = (*worker)->Resume().status();
  }
  if (!ready.ok()) {
    StopServer(*server);
    RemoveSocketUnlessServed(socket_path);
    return Fail(ready);
  }
  WatchStopSignals(stop_signals, &shutdown);
  g_ready.store(true);
  std::printf("vexd-worker: ready %s\n", socket_path.c_str());
  std::fflush(stdout);

  const std::string reason = shutdown.Wait();
  (*worker)->Stop(reason);  // no-op after the Shutdown RPC; closes the event streams
  StopServer(*server);
  RemoveSocketUnlessServed(socket_path);
  return 0;
}

}  // namespace
}  // namespace vexstate::worker

int main(int argc, char** argv) { return vexstate::worker::Run(argc, argv); }
