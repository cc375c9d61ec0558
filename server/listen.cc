#include "server/listen.h"

#include <arpa/inet.h>

#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "grpcpp/security/server_credentials.h"

namespace vexstate::vexd {
namespace {

bool IsLoopbackHost(const std::string& host) {
  if (host == "localhost") return true;
  in_addr v4;
  if (inet_pton(AF_INET, host.c_str(), &v4) == 1) return (ntohl(v4.s_addr) >> 24) == 127;  // 127.0.0.0/8
  in6_addr v6;
  if (inet_pton(AF_INET6, host.c_str(), &v6) == 1) return IN6_IS_ADDR_LOOPBACK(&v6);
  return false;  // a name: vexd does not resolve it, so it cannot vouch for it
}

absl::StatusOr<std::string> ReadPem(const std::string& path, absl::string_view what) {
  std::ifstream in(path);
  if (!in) return absl::ErrnoToStatus(errno, absl::StrCat(what, " ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat(what, " ", path, " holds no PEM block"));
  }
  return text.str();
}

}  // namespace

absl::StatusOr<ListenAddress> ParseListenAddress(absl::string_view spec) {
  ListenAddress address;
  address.spec = std::string(spec);
  absl::string_view rest = spec;
  if (absl::ConsumePrefix(&rest, "unix:")) {
    if (rest.empty() || rest[0] != '/') {
      return absl::InvalidArgumentError(absl::StrCat("--listen ", spec, ": the Unix socket path must be absolute"));
    }
    address.kind = ListenAddress::Kind::kUnix;
    address.unix_path = std::string(rest);
    address.grpc_address = absl::StrCat("unix:", rest);
    return address;
  }
  if (!absl::ConsumePrefix(&rest, "tcp:")) {
    return absl::InvalidArgumentError(absl::StrCat("--listen ", spec, ": expected unix:PATH or tcp:HOST:PORT"));
  }
  const size_t colon = rest.rfind(':');
  if (colon == absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("--listen ", spec, ": expected tcp:HOST:PORT"));
  }
  absl::string_view host = rest.substr(0, colon);
  const absl::string_view port = rest.substr(colon + 1);
  const bool bracketed = absl::ConsumePrefix(&host, "[") && absl::ConsumeSuffix(&host, "]");
  if (host.empty() || (!bracketed && absl::StrContains(host, ':'))) {
    return absl::InvalidArgumentError(
        absl::StrCat("--listen ", spec, ": bad host (an IPv6 address goes in brackets: tcp:[::1]:PORT)"));
  }
  if (!absl::SimpleAtoi(port, &address.port) || address.port < 0 || address.port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("--listen ", spec, ": port '", port, "' is not 0..65535"));
  }
  address.kind = ListenAddress::Kind::kTcp;
  address.host = std::string(host);
  address.loopback = IsLoopbackHost(address.host);
  address.grpc_address =
      bracketed ? absl::StrCat("[", host, "]:", address.port) : absl::StrCat(host, ":", address.port);
  return address;
}

absl::Status ValidateTlsOptions(const TlsOptions& tls) {
  if (tls.cert_file.empty() != tls.key_file.empty()) {
    return absl::InvalidArgumentError("--tls_cert and --tls_key go together");
  }
  if (!tls.client_ca_file.empty() && tls.cert_file.empty()) {
    return absl::InvalidArgumentError("--tls_client_ca (mutual TLS) needs --tls_cert and --tls_key");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> CredentialsFor(const ListenAddress& address,
                                                                        const TlsOptions& tls) {
  // The Unix socket is guarded by its file mode and the state dir's: no TLS there.
  if (address.kind == ListenAddress::Kind::kUnix) return grpc::InsecureServerCredentials();
  if (tls.cert_file.empty()) {
    if (!address.loopback && !tls.insecure_tcp) {
      return absl::FailedPreconditionError(absl::StrCat(
          "--listen ", address.spec,
          " is not a loopback address and no TLS is configured: bearer tokens would "
          "cross the network in clear text. Give --tls_cert and --tls_key (and --tls_client_ca for mutual TLS), "
          "or --insecure_tcp if you really mean it"));
    }
    return grpc::InsecureServerCredentials();
  }
  absl::StatusOr<std::string> cert = ReadPem(tls.cert_file, "TLS certificate");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPem(tls.key_file, "TLS key");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions options(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  if (!tls.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem(tls.client_ca_file, "TLS client CA");
    if (!ca.ok()) return ca.status();
    options.pem_root_certs = *ca;
    options.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
  }
  options.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(options);
}

std::vector<std::string> RepeatedFlagValues(int argc, char** argv, absl::string_view name) {
  std::vector<std::string> values;
  const std::string long_form = absl::StrCat("--", name);
  const std::string short_form = absl::StrCat("-", name);
  auto add = [&values](absl::string_view list) {
    for (absl::string_view value : absl::StrSplit(list, ',', absl::SkipEmpty())) values.emplace_back(value);
  };
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    if (arg == "--") break;
    for (const std::string& form : {long_form, short_form}) {
      absl::string_view rest = arg;
      if (!absl::ConsumePrefix(&rest, form)) continue;
      if (absl::ConsumePrefix(&rest, "=")) {
        add(rest);
      } else if (rest.empty() && i + 1 < argc) {
        add(argv[++i]);
      }
      break;
    }
  }
  return values;
}

}  // namespace vexstate::vexd
