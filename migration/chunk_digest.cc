#include "migration/chunk_digest.h"

#include <openssl/evp.h>

#include <algorithm>
#include <functional>

#include "absl/strings/str_format.h"
#include "migration/memory_extents.h"

namespace vexstate::migration {

namespace {

constexpr uint64_t kPage = GuestMemory::kPageSize;
// Known-zero pages are hashed from here.
constexpr uint64_t kZeroBytes = 64 << 10;
alignas(64) const uint8_t kZeros[kZeroBytes] = {};

using EvpCtx = std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)>;

bool UpdateZeros(EVP_MD_CTX* ctx, uint64_t length) {
  for (uint64_t done = 0; done < length; done += kZeroBytes) {
    if (EVP_DigestUpdate(ctx, kZeros, std::min(kZeroBytes, length - done)) != 1) return false;
  }
  return true;
}

bool Sha256(const std::function<bool(EVP_MD_CTX*)>& feed, uint8_t* out) {
  EvpCtx ctx(EVP_MD_CTX_new(), EVP_MD_CTX_free);
  unsigned int length = 0;
  return ctx != nullptr && EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1 && feed(ctx.get()) &&
         EVP_DigestFinal_ex(ctx.get(), out, &length) == 1 && length == 32;
}

}  // namespace

IncrementalChunkDigest::IncrementalChunkDigest(const GuestMemory& memory, absl::Span<const uint64_t> populated,
                                               uint32_t chunk_bytes)
    : memory_(memory),
      chunk_bytes_(chunk_bytes),
      pages_(memory.size() / kPage),
      chunks_((memory.size() + chunk_bytes - 1) / chunk_bytes),
      populated_(new std::atomic<uint64_t>[(pages_ + 63) / 64]),
      marked_(new std::atomic<uint64_t>[chunks_]),
      hashed_(chunks_, 0),
      hashes_(chunks_) {
  for (uint64_t w = 0; w < (pages_ + 63) / 64; ++w) populated_[w].store(0, std::memory_order_relaxed);
  for (uint64_t c = 0; c < chunks_; ++c) marked_[c].store(0, std::memory_order_relaxed);
  // Every chunk starts as zeros (valid: marked 0 <= hashed 0); populated ones are marked.
  failed_ = !Sha256([this](EVP_MD_CTX* ctx) { return UpdateZeros(ctx, chunk_bytes_); }, zero_chunk_.data());
  std::fill(hashes_.begin(), hashes_.end(), zero_chunk_);
  if (chunks_ != 0 && memory.size() % chunk_bytes != 0) {
    const uint64_t tail = memory.size() % chunk_bytes;
    failed_ |= !Sha256([tail](EVP_MD_CTX* ctx) { return UpdateZeros(ctx, tail); }, hashes_.back().data());
  }
  MarkWritten(populated);
}

IncrementalChunkDigest::~IncrementalChunkDigest() { WaitForPass(); }

void IncrementalChunkDigest::WaitForPass() {
  if (pass_.valid() && !pass_.get()) failed_ = true;
}

void IncrementalChunkDigest::MarkChunk(uint64_t chunk, uint64_t stamp) {
  if (chunk < chunks_) marked_[chunk].store(stamp, std::memory_order_release);
}

void IncrementalChunkDigest::MarkWritten(absl::Span<const uint64_t> bitmap) {
  const uint64_t pages_per_chunk = chunk_bytes_ / kPage;
  const uint64_t words = std::min<uint64_t>(bitmap.size(), (pages_ + 63) / 64);
  for (uint64_t w = 0; w < words; ++w) {
    uint64_t bits = bitmap[w];
    if (bits == 0) continue;
    // Populated before marked: a pass that sees the mark sees the page as data.
    populated_[w].fetch_or(bits, std::memory_order_relaxed);
    while (bits != 0) {
      const uint64_t page = w * 64 + __builtin_ctzll(bits);
      const uint64_t chunk = page / pages_per_chunk;
      MarkChunk(chunk, stamp_);
      // Skip the rest of this chunk's pages in the word.
      const uint64_t next = (chunk + 1) * pages_per_chunk;
      if (next >= (w + 1) * 64) break;
      bits &= ~((uint64_t{1} << (next - w * 64)) - 1);
    }
  }
}

void IncrementalChunkDigest::MarkWritten(uint64_t first_page, uint64_t count) {
  const uint64_t end = std::min(first_page + count, pages_);
  for (uint64_t page = first_page; page < end; ++page) {
    populated_[page / 64].fetch_or(uint64_t{1} << (page % 64), std::memory_order_relaxed);
  }
  const uint64_t pages_per_chunk = chunk_bytes_ / kPage;
  for (uint64_t page = first_page; page < end; page = (page / pages_per_chunk + 1) * pages_per_chunk) {
    MarkChunk(page / pages_per_chunk, stamp_);
  }
}

bool IncrementalChunkDigest::HashChunk(uint64_t chunk, Hash& out) const {
  const uint64_t start = chunk * chunk_bytes_;
  const uint64_t end = std::min<uint64_t>(start + chunk_bytes_, memory_.size());
  return Sha256(
      [&](EVP_MD_CTX* ctx) {
        // Runs of data pages are read, runs of known-zero pages hashed from kZeros.
        uint64_t run_start = start;
        bool run_data = false;
        for (uint64_t at = start; at <= end; at += kPage) {
          const uint64_t page = at / kPage;
          const bool data = at < end && (populated_[page / 64].load(std::memory_order_relaxed) >> (page % 64)) & 1;
          if (at < end && (at == run_start || data == run_data)) {
            run_data = data;
            continue;
          }
          const uint64_t length = at - run_start;
          const bool ok = run_data ? EVP_DigestUpdate(ctx, memory_.host() + run_start, length) == 1
                                   : UpdateZeros(ctx, length);
          if (!ok) return false;
          run_start = at;
          run_data = data;
        }
        return true;
      },
      out.data());
}

bool IncrementalChunkDigest::HashStale(uint64_t stamp) {
  for (uint64_t c = 0; c < chunks_; ++c) {
    const uint64_t marked = marked_[c].load(std::memory_order_acquire);
    if (marked <= hashed_[c] || marked > stamp) continue;
    if (!HashChunk(c, hashes_[c])) return false;
    hashed_[c] = stamp;
  }
  return true;
}

void IncrementalChunkDigest::StartHashing() {
  if (pass_.valid() && pass_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
  WaitForPass();
  // Marks from now on get a newer stamp than this pass hashes for.
  const uint64_t stamp = stamp_++;
  pass_ = std::async(std::launch::async, [this, stamp] { return HashStale(stamp); });
}

void IncrementalChunkDigest::KeepUp() {
  WaitForPass();
  StartHashing();
}

absl::StatusOr<std::string> IncrementalChunkDigest::Root() {
  WaitForPass();
  const uint64_t stamp = stamp_++;
  if (failed_ || !HashStale(stamp)) return absl::InternalError("OpenSSL SHA-256 of guest memory failed");
  std::string root(32, '\0');
  const bool ok = Sha256(
      [this](EVP_MD_CTX* ctx) { return EVP_DigestUpdate(ctx, hashes_.data(), hashes_.size() * sizeof(Hash)) == 1; },
      reinterpret_cast<uint8_t*>(root.data()));
  if (!ok) return absl::InternalError("OpenSSL SHA-256 of the chunk hashes failed");
  return root;
}

absl::StatusOr<std::string> ChunkRootSha256(const GuestMemory& memory, uint32_t chunk_bytes) {
  if (chunk_bytes == 0 || chunk_bytes % kPage != 0) {
    return absl::InvalidArgumentError(absl::StrFormat("digest chunk size %u is not a multiple of 4 KiB", chunk_bytes));
  }
  absl::StatusOr<PageBitmap> populated = PopulatedPages(memory);
  if (!populated.ok()) return populated.status();
  IncrementalChunkDigest digest(memory, *populated, chunk_bytes);
  return digest.Root();
}

}  // namespace vexstate::migration
