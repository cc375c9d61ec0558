#include "migration/memory_digest.h"

#include <openssl/evp.h>

#include <algorithm>
#include <memory>

#include "absl/status/status.h"
#include "migration/memory_extents.h"

namespace vexstate::migration {

namespace {

// Holes are hashed from here: the same bytes, without faulting pages into the memfd.
constexpr uint64_t kZeroChunk = 64 << 10;
alignas(64) const uint8_t kZeros[kZeroChunk] = {};

bool HashZeros(EVP_MD_CTX* ctx, uint64_t length) {
  for (uint64_t done = 0; done < length; done += kZeroChunk) {
    if (EVP_DigestUpdate(ctx, kZeros, std::min(kZeroChunk, length - done)) != 1) return false;
  }
  return true;
}

}  // namespace

absl::StatusOr<std::string> MemorySha256(const GuestMemory& memory) {
  absl::StatusOr<std::vector<MemoryExtent>> extents = PopulatedExtents(memory);
  if (!extents.ok()) return extents.status();
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  bool ok = ctx != nullptr && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1;
  uint64_t position = 0;
  for (const MemoryExtent& extent : *extents) {
    if (!ok) break;
    ok = HashZeros(ctx.get(), extent.offset - position) &&
         EVP_DigestUpdate(ctx.get(), memory.host() + extent.offset, extent.length) == 1;
    position = extent.offset + extent.length;
  }
  ok = ok && HashZeros(ctx.get(), memory.size() - position);
  std::string digest(kSha256Bytes, '\0');
  unsigned int length = 0;
  if (!ok || EVP_DigestFinal_ex(ctx.get(), reinterpret_cast<unsigned char*>(digest.data()), &length) != 1 ||
      length != kSha256Bytes) {
    return absl::InternalError("OpenSSL SHA-256 of guest memory failed");
  }
  return digest;
}

std::string ToHex(const std::string& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

}  // namespace vexstate::migration
