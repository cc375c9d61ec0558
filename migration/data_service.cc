#include "migration/data_service.h"

#include <algorithm>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"

namespace vexstate::migration {

namespace {

// The canonical codes are the same numbers in absl and gRPC (both mirror google.rpc.Code).
grpc::Status ToGrpc(const absl::Status& status) {
  return grpc::Status(static_cast<grpc::StatusCode>(status.code()), std::string(status.message()));
}

absl::Status FromGrpc(const grpc::Status& status) {
  return absl::Status(static_cast<absl::StatusCode>(status.error_code()), status.error_message());
}

gpr_timespec Deadline(absl::Duration from_now) {
  return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                      gpr_time_from_micros(absl::ToInt64Microseconds(from_now), GPR_TIMESPAN));
}

}  // namespace

namespace {
int Ms(absl::Duration d) { return static_cast<int>(absl::ToInt64Milliseconds(d)); }
}  // namespace

void KeepaliveChannelArgs(grpc::ChannelArguments& args) {
  const LinkTimeouts& link = MigrationLinkTimeouts();
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, Ms(link.keepalive_time));
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Ms(link.keepalive_timeout));
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  args.SetInt(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);  // keep pinging while a write is stuck
}

void KeepaliveServerArgs(grpc::ServerBuilder& builder) {
  const LinkTimeouts& link = MigrationLinkTimeouts();
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, Ms(link.keepalive_time));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, Ms(link.keepalive_timeout));
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PINGS_WITHOUT_DATA, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, Ms(link.keepalive_time) / 2);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);  // 0 = never GOAWAY for pings
}

grpc::Status MigrationDataService::Transfer(grpc::ServerContext* context,
                                            grpc::ServerReader<v1::MigrationPacket>* reader,
                                            v1::TransferResult* response) {
  v1::MigrationPacket packet;
  if (!reader->Read(&packet)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the stream ended before its hello");
  }
  if (!packet.has_hello()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the first packet of a transfer must be its hello");
  }
  if (absl::Status s = destination_->Authenticate(packet.hello()); !s.ok()) return ToGrpc(s);
  while (reader->Read(&packet)) {
    if (absl::Status s = destination_->Consume(packet); !s.ok()) return ToGrpc(s);
  }
  if (context->IsCancelled()) {
    destination_->Abort(absl::CancelledError("the source cancelled the stream or the connection broke"));
    return grpc::Status(grpc::StatusCode::CANCELLED, "transfer cancelled");
  }
  absl::StatusOr<v1::TransferResult> result = destination_->EndTransfer();
  if (!result.ok()) return ToGrpc(result.status());
  *response = std::move(*result);
  return grpc::Status::OK;
}

absl::StatusOr<std::unique_ptr<DataServer>> DataServer::Start(const std::string& address, const TlsPem& tls,
                                                              MigrationDestination* destination) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrFormat("listen address \"%s\" is not HOST:PORT", address));
  }
  std::unique_ptr<DataServer> server(
      new DataServer(address.substr(0, colon), std::make_unique<MigrationDataService>(destination)));
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address, ServerTlsCredentials(tls), &server->port_);
  builder.RegisterService(server->service_.get());
  builder.SetMaxReceiveMessageSize(kMaxPacketBytes);
  KeepaliveServerArgs(builder);  // a source behind a cut link is noticed within seconds
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || server->port_ == 0) {
    return absl::UnavailableError(absl::StrFormat("cannot listen on %s for migration data", address));
  }
  return server;
}

DataServer::~DataServer() { Shutdown(absl::ZeroDuration()); }

std::string DataServer::endpoint() const { return absl::StrFormat("%s:%d", host_, port_); }

void DataServer::Shutdown(absl::Duration grace) {
  if (server_ == nullptr) return;
  server_->Shutdown(Deadline(grace));
  server_->Wait();
  server_.reset();
}

GrpcPacketSink::GrpcPacketSink(std::string endpoint, std::shared_ptr<grpc::Channel> channel,
                               absl::Duration write_timeout)
    : endpoint_(std::move(endpoint)),
      channel_(std::move(channel)),
      stub_(v1::MigrationData::NewStub(channel_)),
      write_timeout_(write_timeout) {
  if (write_timeout_ > absl::ZeroDuration()) watchdog_ = std::thread([this] { Watch(); });
}

GrpcPacketSink::~GrpcPacketSink() {
  if (!closed_ && writer_ != nullptr) {
    context_.TryCancel();
    // A destructor has nobody to report to: the stream was cancelled just above.
    Close(/*writes_done=*/false).IgnoreError();
  }
  {
    absl::MutexLock lock(&watch_mu_);
    stop_watch_ = true;
  }
  if (watchdog_.joinable()) watchdog_.join();
}

void GrpcPacketSink::Watch() {
  absl::MutexLock lock(&watch_mu_);
  while (!stop_watch_) {
    const absl::Time started = write_started_;
    if (started != absl::InfiniteFuture() && absl::Now() - started >= write_timeout_) {
      // No progress on this Write for write_timeout: the link is dead (or the peer stuck).
      // Cancelling the context makes the blocked Write return false at once.
      stalled_ = true;
      write_started_ = absl::InfiniteFuture();
      context_.TryCancel();
      continue;
    }
    const absl::Duration wait =
        started == absl::InfiniteFuture() ? absl::Seconds(1) : std::max(absl::Milliseconds(10), started + write_timeout_ - absl::Now());
    auto changed = [this, started]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(watch_mu_) {
      return stop_watch_ || write_started_ != started;
    };
    watch_mu_.AwaitWithTimeout(absl::Condition(&changed), wait);
  }
}

absl::StatusOr<std::unique_ptr<GrpcPacketSink>> GrpcPacketSink::Open(const std::string& endpoint, const TlsPem& tls,
                                                                     const SinkOptions& options) {
  grpc::ChannelArguments args;
  if (!options.server_name_override.empty()) args.SetSslTargetNameOverride(options.server_name_override);
  args.SetMaxReceiveMessageSize(kMaxPacketBytes);
  KeepaliveChannelArgs(args);  // dead-link detection in seconds (data_service.h)
  // A private connection: keepalive settings and a cut link affect this stream only.
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(endpoint, ClientTlsCredentials(tls), args);
  if (!channel->WaitForConnected(Deadline(options.connect_timeout))) {
    return absl::UnavailableError(absl::StrFormat(
        "no mutual-TLS connection to migration endpoint %s within %s (unreachable, or a certificate was "
        "refused by either side)",
        endpoint, absl::FormatDuration(options.connect_timeout)));
  }
  std::unique_ptr<GrpcPacketSink> sink(new GrpcPacketSink(endpoint, std::move(channel), options.write_timeout));
  if (options.stream_timeout > absl::ZeroDuration()) {
    sink->context_.set_deadline(absl::ToChronoTime(absl::Now() + options.stream_timeout));
  }
  sink->writer_ = sink->stub_->Transfer(&sink->context_, &sink->response_);
  return sink;
}

absl::Status GrpcPacketSink::Close(bool writes_done) {
  if (closed_) return final_status_;
  closed_ = true;
  if (writes_done) writer_->WritesDone();
  final_status_ = FromGrpc(writer_->Finish());
  return final_status_;
}

absl::Status GrpcPacketSink::Send(const v1::MigrationPacket& packet) {
  if (closed_) {
    return final_status_.ok() ? absl::FailedPreconditionError("the migration stream is already finished")
                              : final_status_;
  }
  {
    absl::MutexLock lock(&watch_mu_);
    write_started_ = absl::Now();
  }
  const bool written = writer_->Write(packet);
  bool stalled = false;
  {
    absl::MutexLock lock(&watch_mu_);
    write_started_ = absl::InfiniteFuture();
    stalled = stalled_;
  }
  if (written && !stalled) return absl::OkStatus();
  // The stream is over: the destination's status says why (unless the watchdog ended it).
  absl::Status status = Close(/*writes_done=*/false);
  if (stalled) {
    return absl::DeadlineExceededError(absl::StrFormat(
        "the migration stream to %s made no progress for %s (link down or destination stuck): cancelled; %s",
        endpoint_, absl::FormatDuration(write_timeout_), status.message()));
  }
  if (!status.ok()) return status;
  return absl::UnavailableError(absl::StrFormat("the migration stream to %s closed early", endpoint_));
}

absl::StatusOr<v1::TransferResult> GrpcPacketSink::Finish() {
  if (absl::Status s = Close(/*writes_done=*/true); !s.ok()) return s;
  return response_;
}

void GrpcPacketSink::Cancel() { context_.TryCancel(); }

}  // namespace vexstate::migration
