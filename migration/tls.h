// Mutual TLS for host-to-host migration traffic (SPEC §4.6): the MigrationData stream (and
// vexd's MigrationPeer RPCs may use the same material).
//
// Both sides hold the same CA certificate and their own certificate + key (PEM). The server
// requires a client certificate and verifies it against the CA; the client verifies the
// server's certificate against the CA and presents its own. Nothing else is checked beyond
// gRPC's standard rule that the server certificate's SANs match the name the client dialled
// (or `server_name_override`). tools/make_certs.sh makes such a set (ca.pem, server.pem +
// server.key, client.pem + client.key).
//
// Thread-safety: pure functions; the credentials objects are gRPC's (thread-safe).
#ifndef VEXSTATE_MIGRATION_TLS_H_
#define VEXSTATE_MIGRATION_TLS_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/security/server_credentials.h"

namespace vexstate::migration {

// Paths of PEM files.
struct TlsFiles {
  std::string ca_cert;  // the CA that signs both peers' certificates
  std::string cert;     // this side's certificate (chain)
  std::string key;      // this side's private key
};

// The files tools/make_certs.sh writes into `dir`, for `role` "server" or "client".
TlsFiles TlsFilesIn(const std::string& dir, const std::string& role);

// PEM contents, loaded and checked.
struct TlsPem {
  std::string ca_cert;
  std::string cert;
  std::string key;
};

// Reads the three files and checks that each parses (certificate, certificate, private key)
// and that the key belongs to the certificate: NOT_FOUND / INVALID_ARGUMENT naming the file.
absl::StatusOr<TlsPem> LoadTls(const TlsFiles& files);

// Server: presents `tls.cert`, requires a client certificate signed by `tls.ca_cert`.
std::shared_ptr<grpc::ServerCredentials> ServerTlsCredentials(const TlsPem& tls);
// Client: verifies the server against `tls.ca_cert`, presents `tls.cert`.
std::shared_ptr<grpc::ChannelCredentials> ClientTlsCredentials(const TlsPem& tls);

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_TLS_H_
