// The one-time token of a migration (PrepareResponse.token, TransferHello.token): 32 random
// bytes from the destination that bind one data stream to one migration.
//
// Thread-safety: pure functions (OpenSSL's RAND_bytes is thread-safe).
#ifndef VEXSTATE_MIGRATION_TOKEN_H_
#define VEXSTATE_MIGRATION_TOKEN_H_

#include <string>

#include "absl/status/statusor.h"

namespace vexstate::migration {

inline constexpr size_t kTokenBytes = 32;

// kTokenBytes from OpenSSL's CSPRNG; INTERNAL if it cannot provide them.
absl::StatusOr<std::string> NewToken();

// Compares in time that depends only on the lengths, never on where the bytes differ
// (CRYPTO_memcmp), so a peer cannot guess a token byte by byte from response times.
bool TokensEqual(const std::string& a, const std::string& b);

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_TOKEN_H_
