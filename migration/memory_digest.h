// SHA-256 of guest RAM: the end-to-end check of a migration (MemoryDigest in migration.proto).
// Both sides hash all of RAM in GPA order at the pause point; equal digests mean the
// destination holds exactly the source's memory.
//
// Thread-safety: reads memory without locking; the caller makes sure no vCPU runs.
#ifndef VEXSTATE_MIGRATION_MEMORY_DIGEST_H_
#define VEXSTATE_MIGRATION_MEMORY_DIGEST_H_

#include <string>

#include "absl/status/statusor.h"
#include "vmm/guest_memory.h"

namespace vexstate::migration {

inline constexpr size_t kSha256Bytes = 32;

// The 32-byte SHA-256 of all of `memory`. INTERNAL only if OpenSSL fails.
absl::StatusOr<std::string> MemorySha256(const GuestMemory& memory);

// Lowercase hex of `bytes` (MigrationResult.memory_sha256 is text).
std::string ToHex(const std::string& bytes);

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_MEMORY_DIGEST_H_
