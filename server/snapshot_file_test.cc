// Snapshot files without KVM: synthetic snapshots through write, read, inspect, and every
// kind of damage the header comment promises to catch.
#include "server/snapshot_file.h"

#include <dirent.h>
#include <linux/capability.h>
#include <openssl/sha.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"

namespace vexstate {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

constexpr uint64_t kMaxRecordBytes = 2u << 20;

std::string TestDir() {
  const char* dir = std::getenv("TEST_TMPDIR");
  return dir != nullptr ? dir : "/tmp";
}

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// A new file each time: rewriting one in place after truncating it makes ext4 flush it on
// close (auto_da_alloc), which costs milliseconds per call.
void WriteBytes(const std::string& path, const std::string& bytes) {
  ::unlink(path.c_str());
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

uint32_t U32At(const std::string& bytes, uint64_t offset) {
  uint32_t value = 0;
  for (int i = 0; i < 4; ++i) value |= uint32_t{static_cast<uint8_t>(bytes[offset + i])} << (8 * i);
  return value;
}

void PutU32At(uint32_t value, uint64_t offset, std::string* bytes) {
  for (int i = 0; i < 4; ++i) (*bytes)[offset + i] = static_cast<char>((value >> (8 * i)) & 0xff);
}

std::vector<std::string> DirectoryEntries(const std::string& dir) {
  std::vector<std::string> names;
  DIR* d = ::opendir(dir.c_str());
  if (d == nullptr) return names;
  while (const dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

// A fresh, empty directory per test.
std::string FreshDir(const std::string& name) {
  const std::string dir = TestDir() + "/" + name;
  std::system(("rm -rf '" + dir + "'").c_str());
  EXPECT_EQ(::mkdir(dir.c_str(), 0755), 0) << dir;
  return dir;
}

std::string Pattern(size_t size, uint8_t seed) {
  std::string data(size, '\0');
  for (size_t i = 0; i < size; ++i) data[i] = static_cast<char>(seed + i * 7 + (i >> 8));
  return data;
}

// Two vCPUs with a little state each, and memory in two chunks (sizes need not be pages).
v1::Snapshot Synthetic() {
  v1::Snapshot s;
  s.set_format(v1::SNAPSHOT_FORMAT_V1);
  s.set_producer("snapshot_file_test");
  s.set_captured_unix_ns(1'700'000'000'123'456'789);
  v1::VmConfig* config = s.mutable_config();
  config->set_name("synthetic");
  config->set_arch(v1::ARCH_X86_64);
  config->set_vcpu_count(2);
  config->set_memory_bytes(16ull << 20);
  for (uint32_t i = 0; i < 2; ++i) {
    v1::VcpuState* vcpu = s.add_vcpus();
    vcpu->set_index(i);
    vcpu->mutable_x86_64()->set_rip(0x100000 + i);
    vcpu->mutable_x86_64()->set_xsave(Pattern(64, static_cast<uint8_t>(i)));
  }
  v1::MemoryChunk* low = s.add_memory();
  low->set_gpa(0x10000);
  low->set_data(Pattern(512, 1));
  v1::MemoryChunk* high = s.add_memory();
  high->set_gpa(0x100000);
  high->set_data(Pattern(96, 2));
  return s;
}

bool Equal(const v1::Snapshot& a, const v1::Snapshot& b, std::string* diff) {
  google::protobuf::util::MessageDifferencer differ;
  differ.ReportDifferencesToString(diff);
  return differ.Compare(a, b);
}

// Where the records of a well-formed file start (walks the length prefixes).
struct Layout {
  std::vector<uint64_t> records;  // offsets of header and chunk length prefixes
  uint64_t trailer = 0;           // offset of the trailer's length prefix
  uint64_t size = 0;
};

Layout Walk(const std::string& bytes) {
  Layout layout;
  layout.size = bytes.size();
  uint64_t offset = 12;
  while (offset < bytes.size()) {
    const uint32_t length = U32At(bytes, offset);
    if (offset + 4 + length == bytes.size()) {
      layout.trailer = offset;
      break;
    }
    layout.records.push_back(offset);
    offset += 4 + length;
  }
  return layout;
}

class SnapshotFileTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = FreshDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    path_ = dir_ + "/vm.vexsnap";
  }

  // Writes the synthetic snapshot and returns the file's bytes.
  std::string WriteSynthetic() {
    absl::StatusOr<SnapshotFileInfo> info = WriteSnapshotFile(Synthetic(), path_);
    EXPECT_TRUE(info.ok()) << info.status();
    return ReadBytes(path_);
  }

  // Reads `bytes` as a file through both readers; both must agree on the status code.
  absl::Status ReadAs(const std::string& bytes) {
    const std::string path = dir_ + "/damaged.vexsnap";
    WriteBytes(path, bytes);
    absl::StatusOr<v1::Snapshot> read = ReadSnapshotFile(path);
    absl::StatusOr<v1::Snapshot> inspected = InspectSnapshotFile(path);
    EXPECT_EQ(read.status().code(), inspected.status().code())
        << "read: " << read.status() << "\ninspect: " << inspected.status();
    return read.status();
  }

  std::string dir_;
  std::string path_;
};

TEST_F(SnapshotFileTest, RoundTrip) {
  const v1::Snapshot original = Synthetic();
  absl::StatusOr<SnapshotFileInfo> written = WriteSnapshotFile(original, path_);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->format_version, 1u);
  EXPECT_EQ(written->memory_chunks, 2u);
  EXPECT_EQ(written->memory_bytes_stored, 512u + 96u);
  EXPECT_EQ(written->file_bytes, ReadBytes(path_).size());
  EXPECT_EQ(written->sha256_hex.size(), 64u);

  SnapshotFileInfo info;
  absl::StatusOr<v1::Snapshot> read = ReadSnapshotFile(path_, &info);
  ASSERT_TRUE(read.ok()) << read.status();
  std::string diff;
  EXPECT_TRUE(Equal(original, *read, &diff)) << diff;
  EXPECT_EQ(info.format_version, 1u);
  EXPECT_EQ(info.file_bytes, written->file_bytes);
  EXPECT_EQ(info.memory_chunks, 2u);
  EXPECT_EQ(info.memory_bytes_stored, written->memory_bytes_stored);
  EXPECT_EQ(info.sha256_hex, written->sha256_hex);
  // Nothing but the file itself is left in the directory.
  EXPECT_THAT(DirectoryEntries(dir_), ::testing::ElementsAre("vm.vexsnap"));
}

// The bytes are what snapshot_file.h says: magic, version 1, a header record without memory,
// chunk records, and a trailer whose SHA-256 covers everything before its length prefix.
TEST_F(SnapshotFileTest, LayoutIsAsDocumented) {
  const std::string bytes = WriteSynthetic();
  ASSERT_GT(bytes.size(), 12u);
  EXPECT_EQ(bytes.substr(0, 8), std::string("VEXSNAP\0", 8));
  EXPECT_EQ(U32At(bytes, 8), 1u);
  const Layout layout = Walk(bytes);
  ASSERT_EQ(layout.records.size(), 3u);  // header + 2 chunks
  ASSERT_NE(layout.trailer, 0u);

  v1::SnapshotFileRecord header;
  ASSERT_TRUE(header.ParseFromString(bytes.substr(layout.records[0] + 4, U32At(bytes, layout.records[0]))));
  ASSERT_TRUE(header.has_header());
  EXPECT_EQ(header.header().memory_size(), 0);
  EXPECT_EQ(header.header().vcpus_size(), 2);

  v1::SnapshotFileRecord chunk;
  ASSERT_TRUE(chunk.ParseFromString(bytes.substr(layout.records[1] + 4, U32At(bytes, layout.records[1]))));
  ASSERT_TRUE(chunk.has_chunk());
  EXPECT_EQ(chunk.chunk().gpa(), 0x10000u);

  v1::SnapshotFileRecord trailer;
  ASSERT_TRUE(trailer.ParseFromString(bytes.substr(layout.trailer + 4)));
  ASSERT_TRUE(trailer.has_trailer());
  unsigned char sha[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(bytes.data()), layout.trailer, sha);
  EXPECT_EQ(trailer.trailer().sha256(), std::string(reinterpret_cast<const char*>(sha), sizeof(sha)));
  EXPECT_EQ(trailer.trailer().records(), 3u);
  EXPECT_EQ(trailer.trailer().memory_bytes(), 512u + 96u);
}

TEST_F(SnapshotFileTest, LongChunksAreCutIntoBoundedRecords) {
  v1::Snapshot original = Synthetic();
  original.clear_memory();
  v1::MemoryChunk* chunk = original.add_memory();
  chunk->set_gpa(0x200000);
  chunk->set_data(Pattern((5u << 20) / 2, 3));  // 2.5 MiB
  original.add_memory()->set_gpa(0x900000);     // empty: left out
  absl::StatusOr<SnapshotFileInfo> written = WriteSnapshotFile(original, path_);
  ASSERT_TRUE(written.ok()) << written.status();
  EXPECT_EQ(written->memory_chunks, 3u);

  absl::StatusOr<v1::Snapshot> read = ReadSnapshotFile(path_);
  ASSERT_TRUE(read.ok()) << read.status();
  ASSERT_EQ(read->memory_size(), 3);
  std::string joined;
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(read->memory(i).gpa(), 0x200000u + i * (1u << 20));
    EXPECT_LE(read->memory(i).data().size(), 1u << 20);
    joined += read->memory(i).data();
  }
  EXPECT_EQ(joined, chunk->data());
  for (uint64_t offset : Walk(ReadBytes(path_)).records) {
    EXPECT_LE(U32At(ReadBytes(path_), offset), kMaxRecordBytes);
  }
}

TEST_F(SnapshotFileTest, WriterRefusesWhatNoReaderWouldAccept) {
  v1::Snapshot unversioned = Synthetic();
  unversioned.clear_format();
  absl::StatusOr<SnapshotFileInfo> status = WriteSnapshotFile(unversioned, path_);
  EXPECT_EQ(status.status().code(), absl::StatusCode::kInvalidArgument) << status.status();
  EXPECT_THAT(std::string(status.status().message()), HasSubstr("format 0"));

  v1::Snapshot huge_header = Synthetic();
  huge_header.mutable_vcpus(0)->mutable_x86_64()->set_xsave(std::string(kMaxRecordBytes + 1, 'x'));
  status = WriteSnapshotFile(huge_header, path_);
  EXPECT_EQ(status.status().code(), absl::StatusCode::kInvalidArgument) << status.status();
  EXPECT_THAT(std::string(status.status().message()), HasSubstr("limit"));
  EXPECT_THAT(DirectoryEntries(dir_), ::testing::IsEmpty());
}

TEST_F(SnapshotFileTest, TruncatedAnywhereIsDataLoss) {
  const std::string bytes = WriteSynthetic();
  const Layout layout = Walk(bytes);
  ASSERT_EQ(layout.records.size(), 3u);
  const uint64_t header = layout.records[0];
  const uint64_t chunk = layout.records[1];
  const std::vector<std::pair<std::string, uint64_t>> named = {
      {"empty file", 0},
      {"inside the magic", 5},
      {"after the magic", 8},
      {"inside the version", 10},
      {"after the version", 12},
      {"inside the header's length", header + 2},
      {"just after the header's length", header + 4},
      {"mid-header record", header + 4 + U32At(bytes, header) / 2},
      {"after the header", chunk},
      {"mid-chunk record", chunk + 4 + U32At(bytes, chunk) / 2},
      {"before the trailer", layout.trailer},
      {"inside the trailer's length", layout.trailer + 3},
      {"mid-trailer", layout.trailer + 4 + (layout.size - layout.trailer - 4) / 2},
      {"trailer minus 1 byte", layout.size - 1},
  };
  for (const auto& [what, size] : named) {
    absl::Status status = ReadAs(bytes.substr(0, size));
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << what << " (" << size << " bytes): " << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("damaged.vexsnap")) << what;
  }
  // And a sweep over the rest, every 17 bytes.
  for (uint64_t size = 0; size < bytes.size(); size += 17) {
    EXPECT_EQ(ReadAs(bytes.substr(0, size)).code(), absl::StatusCode::kDataLoss) << size << " bytes";
  }
}

TEST_F(SnapshotFileTest, TruncationMessagesNameTheOffset) {
  const std::string bytes = WriteSynthetic();
  const Layout layout = Walk(bytes);
  absl::Status status = ReadAs(bytes.substr(0, layout.trailer));
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrFormat("ends at offset %u", layout.trailer)));
  const uint64_t mid_chunk = layout.records[1] + 10;
  status = ReadAs(bytes.substr(0, mid_chunk));
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrFormat("record at offset %u", layout.records[1])));
}

// Every byte flipped (three ways) is caught. The one field read before anything can be
// verified is the version: a flip there that yields a plausible newer version (2..255) reads
// as "newer"; every other value of it is DATA_LOSS too.
TEST_F(SnapshotFileTest, FlippedByteAnywhereIsDataLoss) {
  const std::string bytes = WriteSynthetic();
  for (uint8_t mask : {0x01, 0x80, 0xff}) {
    for (uint64_t offset = 0; offset < bytes.size(); ++offset) {
      std::string damaged = bytes;
      damaged[offset] = static_cast<char>(damaged[offset] ^ mask);
      absl::StatusCode expected = absl::StatusCode::kDataLoss;
      if (offset >= 8 && offset < 12) {
        const uint32_t version = U32At(damaged, 8);
        if (version >= 2 && version <= 255) expected = absl::StatusCode::kFailedPrecondition;
      }
      absl::Status status = ReadAs(damaged);
      ASSERT_EQ(status.code(), expected) << absl::StrFormat("byte %u ^ 0x%02x: ", offset, mask) << status;
    }
  }
}

TEST_F(SnapshotFileTest, ChecksumMismatchNamesBothHashes) {
  std::string bytes = WriteSynthetic();
  const Layout layout = Walk(bytes);
  // A byte of memory data: the record still parses, only the checksum can tell.
  bytes[layout.records[1] + 20] ^= 0x55;
  absl::Status status = ReadAs(bytes);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("SHA-256 mismatch"));
  EXPECT_THAT(std::string(status.message()), HasSubstr(absl::StrFormat("offset %u", layout.trailer)));
}

TEST_F(SnapshotFileTest, NewerVersionIsFailedPrecondition) {
  std::string bytes = WriteSynthetic();
  PutU32At(2, 8, &bytes);
  absl::Status status = ReadAs(bytes);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("written by a newer vexstate"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("format version 2"));
  EXPECT_THAT(std::string(status.message()), HasSubstr("damaged.vexsnap"));

  PutU32At(0, 8, &bytes);
  EXPECT_EQ(ReadAs(bytes).code(), absl::StatusCode::kDataLoss);
  PutU32At(0x01000001, 8, &bytes);
  EXPECT_EQ(ReadAs(bytes).code(), absl::StatusCode::kDataLoss);
}

TEST_F(SnapshotFileTest, MissingFileIsNotFound) {
  const std::string missing = dir_ + "/nothing-here.vexsnap";
  absl::StatusOr<v1::Snapshot> read = ReadSnapshotFile(missing);
  EXPECT_EQ(read.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(read.status().message()), HasSubstr(missing));
  EXPECT_EQ(InspectSnapshotFile(missing).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(SnapshotFileTest, NotASnapshotIsDataLoss) {
  for (const std::string& bytes :
       {std::string("#!/bin/sh\necho this is not a snapshot file\n"), std::string("\x7f"
                                                                                  "ELF\x02\x01\x01\0\0\0\0\0\0\0\0\0",
                                                                                  16)}) {
    absl::Status status = ReadAs(bytes);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("is not a vexstate snapshot file"));
  }
  // A prefix of the magic is a truncated snapshot; a directory is not a file at all.
  EXPECT_THAT(std::string(ReadAs("VEXS").message()), HasSubstr("truncated"));
  EXPECT_EQ(ReadSnapshotFile(dir_).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(SnapshotFileTest, RecordLengthIsBoundedBeforeAllocation) {
  std::string bytes = WriteSynthetic();
  for (uint32_t length : {0xffffffffu, static_cast<uint32_t>(kMaxRecordBytes + 1)}) {
    PutU32At(length, 12, &bytes);
    absl::Status status = ReadAs(bytes);
    EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr("offset 12: record length"));
    EXPECT_THAT(std::string(status.message()), HasSubstr("above the 2097152-byte limit"));
  }
}

TEST_F(SnapshotFileTest, BytesAfterTheTrailerAreDataLoss) {
  absl::Status status = ReadAs(WriteSynthetic() + std::string(1, '\0'));
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(std::string(status.message()), HasSubstr("1 bytes follow the trailer"));
}

TEST_F(SnapshotFileTest, RecordsOutOfOrderAreDataLoss) {
  // A file whose chunk records come before the header, checksummed correctly: the order
  // rule, not the checksum, must refuse it.
  const std::string bytes = WriteSynthetic();
  const Layout layout = Walk(bytes);
  std::string reordered = bytes.substr(0, 12) + bytes.substr(layout.records[1], layout.trailer - layout.records[1]) +
                          bytes.substr(layout.records[0], layout.records[1] - layout.records[0]);
  v1::SnapshotFileRecord trailer;
  ASSERT_TRUE(trailer.ParseFromString(bytes.substr(layout.trailer + 4)));
  unsigned char sha[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(reordered.data()), reordered.size(), sha);
  trailer.mutable_trailer()->set_sha256(std::string(reinterpret_cast<const char*>(sha), sizeof(sha)));
  const std::string trailer_bytes = trailer.SerializeAsString();
  std::string prefix(4, '\0');
  PutU32At(static_cast<uint32_t>(trailer_bytes.size()), 0, &prefix);
  absl::Status status = ReadAs(reordered + prefix + trailer_bytes);
  EXPECT_EQ(status.code(), absl::StatusCode::kDataLoss) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("before the header"));
}

TEST_F(SnapshotFileTest, InspectKeepsHeaderOnlyAndStillVerifies) {
  std::string bytes = WriteSynthetic();
  SnapshotFileInfo read_info;
  ASSERT_TRUE(ReadSnapshotFile(path_, &read_info).ok());
  SnapshotFileInfo info;
  absl::StatusOr<v1::Snapshot> header = InspectSnapshotFile(path_, &info);
  ASSERT_TRUE(header.ok()) << header.status();
  v1::Snapshot expected = Synthetic();
  expected.clear_memory();
  std::string diff;
  EXPECT_TRUE(Equal(expected, *header, &diff)) << diff;
  EXPECT_EQ(info.memory_chunks, 2u);
  EXPECT_EQ(info.memory_bytes_stored, read_info.memory_bytes_stored);
  EXPECT_EQ(info.sha256_hex, read_info.sha256_hex);
  EXPECT_EQ(info.file_bytes, bytes.size());

  // Damage in memory that Inspect does not keep is still found.
  const Layout layout = Walk(bytes);
  bytes[layout.records[2] + 30] ^= 0x01;
  WriteBytes(path_, bytes);
  absl::StatusOr<v1::Snapshot> damaged = InspectSnapshotFile(path_);
  EXPECT_EQ(damaged.status().code(), absl::StatusCode::kDataLoss) << damaged.status();
  EXPECT_THAT(std::string(damaged.status().message()), HasSubstr("SHA-256 mismatch"));
}

TEST_F(SnapshotFileTest, RewriteReplacesWholeFile) {
  ASSERT_TRUE(WriteSnapshotFile(Synthetic(), path_).ok());
  v1::Snapshot second = Synthetic();
  second.set_producer("second");
  second.mutable_memory(0)->set_data(Pattern(4096, 9));
  ASSERT_TRUE(WriteSnapshotFile(second, path_).ok());
  absl::StatusOr<v1::Snapshot> read = ReadSnapshotFile(path_);
  ASSERT_TRUE(read.ok()) << read.status();
  std::string diff;
  EXPECT_TRUE(Equal(second, *read, &diff)) << diff;
  EXPECT_THAT(DirectoryEntries(dir_), ::testing::ElementsAre("vm.vexsnap"));
}

// --- A failed write leaves an existing file untouched -----------------------------------------

class FailedWrite : public SnapshotFileTest {
 protected:
  void SetUp() override {
    SnapshotFileTest::SetUp();
    old_bytes_ = WriteSynthetic();
    replacement_ = Synthetic();
    replacement_.set_producer("replacement");
    replacement_.mutable_memory(0)->set_data(Pattern(64 << 10, 5));
  }

  void ExpectOldFileIntact() {
    EXPECT_EQ(ReadBytes(path_), old_bytes_);
    absl::StatusOr<v1::Snapshot> read = ReadSnapshotFile(path_);
    ASSERT_TRUE(read.ok()) << read.status();
    EXPECT_EQ(read->producer(), "snapshot_file_test");
  }

  std::string TmpPath() const { return absl::StrFormat("%s.tmp-%d", path_, ::getpid()); }

  std::string old_bytes_;
  v1::Snapshot replacement_;
};

// Root ignores directory permissions through CAP_DAC_OVERRIDE; the capability is dropped from
// this thread's effective set (capabilities are per thread) and raised again afterwards.
class ScopedNoDacOverride {
 public:
  ScopedNoDacOverride() {
    header_.version = _LINUX_CAPABILITY_VERSION_3;
    header_.pid = 0;
    ok_ = ::syscall(SYS_capget, &header_, saved_) == 0;
    if (!ok_) return;
    __user_cap_data_struct dropped[2] = {saved_[0], saved_[1]};
    dropped[0].effective &= ~((1u << CAP_DAC_OVERRIDE) | (1u << CAP_DAC_READ_SEARCH) | (1u << CAP_FOWNER));
    ok_ = ::syscall(SYS_capset, &header_, dropped) == 0;
  }
  ~ScopedNoDacOverride() {
    if (ok_) ::syscall(SYS_capset, &header_, saved_);
  }
  bool ok() const { return ok_; }

 private:
  __user_cap_header_struct header_{};
  __user_cap_data_struct saved_[2]{};
  bool ok_ = false;
};

TEST_F(FailedWrite, DirectoryNotWritable) {
  ASSERT_EQ(::chmod(dir_.c_str(), 0555), 0);
  absl::StatusOr<SnapshotFileInfo> status;
  {
    ScopedNoDacOverride no_override;
    ASSERT_TRUE(no_override.ok()) << "capget/capset: " << std::strerror(errno);
    status = WriteSnapshotFile(replacement_, path_);
  }
  ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);
  EXPECT_EQ(status.status().code(), absl::StatusCode::kPermissionDenied) << status.status();
  EXPECT_THAT(std::string(status.status().message()), HasSubstr(TmpPath()));
  ExpectOldFileIntact();
  EXPECT_THAT(DirectoryEntries(dir_), ::testing::ElementsAre("vm.vexsnap"));
}

TEST_F(FailedWrite, TemporaryPathTaken) {
  ASSERT_EQ(::mkdir(TmpPath().c_str(), 0755), 0);
  absl::StatusOr<SnapshotFileInfo> status = WriteSnapshotFile(replacement_, path_);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.status().message()), HasSubstr(TmpPath()));
  ExpectOldFileIntact();
  ASSERT_EQ(::rmdir(TmpPath().c_str()), 0);
}

// The write fails part-way (the file size limit is hit after some bytes reached the disk):
// the partial temporary file is removed and the old file stays.
TEST_F(FailedWrite, FailsMidWrite) {
  struct rlimit saved;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &saved), 0);
  struct sigaction ignore {
  }, old_action{};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGXFSZ, &ignore, &old_action), 0);
  struct rlimit small = saved;
  small.rlim_cur = 16 << 10;  // the replacement is ~64 KiB
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  absl::StatusOr<SnapshotFileInfo> status = WriteSnapshotFile(replacement_, path_);
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &saved), 0);
  ASSERT_EQ(::sigaction(SIGXFSZ, &old_action, nullptr), 0);
  EXPECT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.status().message()), StartsWith("write " + TmpPath()));
  ExpectOldFileIntact();
  EXPECT_THAT(DirectoryEntries(dir_), ::testing::ElementsAre("vm.vexsnap"));
}

}  // namespace
}  // namespace vexstate
