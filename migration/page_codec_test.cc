#include "migration/page_codec.h"

#include <cstring>
#include <deque>
#include <functional>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vexstate::migration {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kBase = 0x40000000;  // arm64's RAM base: a non-zero base catches offset bugs
constexpr uint64_t kPages = 600;

GuestMemory NewMemory(const char* name) {
  absl::StatusOr<GuestMemory> memory = GuestMemory::Create(kBase, kPages * kPageSize, name);
  EXPECT_TRUE(memory.ok()) << memory.status();
  return std::move(*memory);
}

// Page p holds a recognisable pattern, except every page with p % 5 == 0 is zero.
void FillPattern(GuestMemory& memory) {
  for (uint64_t p = 0; p < kPages; ++p) {
    uint8_t* page = memory.host() + p * kPageSize;
    if (p % 5 == 0) {
      std::memset(page, 0, kPageSize);
      continue;
    }
    for (uint64_t i = 0; i < kPageSize; ++i) page[i] = static_cast<uint8_t>(p * 31 + i * 7 + 1);
  }
}

std::vector<v1::PageRun> Encode(const GuestMemory& memory, const PageBitmap& bitmap, ZeroPages mode,
                                EncodeStats* stats = nullptr) {
  std::deque<v1::PageRun> runs;  // stable addresses for RunSink::start
  RunSink sink{[&] { return &runs.emplace_back(); }, [](v1::PageRun&) { return absl::OkStatus(); }};
  absl::Status s = EncodePages(memory, bitmap, mode, sink, stats);
  EXPECT_TRUE(s.ok()) << s;
  return std::vector<v1::PageRun>(runs.begin(), runs.end());
}

bool SameBytes(const GuestMemory& a, const GuestMemory& b) { return std::memcmp(a.host(), b.host(), a.size()) == 0; }

void SetPage(PageBitmap& bitmap, uint64_t page) { bitmap[page / 64] |= 1ull << (page % 64); }

TEST(PageCodec, AllPagesWithZeroElisionRoundTrips) {
  GuestMemory source = NewMemory("source");
  FillPattern(source);
  GuestMemory destination = NewMemory("destination");
  std::memset(destination.host(), 0xaa, destination.size());  // stale data everywhere
  EncodeStats stats;
  std::vector<v1::PageRun> runs = Encode(source, AllPages(source), ZeroPages::kElide, &stats);
  EXPECT_EQ(stats.pages, kPages);
  EXPECT_EQ(stats.zero_pages, kPages / 5);
  ASSERT_EQ(runs.size(), 3u) << "600 contiguous pages in runs of at most 256";
  EXPECT_EQ(runs[0].count(), kMaxRunPages);
  EXPECT_EQ(runs[2].count(), kPages - 2 * kMaxRunPages);
  EXPECT_EQ(runs[0].gpa(), kBase);
  EXPECT_EQ(runs[0].zero_bitmap().size(), kMaxRunPages / 8);
  EXPECT_EQ(static_cast<uint8_t>(runs[0].zero_bitmap()[0]), 0x21) << "pages 0 and 5 are zero";
  uint64_t data_pages = 0;
  for (const auto& run : runs) {
    data_pages += run.data().size() / kPageSize;
    ASSERT_TRUE(ApplyRun(run, destination).ok());
  }
  EXPECT_EQ(data_pages, kPages - kPages / 5) << "zero pages are not in data";
  EXPECT_TRUE(SameBytes(source, destination)) << "zero pages overwrite stale data with zeros";
}

TEST(PageCodec, SkipLeavesZeroPagesOutAndBreaksRunsAtThem) {
  GuestMemory source = NewMemory("source");
  FillPattern(source);
  GuestMemory destination = NewMemory("destination");  // zeroed, as a fresh incoming VM
  EncodeStats stats;
  std::vector<v1::PageRun> runs = Encode(source, AllPages(source), ZeroPages::kSkip, &stats);
  EXPECT_EQ(stats.skipped, kPages / 5);
  EXPECT_EQ(stats.zero_pages, 0u);
  EXPECT_EQ(runs.size(), kPages / 5) << "one run of 4 pages between each pair of zero pages";
  for (const auto& run : runs) {
    EXPECT_EQ(run.count(), 4u);
    EXPECT_EQ(run.zero_bitmap(), std::string(1, '\0'));
    ASSERT_TRUE(ApplyRun(run, destination).ok());
  }
  EXPECT_TRUE(SameBytes(source, destination));
}

TEST(PageCodec, OnlySelectedPagesAreEncoded) {
  GuestMemory source = NewMemory("source");
  FillPattern(source);
  PageBitmap bitmap(AllPages(source).size(), 0);
  for (uint64_t p : {1, 2, 3, 10, 64, 65, 599}) SetPage(bitmap, p);
  EXPECT_EQ(CountPages(bitmap), 7u);
  std::vector<v1::PageRun> runs = Encode(source, bitmap, ZeroPages::kElide);
  ASSERT_EQ(runs.size(), 4u);
  EXPECT_EQ(runs[0].gpa(), kBase + 1 * kPageSize);
  EXPECT_EQ(runs[0].count(), 3u);
  EXPECT_EQ(runs[1].gpa(), kBase + 10 * kPageSize);
  EXPECT_EQ(runs[1].zero_bitmap(), std::string(1, '\x01')) << "page 10 is zero";
  EXPECT_TRUE(runs[1].data().empty());
  EXPECT_EQ(runs[2].count(), 2u);
  EXPECT_EQ(runs[3].gpa(), kBase + 599 * kPageSize);
}

TEST(PageCodec, EmitErrorStopsEncoding) {
  GuestMemory source = NewMemory("source");
  FillPattern(source);
  int calls = 0;
  v1::PageRun run;
  RunSink sink{[&] { return &run; },
               [&](v1::PageRun&) {
                 ++calls;
                 return absl::UnavailableError("sink broke");
               }};
  absl::Status s = EncodePages(source, AllPages(source), ZeroPages::kElide, sink);
  EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(calls, 1);
}

TEST(PageCodec, BitmapTooShortIsRefused) {
  GuestMemory source = NewMemory("source");
  PageBitmap bitmap(2, ~0ull);
  v1::PageRun run;
  RunSink sink{[&] { return &run; }, [](v1::PageRun&) { return absl::OkStatus(); }};
  absl::Status s = EncodePages(source, bitmap, ZeroPages::kElide, sink);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
}

TEST(PageCodec, EncodeRunChecksItsArguments) {
  GuestMemory source = NewMemory("source");
  EXPECT_EQ(EncodeRun(source, kBase, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeRun(source, kBase, kMaxRunPages + 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(EncodeRun(source, kBase + 1, 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_FALSE(EncodeRun(source, kBase + (kPages - 1) * kPageSize, 2).ok());
  EXPECT_TRUE(EncodeRun(source, kBase + (kPages - 1) * kPageSize, 1).ok());
}

// A run of 12 pages (pages 8..19: 10 and 15 are zero) and a destination filled with 0x55.
class Corruption : public ::testing::Test {
 protected:
  Corruption() : source_(NewMemory("source")), destination_(NewMemory("destination")) {
    FillPattern(source_);
    std::memset(destination_.host(), 0x55, destination_.size());
    snapshot_.assign(reinterpret_cast<char*>(destination_.host()), destination_.size());
    absl::StatusOr<v1::PageRun> run = EncodeRun(source_, kBase + 8 * kPageSize, 12);
    EXPECT_TRUE(run.ok()) << run.status();
    run_ = *run;
  }

  // Applies `run`; expects DATA_LOSS mentioning `what` and the run's gpa, and no change.
  void ExpectRefused(const v1::PageRun& run, const std::string& what) {
    absl::Status s = ApplyRun(run, destination_);
    EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
    EXPECT_THAT(std::string(s.message()), HasSubstr(what));
    EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrFormat("gpa 0x%x", run.gpa())));
    EXPECT_EQ(std::memcmp(destination_.host(), snapshot_.data(), snapshot_.size()), 0) << "memory changed";
  }

  // Rewrites the CRC so only the shape check can catch what was changed.
  static v1::PageRun Resealed(v1::PageRun run) {
    run.set_crc32c(RunCrc32c(run));
    return run;
  }

  GuestMemory source_;
  GuestMemory destination_;
  std::string snapshot_;
  v1::PageRun run_;
};

TEST_F(Corruption, CleanRunApplies) {
  EXPECT_EQ(run_.zero_bitmap(), std::string("\x84\x00", 2)) << "pages 10 and 15 are zero";
  ASSERT_TRUE(ApplyRun(run_, destination_).ok());
  EXPECT_EQ(std::memcmp(destination_.host() + 8 * kPageSize, source_.host() + 8 * kPageSize, 12 * kPageSize), 0);
}

TEST_F(Corruption, FlippedDataByte) {
  v1::PageRun run = run_;
  (*run.mutable_data())[5000] ^= 0x01;
  ExpectRefused(run, "CRC32C");
}

TEST_F(Corruption, FlippedGpa) {
  v1::PageRun run = run_;
  run.set_gpa(run.gpa() + kPageSize);
  ExpectRefused(run, "CRC32C");
}

TEST_F(Corruption, FlippedCount) {
  v1::PageRun run = run_;
  run.set_count(11);
  ExpectRefused(run, "CRC32C");
}

TEST_F(Corruption, FlippedZeroBitmap) {
  v1::PageRun run = run_;
  (*run.mutable_zero_bitmap())[0] ^= 0x01;
  ExpectRefused(run, "CRC32C");
}

TEST_F(Corruption, FlippedCrc) {
  v1::PageRun run = run_;
  run.set_crc32c(run.crc32c() ^ 0x80000000u);
  ExpectRefused(run, "CRC32C");
}

TEST_F(Corruption, TruncatedData) {
  v1::PageRun run = run_;
  run.mutable_data()->resize(run.data().size() - kPageSize);
  ExpectRefused(run, "CRC32C");
}

TEST_F(Corruption, ShapeErrorsWithAValidCrc) {
  v1::PageRun run = run_;
  run.set_count(0);
  ExpectRefused(Resealed(run), "count must be");
  run = run_;
  run.set_count(kMaxRunPages + 1);
  ExpectRefused(Resealed(run), "count must be");
  run = run_;
  run.set_gpa(run.gpa() + 8);
  ExpectRefused(Resealed(run), "not page aligned");
  run = run_;
  run.set_gpa(kBase - kPageSize);
  ExpectRefused(Resealed(run), "outside guest RAM");
  run = run_;
  run.set_gpa(kBase + (kPages - 4) * kPageSize);
  ExpectRefused(Resealed(run), "outside guest RAM");
  run = run_;
  run.set_gpa(~0ull & ~(kPageSize - 1));
  ExpectRefused(Resealed(run), "outside guest RAM");
  run = run_;
  run.mutable_zero_bitmap()->push_back('\0');
  ExpectRefused(Resealed(run), "zero_bitmap has 3 bytes");
  run = run_;
  (*run.mutable_zero_bitmap())[1] |= 0x80;  // page 15 of a 12-page run
  ExpectRefused(Resealed(run), "beyond count");
  run = run_;
  (*run.mutable_zero_bitmap())[0] |= 0x01;  // claims page 0 is zero: data is a page too long
  ExpectRefused(Resealed(run), "data has");
}

TEST_F(Corruption, BadRunInABatchWritesNothingOfTheBatch) {
  google::protobuf::RepeatedPtrField<v1::PageRun> runs;
  for (uint64_t page : {100, 200, 300}) {
    absl::StatusOr<v1::PageRun> run = EncodeRun(source_, kBase + page * kPageSize, 4);
    ASSERT_TRUE(run.ok());
    *runs.Add() = *run;
  }
  (*runs.Mutable(2)->mutable_data())[0] ^= 0x40;
  uint64_t written = 0;
  absl::Status s = ApplyRuns(runs, destination_, &written);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrFormat("gpa 0x%x", kBase + 300 * kPageSize)));
  EXPECT_EQ(written, 0u);
  EXPECT_EQ(std::memcmp(destination_.host(), snapshot_.data(), snapshot_.size()), 0);
  (*runs.Mutable(2)->mutable_data())[0] ^= 0x40;
  ASSERT_TRUE(ApplyRuns(runs, destination_, &written).ok());
  EXPECT_EQ(written, 12u);
}

TEST(PageBitmapHelpers, AllCountMerge) {
  absl::StatusOr<GuestMemory> memory = GuestMemory::Create(0, 100 * kPageSize, "bitmap");
  ASSERT_TRUE(memory.ok());
  PageBitmap all = AllPages(*memory);
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(CountPages(all), 100u);
  PageBitmap a(2, 0), b(2, 0);
  a[0] = 0x3;
  b[0] = 0x6;
  b[1] = 0x1;
  MergeInto(a, b);
  EXPECT_EQ(a[0], 0x7u);
  EXPECT_EQ(a[1], 0x1u);
}

}  // namespace
}  // namespace vexstate::migration
