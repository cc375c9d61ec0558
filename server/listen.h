// Where vexd listens, and with which transport security (SPEC §4.6: loopback or a Unix socket
// by default; anything else only over TLS unless the operator insists).
//
//   unix:PATH        a Unix socket (PATH absolute); created mode 0600, so only vexd's user
//                    (root) reaches it; plaintext
//   tcp:HOST:PORT    TCP; HOST an IPv4 address, a bracketed IPv6 address or "localhost"
//                    (names are not resolved here); PORT 0 picks a free port
// TCP uses TLS when a certificate and key are given (--tls_cert/--tls_key), and mutual TLS
// when a client CA is given too (--tls_client_ca: every client must present a certificate
// that CA signed). A TCP address that is not loopback is refused without TLS unless
// --insecure_tcp is set. Bearer tokens are required on every transport.
//
// Thread-safety: pure functions (CredentialsFor reads the TLS files).
#ifndef VEXSTATE_SERVER_LISTEN_H_
#define VEXSTATE_SERVER_LISTEN_H_

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/server_credentials.h"

namespace vexstate::vexd {

struct ListenAddress {
  enum class Kind { kUnix, kTcp } kind = Kind::kUnix;
  std::string spec;          // as given ("tcp:127.0.0.1:7777")
  std::string unix_path;     // kUnix
  std::string host;          // kTcp, without brackets
  int port = 0;              // kTcp
  bool loopback = true;      // always true for kUnix
  std::string grpc_address;  // what grpc::ServerBuilder::AddListeningPort takes
};

// INVALID_ARGUMENT naming what is wrong with `spec`.
absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view spec);

struct TlsOptions {
  std::string cert_file;       // PEM server certificate chain
  std::string key_file;        // PEM private key
  std::string client_ca_file;  // PEM CA bundle; set: require and verify client certificates
  bool insecure_tcp = false;   // allow plaintext TCP on a non-loopback address
};

// INVALID_ARGUMENT for a certificate without its key (or the reverse), or a client CA
// without a server certificate.
absl::Status ValidateTlsOptions(const TlsOptions& tls);

// The credentials for one address, or FAILED_PRECONDITION for plaintext TCP beyond loopback
// without insecure_tcp. File errors name the file.
absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> CredentialsFor(const ListenAddress& address,
                                                                        const TlsOptions& tls);

// Collects every value of a repeatable flag from argv ("--name=V", "--name V", also with a
// single dash); values may themselves be comma-separated lists. absl::Flags keeps only the
// last occurrence of a flag, so vexd reads --listen's occurrences with this.
std::vector<std::string> RepeatedFlagValues(int argc, char** argv, absl::string_view name);

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_LISTEN_H_
