// CRC-32C (Castagnoli): the checksum that guards each PageRun on the migration stream.
//
// Polynomial 0x1EDC6F41 (reflected 0x82F63B78), initial value and final XOR 0xFFFFFFFF, as in
// iSCSI (RFC 3720 appendix B.4) and SSE4.2's `crc32` instruction. Check value: CRC-32C of the
// nine ASCII bytes "123456789" is 0xE3069283.
//
// Abseil 20220623 (the Debian version this project builds with) has no absl::crc32c, hence
// this small implementation: SSE4.2 `crc32` when the CPU has it (decided once at run time),
// otherwise slicing-by-8 tables. Both give the same value for the same bytes.
//
// Thread-safety: pure functions.
#ifndef VEXSTATE_MIGRATION_CRC32C_H_
#define VEXSTATE_MIGRATION_CRC32C_H_

#include <cstddef>
#include <cstdint>

namespace vexstate::migration {

// The CRC-32C of `crc`'s input followed by `size` more bytes. Start with crc = 0:
// Crc32cExtend(Crc32cExtend(0, a, n), b, m) == CRC-32C of a||b.
uint32_t Crc32cExtend(uint32_t crc, const void* data, size_t size);

inline uint32_t Crc32c(const void* data, size_t size) { return Crc32cExtend(0, data, size); }

// The table-driven implementation alone (what Crc32cExtend uses without SSE4.2); for tests.
uint32_t Crc32cExtendPortable(uint32_t crc, const void* data, size_t size);

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_CRC32C_H_
