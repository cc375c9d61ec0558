#include "migration/data_service.h"

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

GrpcPacketSink::GrpcPacketSink(std::string endpoint, std::shared_ptr<grpc::Channel> channel)
    : endpoint_(std::move(endpoint)), channel_(std::move(channel)), stub_(v1::MigrationData::NewStub(channel_)) {}

GrpcPacketSink::~GrpcPacketSink() {
  if (!closed_) {
    context_.TryCancel();
    Close(/*writes_done=*/false);
  }
}

absl::StatusOr<std::unique_ptr<GrpcPacketSink>> GrpcPacketSink::Open(const std::string& endpoint, const TlsPem& tls,
                                                                     const SinkOptions& options) {
  grpc::ChannelArguments args;
  if (!options.server_name_override.empty()) args.SetSslTargetNameOverride(options.server_name_override);
  args.SetMaxReceiveMessageSize(kMaxPacketBytes);
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(endpoint, ClientTlsCredentials(tls), args);
  if (!channel->WaitForConnected(Deadline(options.connect_timeout))) {
    return absl::UnavailableError(absl::StrFormat(
        "no mutual-TLS connection to migration endpoint %s within %s (unreachable, or a certificate was "
        "refused by either side)",
        endpoint, absl::FormatDuration(options.connect_timeout)));
  }
  std::unique_ptr<GrpcPacketSink> sink(new GrpcPacketSink(endpoint, std::move(channel)));
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
  if (writer_->Write(packet)) return absl::OkStatus();
  // The stream is over: the destination's status says why.
  absl::Status status = Close(/*writes_done=*/false);
  if (!status.ok()) return status;
  return absl::UnavailableError(absl::StrFormat("the migration stream to %s closed early", endpoint_));
}

absl::StatusOr<v1::TransferResult> GrpcPacketSink::Finish() {
  if (absl::Status s = Close(/*writes_done=*/true); !s.ok()) return s;
  return response_;
}

void GrpcPacketSink::Cancel() { context_.TryCancel(); }

}  // namespace vexstate::migration
