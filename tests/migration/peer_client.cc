// peer_client: a stand-in SOURCE host for tests/migration/fault_stream_test.py. It speaks to a
// real destination vexd exactly as a source vexd and its worker would (MigrationPeer calls and
// the MigrationData stream, mutual TLS with the lab's "client" certificate), but one step at a
// time, so that the test can replay a token or a migration id, which a correct vexd never does.
//
//   peer_client prepare --peer=HOST:PORT --tls_dir=DIR --migration_id=ID [--vm_name=NAME]
//       Prepare for an idle 1-vCPU 16 MiB x86_64 witness VM; prints the data endpoint and the
//       token (hex).
//   peer_client stream --endpoint=HOST:PORT --tls_dir=DIR --migration_id=ID --token_hex=HEX
//       Opens a data stream, sends the hello with that token and ends the stream: the
//       destination's verdict says whether the hello was accepted (then DATA_LOSS: the stream
//       ended before the final state) or refused (UNAUTHENTICATED).
//   peer_client finish --peer=HOST:PORT --tls_dir=DIR --migration_id=ID [--commit]
//   peer_client worker-cancel --worker_socket=PATH
//       What vexd sends a source worker on CancelMigration (CancelMigrateOut), sent when no
//       migration runs: the cancel that arrives just after a migration's transfer ended.
//
// Output: one line, "RESULT <GRPC_CODE_NAME> <message>" (plus "ENDPOINT ..." and "TOKEN ..."
// lines after a successful prepare, "PHASE ..." after a successful finish). Exit status 0
// whenever the call was made, whatever its status: the test judges the status.
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "grpcpp/grpcpp.h"
#include "migration/data_service.h"
#include "migration/tls.h"
#include "vexstate/v1/migration.grpc.pb.h"
#include "vexstate/v1/worker.grpc.pb.h"

ABSL_FLAG(std::string, peer, "", "the destination vexd's --migration_listen HOST:PORT");
ABSL_FLAG(std::string, endpoint, "", "a data endpoint from prepare");
ABSL_FLAG(std::string, tls_dir, "", "tools/make_certs.sh directory (its client pair is used)");
ABSL_FLAG(std::string, migration_id, "", "the migration id");
ABSL_FLAG(std::string, vm_name, "replayed", "prepare: the incoming VM's name");
ABSL_FLAG(std::string, token_hex, "", "stream: the token to present, in hex");
ABSL_FLAG(bool, commit, false, "finish: commit instead of discard");
ABSL_FLAG(std::string, worker_socket, "", "worker-cancel: the source VM worker's Unix socket");

namespace vexstate {
namespace {

int Print(const absl::Status& status) {
  std::printf("RESULT %s %s\n", absl::StatusCodeToString(status.code()).c_str(), std::string(status.message()).c_str());
  return 0;
}

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

std::unique_ptr<v1::MigrationPeer::Stub> Peer(const migration::TlsPem& tls) {
  return v1::MigrationPeer::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_peer), migration::ClientTlsCredentials(tls)));
}

std::unique_ptr<grpc::ClientContext> WithDeadline(absl::Duration timeout) {
  auto context = std::make_unique<grpc::ClientContext>();
  context->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  return context;
}

int Prepare(const migration::TlsPem& tls) {
  v1::PrepareRequest request;
  request.set_migration_id(absl::GetFlag(FLAGS_migration_id));
  request.set_vm_name(absl::GetFlag(FLAGS_vm_name));
  v1::VmConfig& config = *request.mutable_requirements()->mutable_config();
  config.set_name(absl::GetFlag(FLAGS_vm_name));
  config.set_arch(v1::ARCH_X86_64);
  config.set_vcpu_count(1);
  config.set_memory_bytes(16 << 20);
  config.mutable_guest()->set_bundled("witness");
  v1::PrepareResponse response;
  grpc::Status rpc = Peer(tls)->Prepare(WithDeadline(absl::Seconds(60)).get(), request, &response);
  if (rpc.ok()) {
    std::printf("ENDPOINT %s\nTOKEN %s\n", response.data_endpoint().c_str(),
                absl::BytesToHexString(response.token()).c_str());
  }
  return Print(FromGrpc(rpc));
}

int Stream(const migration::TlsPem& tls) {
  migration::SinkOptions options;
  options.connect_timeout = absl::Seconds(3);
  options.stream_timeout = absl::Seconds(30);
  absl::StatusOr<std::unique_ptr<migration::GrpcPacketSink>> sink =
      migration::GrpcPacketSink::Open(absl::GetFlag(FLAGS_endpoint), tls, options);
  if (!sink.ok()) return Print(sink.status());
  v1::MigrationPacket hello;
  hello.mutable_hello()->set_migration_id(absl::GetFlag(FLAGS_migration_id));
  hello.mutable_hello()->set_token(absl::HexStringToBytes(absl::GetFlag(FLAGS_token_hex)));
  // A refused hello may end the stream at once: Finish then reports the destination's reason.
  (*sink)->Send(hello).IgnoreError();
  return Print((*sink)->Finish().status());
}

int Finish(const migration::TlsPem& tls) {
  v1::FinishRequest request;
  request.set_migration_id(absl::GetFlag(FLAGS_migration_id));
  request.set_commit(absl::GetFlag(FLAGS_commit));
  v1::FinishResponse response;
  grpc::Status rpc = Peer(tls)->Finish(WithDeadline(absl::Seconds(30)).get(), request, &response);
  if (rpc.ok()) std::printf("PHASE %s\n", v1::MigrationPhase_Name(response.phase()).c_str());
  return Print(FromGrpc(rpc));
}

int WorkerCancel() {
  auto worker = v1::VmWorker::NewStub(
      grpc::CreateChannel("unix:" + absl::GetFlag(FLAGS_worker_socket), grpc::InsecureChannelCredentials()));
  v1::VmInfo info;
  return Print(FromGrpc(
      worker->CancelMigrateOut(WithDeadline(absl::Seconds(10)).get(), v1::CancelMigrateOutRequest(), &info)));
}

}  // namespace
}  // namespace vexstate

int main(int argc, char** argv) {
  std::vector<char*> args = absl::ParseCommandLine(argc, argv);
  const std::string command = args.size() == 2 ? args[1] : "";
  if (command == "worker-cancel") return vexstate::WorkerCancel();
  absl::StatusOr<vexstate::migration::TlsPem> tls =
      vexstate::migration::LoadTls(vexstate::migration::TlsFilesIn(absl::GetFlag(FLAGS_tls_dir), "client"));
  if (!tls.ok()) {
    std::fprintf(stderr, "peer_client: %s\n", tls.status().ToString().c_str());
    return 2;
  }
  if (command == "prepare") return vexstate::Prepare(*tls);
  if (command == "stream") return vexstate::Stream(*tls);
  if (command == "finish") return vexstate::Finish(*tls);
  std::fprintf(stderr, "usage: peer_client prepare|stream|finish|worker-cancel --flags (see the source)\n");
  return 2;
}
