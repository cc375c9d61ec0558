#include "migration/tls.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "grpcpp/security/server_credentials.h"

namespace vexstate::migration {

namespace {

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  if (path.empty()) return absl::InvalidArgumentError(absl::StrFormat("no %s file given", what));
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrFormat("%s file %s cannot be read", what, path));
  std::ostringstream contents;
  contents << in.rdbuf();
  if (contents.str().empty()) return absl::InvalidArgumentError(absl::StrFormat("%s file %s is empty", what, path));
  return contents.str();
}

std::string OpenSslError() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "no PEM data";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof(buffer));
  return buffer;
}

using Bio = std::unique_ptr<BIO, decltype(&BIO_free)>;
using Cert = std::unique_ptr<X509, decltype(&X509_free)>;
using Key = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;

Bio MemoryBio(const std::string& pem) {
  return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())), BIO_free);
}

absl::StatusOr<Cert> ParseCert(const std::string& pem, const std::string& path) {
  Bio bio = MemoryBio(pem);
  Cert cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
  if (cert == nullptr) {
    return absl::InvalidArgumentError(absl::StrFormat("%s is not a PEM certificate: %s", path, OpenSslError()));
  }
  return cert;
}

}  // namespace

TlsFiles TlsFilesIn(const std::string& dir, const std::string& role) {
  return TlsFiles{dir + "/ca.pem", dir + "/" + role + ".pem", dir + "/" + role + ".key"};
}

absl::StatusOr<TlsPem> LoadTls(const TlsFiles& files) {
  TlsPem out;
  for (auto [path, what, into] :
       {std::make_tuple(&files.ca_cert, "CA certificate", &out.ca_cert),
        std::make_tuple(&files.cert, "certificate", &out.cert), std::make_tuple(&files.key, "private key", &out.key)}) {
    absl::StatusOr<std::string> contents = ReadFile(*path, what);
    if (!contents.ok()) return contents.status();
    *into = std::move(*contents);
  }
  if (absl::StatusOr<Cert> ca = ParseCert(out.ca_cert, files.ca_cert); !ca.ok()) return ca.status();
  absl::StatusOr<Cert> cert = ParseCert(out.cert, files.cert);
  if (!cert.ok()) return cert.status();
  Bio bio = MemoryBio(out.key);
  Key key(PEM_read_bio_PrivateKey(bio.get(), nullptr, nullptr, nullptr), EVP_PKEY_free);
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s is not an unencrypted PEM private key: %s", files.key, OpenSslError()));
  }
  if (X509_check_private_key(cert->get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrFormat("private key %s does not belong to certificate %s", files.key, files.cert));
  }
  return out;
}

std::shared_ptr<grpc::ServerCredentials> ServerTlsCredentials(const TlsPem& tls) {
  grpc::SslServerCredentialsOptions options(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = tls.ca_cert;
  options.pem_key_cert_pairs.push_back({tls.key, tls.cert});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> ClientTlsCredentials(const TlsPem& tls) {
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = tls.ca_cert;
  options.pem_private_key = tls.key;
  options.pem_cert_chain = tls.cert;
  return grpc::SslCredentials(options);
}

}  // namespace vexstate::migration
