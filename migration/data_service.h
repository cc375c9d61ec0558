// The MigrationData service (proto/vexstate/v1/migration.proto): the worker-to-worker data
// stream of one migration, over mutual TLS (migration/tls.h).
//
// Destination side: DataServer listens, and its one Transfer handler feeds a
// MigrationDestination — the first packet must be a hello whose token the destination
// accepts (else UNAUTHENTICATED, and the destination is unchanged); each later packet is
// consumed in order; the answer is the TransferResult once the digest matched, or the
// destination's error (DATA_LOSS for a corrupt run or digest, FAILED_PRECONDITION for a
// final state it cannot restore...). A stream that breaks or is cancelled after the hello
// fails the migration there (MigrationDestination::Abort). Only one stream can ever pass the
// hello (the token is consumed), so there is one Transfer per migration.
//
// Source side: GrpcPacketSink is the PacketSink a MigrationSource writes to: one client
// stream; Send blocks under gRPC/HTTP2 flow control; when the destination ended the stream,
// Send returns the destination's own status (e.g. its DATA_LOSS), not a generic error.
//
// Dead links: a cut link must fail the migration within seconds, not at the stream deadline
// (SinkOptions): the channel sends HTTP/2 keepalive pings (KeepaliveChannelArgs; the data
// server and the migration peer server accept them, KeepaliveServerArgs), and a watchdog
// cancels the stream when one Write makes no progress for write_timeout (Send then returns
// DEADLINE_EXCEEDED saying so).
//
// Thread-safety: DataServer is thread-safe. GrpcPacketSink follows PacketSink's contract
// (Send/Finish from one thread, Cancel from any).
#ifndef VEXSTATE_MIGRATION_DATA_SERVICE_H_
#define VEXSTATE_MIGRATION_DATA_SERVICE_H_

#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpcpp/grpcpp.h"
#include "migration/destination.h"
#include "migration/link_timeouts.h"
#include "migration/packet_sink.h"
#include "migration/tls.h"
#include "vexstate/v1/migration.grpc.pb.h"

namespace vexstate::migration {

// Largest packet the server accepts: page batches are ~1-2 MiB (MigrationSource flushes a
// batch at 1 MiB of page data; a run holds at most 1 MiB); the final state is small.
inline constexpr int kMaxPacketBytes = 16 << 20;

// Keepalive for every migration channel (data stream and peer RPCs): a ping every
// keepalive_time, also without calls; no answer within keepalive_timeout closes the
// connection, which fails every call on it (UNAVAILABLE). See link_timeouts.h.
void KeepaliveChannelArgs(grpc::ChannelArguments& args);
// The server side: accepts the pings above (without it, gRPC answers frequent pings with
// GOAWAY "too_many_pings"), and pings its clients the same way.
void KeepaliveServerArgs(grpc::ServerBuilder& builder);

class MigrationDataService final : public v1::MigrationData::Service {
 public:
  // `destination` must outlive the service.
  explicit MigrationDataService(MigrationDestination* destination) : destination_(destination) {}

  grpc::Status Transfer(grpc::ServerContext* context, grpc::ServerReader<v1::MigrationPacket>* reader,
                        v1::TransferResult* response) override;

 private:
  MigrationDestination* const destination_;
};

class DataServer {
 public:
  // Listens on `address` ("HOST:PORT"; port 0 picks a free one) with mutual TLS and serves
  // `destination`, which must outlive the server.
  static absl::StatusOr<std::unique_ptr<DataServer>> Start(const std::string& address, const TlsPem& tls,
                                                           MigrationDestination* destination);
  // Shuts down (cancelling a stream still open).
  ~DataServer();

  int port() const { return port_; }
  // "HOST:PORT" as listened on, for PrepareResponse.data_endpoint (a vexd listening on a
  // wildcard address substitutes the name its peers know it by).
  std::string endpoint() const;
  void Shutdown(absl::Duration grace = absl::Seconds(1));

 private:
  DataServer(std::string host, std::unique_ptr<MigrationDataService> service)
      : host_(std::move(host)), service_(std::move(service)) {}

  const std::string host_;
  int port_ = 0;
  std::unique_ptr<MigrationDataService> service_;
  std::unique_ptr<grpc::Server> server_;
};

struct SinkOptions {
  // Expected name in the server's certificate when it differs from the endpoint's host.
  std::string server_name_override;
  // How long Open waits for the connection and TLS handshake.
  absl::Duration connect_timeout = absl::Seconds(10);
  // Deadline for the whole stream (0 = none). The worker derives it from
  // MigrateVmRequest.timeout_ms (default 10 min).
  absl::Duration stream_timeout = absl::ZeroDuration();
  // Progress watchdog: a Write that does not
  // complete within this cancels the stream (0 = no watchdog).
  absl::Duration write_timeout = MigrationLinkTimeouts().write_timeout;
};

class GrpcPacketSink final : public PacketSink {
 public:
  // Connects to `endpoint` ("HOST:PORT") and opens the Transfer stream. UNAVAILABLE naming
  // the endpoint when no TLS connection comes up (unreachable, or the server refused our
  // certificate, or we refused its).
  static absl::StatusOr<std::unique_ptr<GrpcPacketSink>> Open(const std::string& endpoint, const TlsPem& tls,
                                                              const SinkOptions& options = {});
  ~GrpcPacketSink() override;

  absl::Status Send(const v1::MigrationPacket& packet) override;
  absl::StatusOr<v1::TransferResult> Finish() override;
  void Cancel() override;

 private:
  GrpcPacketSink(std::string endpoint, std::shared_ptr<grpc::Channel> channel, absl::Duration write_timeout);
  // Closes the stream (once) and keeps the final status.
  absl::Status Close(bool writes_done);
  // The watchdog thread: cancels the stream when a Write stalls.
  void Watch();

  const std::string endpoint_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<v1::MigrationData::Stub> stub_;
  grpc::ClientContext context_;
  v1::TransferResult response_;
  std::unique_ptr<grpc::ClientWriter<v1::MigrationPacket>> writer_;
  bool closed_ = false;
  absl::Status final_status_;
  const absl::Duration write_timeout_;
  absl::Mutex watch_mu_;
  absl::Time write_started_ ABSL_GUARDED_BY(watch_mu_) = absl::InfiniteFuture();  // no Write in flight
  bool stalled_ ABSL_GUARDED_BY(watch_mu_) = false;
  bool stop_watch_ ABSL_GUARDED_BY(watch_mu_) = false;
  std::thread watchdog_;  // last: started by the constructor, after everything it reads
};

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_DATA_SERVICE_H_
