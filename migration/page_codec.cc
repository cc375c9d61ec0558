#include "migration/page_codec.h"

#include <cstring>
#include <string>

#include "absl/strings/str_format.h"
#include "migration/crc32c.h"

namespace vexstate::migration {

namespace {

bool PageIsZero(const uint8_t* page) {
  const uint8_t* end = page + kPageSize;
  for (const uint8_t* p = page; p < end; p += 8) {
    uint64_t word;
    std::memcpy(&word, p, 8);
    if (word != 0) return false;
  }
  return true;
}

uint64_t PageCount(const GuestMemory& memory) { return memory.size() / kPageSize; }

// Fills one run page by page; Seal() adds its CRC.
class RunBuilder {
 public:
  bool empty() const { return run_ == nullptr; }
  uint64_t next_gpa() const { return run_->gpa() + uint64_t{run_->count()} * kPageSize; }
  bool full() const { return run_->count() == kMaxRunPages; }

  void Start(v1::PageRun* run, uint64_t gpa) {
    run_ = run;
    run_->Clear();
    run_->set_gpa(gpa);
  }

  // Appends the page at `host` (copied once: the CRC covers the copy). Returns whether it was
  // elided as a zero page.
  bool Add(const uint8_t* host) {
    const uint32_t i = run_->count();
    if (i % 8 == 0) run_->mutable_zero_bitmap()->push_back(0);
    run_->set_count(i + 1);
    if (PageIsZero(host)) {
      (*run_->mutable_zero_bitmap())[i / 8] |= static_cast<char>(1u << (i % 8));
      return true;
    }
    run_->mutable_data()->append(reinterpret_cast<const char*>(host), kPageSize);
    return false;
  }

  v1::PageRun& Seal() {
    run_->set_crc32c(RunCrc32c(*run_));
    v1::PageRun& sealed = *run_;
    run_ = nullptr;
    return sealed;
  }

 private:
  v1::PageRun* run_ = nullptr;
};

}  // namespace

PageBitmap AllPages(const GuestMemory& memory) {
  const uint64_t pages = PageCount(memory);
  PageBitmap bitmap((pages + 63) / 64, ~0ull);
  if (pages % 64 != 0) bitmap.back() = (1ull << (pages % 64)) - 1;
  return bitmap;
}

uint64_t CountPages(absl::Span<const uint64_t> bitmap) {
  uint64_t n = 0;
  for (uint64_t word : bitmap) n += __builtin_popcountll(word);
  return n;
}

void MergeInto(PageBitmap& into, absl::Span<const uint64_t> from) {
  for (size_t i = 0; i < into.size() && i < from.size(); ++i) into[i] |= from[i];
}

uint32_t RunCrc32c(const v1::PageRun& run) {
  uint8_t header[12];
  const uint64_t gpa = run.gpa();
  const uint32_t count = run.count();
  for (int i = 0; i < 8; ++i) header[i] = static_cast<uint8_t>(gpa >> (8 * i));
  for (int i = 0; i < 4; ++i) header[8 + i] = static_cast<uint8_t>(count >> (8 * i));
  uint32_t crc = Crc32cExtend(0, header, sizeof(header));
  crc = Crc32cExtend(crc, run.zero_bitmap().data(), run.zero_bitmap().size());
  return Crc32cExtend(crc, run.data().data(), run.data().size());
}

absl::Status EncodePages(const GuestMemory& memory, absl::Span<const uint64_t> bitmap, ZeroPages zero_pages,
                         const RunSink& sink, EncodeStats* stats) {
  const uint64_t pages = PageCount(memory);
  if (bitmap.size() * 64 < pages) {
    return absl::InvalidArgumentError(
        absl::StrFormat("page bitmap has %u bits for %u pages of guest memory", bitmap.size() * 64, pages));
  }
  EncodeStats local;
  RunBuilder builder;
  auto flush = [&]() -> absl::Status {
    if (builder.empty()) return absl::OkStatus();
    ++local.runs;
    return sink.done(builder.Seal());
  };
  for (uint64_t word_index = 0; word_index < (pages + 63) / 64; ++word_index) {
    uint64_t word = bitmap[word_index];
    if (word == 0) continue;
    while (word != 0) {
      const uint64_t page = word_index * 64 + __builtin_ctzll(word);
      word &= word - 1;
      if (page >= pages) break;
      const uint64_t gpa = memory.base_gpa() + page * kPageSize;
      const uint8_t* host = memory.host() + page * kPageSize;
      if (zero_pages == ZeroPages::kSkip && PageIsZero(host)) {
        ++local.skipped;
        continue;
      }
      if (!builder.empty() && (builder.full() || builder.next_gpa() != gpa)) {
        if (absl::Status s = flush(); !s.ok()) return s;
      }
      if (builder.empty()) builder.Start(sink.start(), gpa);
      ++local.pages;
      if (builder.Add(host)) ++local.zero_pages;
    }
  }
  absl::Status status = flush();
  if (stats != nullptr) {
    stats->pages += local.pages;
    stats->zero_pages += local.zero_pages;
    stats->skipped += local.skipped;
    stats->runs += local.runs;
  }
  return status;
}

absl::StatusOr<v1::PageRun> EncodeRun(const GuestMemory& memory, uint64_t gpa, uint32_t count) {
  if (count == 0 || count > kMaxRunPages) {
    return absl::InvalidArgumentError(absl::StrFormat("run of %u pages: must be 1..%u", count, kMaxRunPages));
  }
  if (gpa % kPageSize != 0) return absl::InvalidArgumentError(absl::StrFormat("gpa 0x%x is not page aligned", gpa));
  absl::StatusOr<uint8_t*> host = memory.HostPointer(gpa, uint64_t{count} * kPageSize);
  if (!host.ok()) return host.status();
  v1::PageRun run;
  RunBuilder builder;
  builder.Start(&run, gpa);
  for (uint32_t i = 0; i < count; ++i) builder.Add(*host + uint64_t{i} * kPageSize);
  builder.Seal();
  return run;
}

absl::Status VerifyRun(const v1::PageRun& run, const GuestMemory& memory) {
  const uint64_t gpa = run.gpa();
  const uint32_t count = run.count();
  auto loss = [&](const std::string& what) {
    return absl::DataLossError(absl::StrFormat("page run at gpa 0x%x (%u pages): %s; not applied", gpa, count, what));
  };
  if (const uint32_t crc = RunCrc32c(run); crc != run.crc32c()) {
    return loss(
        absl::StrFormat("CRC32C 0x%08x in the stream, 0x%08x computed (corrupted in transit)", run.crc32c(), crc));
  }
  if (count == 0 || count > kMaxRunPages) return loss(absl::StrFormat("count must be 1..%u", kMaxRunPages));
  if (gpa % kPageSize != 0) return loss("gpa is not page aligned");
  if (gpa < memory.base_gpa() || gpa - memory.base_gpa() > memory.size() ||
      uint64_t{count} * kPageSize > memory.size() - (gpa - memory.base_gpa())) {
    return loss(
        absl::StrFormat("outside guest RAM [0x%x, 0x%x)", memory.base_gpa(), memory.base_gpa() + memory.size()));
  }
  const std::string& bitmap = run.zero_bitmap();
  if (bitmap.size() != (count + 7) / 8) {
    return loss(absl::StrFormat("zero_bitmap has %u bytes, expected %u", bitmap.size(), (count + 7) / 8));
  }
  if (count % 8 != 0 && (static_cast<uint8_t>(bitmap.back()) >> (count % 8)) != 0) {
    return loss("zero_bitmap has bits set beyond count");
  }
  uint32_t zero_pages = 0;
  for (char byte : bitmap) zero_pages += __builtin_popcount(static_cast<uint8_t>(byte));
  const uint64_t expected_data = uint64_t{count - zero_pages} * kPageSize;
  if (run.data().size() != expected_data) {
    return loss(absl::StrFormat("data has %u bytes, expected %u (%u non-zero pages)", run.data().size(), expected_data,
                                count - zero_pages));
  }
  return absl::OkStatus();
}

namespace {

// Writes a run that VerifyRun accepted.
void WriteVerifiedRun(const v1::PageRun& run, GuestMemory& memory) {
  uint8_t* out = memory.host() + (run.gpa() - memory.base_gpa());
  const char* data = run.data().data();
  const std::string& bitmap = run.zero_bitmap();
  for (uint32_t i = 0; i < run.count(); ++i, out += kPageSize) {
    if ((static_cast<uint8_t>(bitmap[i / 8]) >> (i % 8)) & 1) {
      std::memset(out, 0, kPageSize);
    } else {
      std::memcpy(out, data, kPageSize);
      data += kPageSize;
    }
  }
}

}  // namespace

absl::Status ApplyRun(const v1::PageRun& run, GuestMemory& memory) {
  if (absl::Status s = VerifyRun(run, memory); !s.ok()) return s;
  WriteVerifiedRun(run, memory);
  return absl::OkStatus();
}

absl::Status ApplyRuns(const google::protobuf::RepeatedPtrField<v1::PageRun>& runs, GuestMemory& memory,
                       uint64_t* pages_written) {
  for (const v1::PageRun& run : runs) {
    if (absl::Status s = VerifyRun(run, memory); !s.ok()) return s;
  }
  for (const v1::PageRun& run : runs) {
    WriteVerifiedRun(run, memory);
    if (pages_written != nullptr) *pages_written += run.count();
  }
  return absl::OkStatus();
}

}  // namespace vexstate::migration
