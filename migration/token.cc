#include "migration/token.h"

#include <openssl/crypto.h>
#include <openssl/rand.h>

#include "absl/status/status.h"

namespace vexstate::migration {

absl::StatusOr<std::string> NewToken() {
  std::string token(kTokenBytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(token.data()), static_cast<int>(token.size())) != 1) {
    return absl::InternalError("OpenSSL RAND_bytes could not make a migration token");
  }
  return token;
}

bool TokensEqual(const std::string& a, const std::string& b) {
  if (a.size() != b.size() || a.empty()) return false;
  return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace vexstate::migration
