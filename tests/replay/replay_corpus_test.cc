// The snapshot replay corpus (tests/data/snapshots/): every saved snapshot file is read,
// restored into a new VM on real /dev/kvm, resumed, and the witness guest's own reports must be
// exactly those of the file's .expect — each pending exception taken once, with its values.
// Files are never regenerated to make this pass (README.md there): a failure here means the
// file format, the restore path or exception delivery changed behaviour for saved snapshots.
#include <dirent.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "server/snapshot_file.h"
#include "tests/replay/expectation.h"
#include "tests/testing/witness_vm.h"

namespace vexstate {
namespace {

// How long a resumed guest gets to make the expected reports, and how long we keep watching
// afterwards so that a second delivery (or any other extra report) would be seen.
constexpr absl::Duration kDeliveryTimeout = absl::Seconds(10);
constexpr absl::Duration kSettle = absl::Milliseconds(500);

// The pinned version-1 file and the SHA-256 its trailer records. It is a copy of the first
// x86_mce_bank3.vexsnap and is never regenerated: when a new format version appears, this file
// stays as it is and must keep loading (and replaying) through the version-1 reader.
constexpr char kPinnedName[] = "format_v1_pinned";
constexpr char kPinnedSha256[] = "ebcec088105bb8ddb9924d19c1a6e2a24befeb1eb20c33928688fc15dd70189d";

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const absl::Status _s = (expr);                         \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.ToString(); \
  } while (0)

std::string CorpusDir() {
  const char* srcdir = std::getenv("TEST_SRCDIR");
  const char* workspace = std::getenv("TEST_WORKSPACE");
  if (srcdir == nullptr || workspace == nullptr) return "tests/data/snapshots";  // run by hand from the root
  return std::string(srcdir) + "/" + workspace + "/tests/data/snapshots";
}

// The corpus's file names with `extension`, without it, sorted.
std::vector<std::string> CorpusNames(const std::string& extension) {
  std::vector<std::string> names;
  DIR* dir = ::opendir(CorpusDir().c_str());
  if (dir == nullptr) return names;
  while (const dirent* entry = ::readdir(dir)) {
    absl::string_view name = entry->d_name;
    if (absl::ConsumeSuffix(&name, extension)) names.emplace_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  return names;
}

absl::StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError("cannot open " + path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

TEST(ReplayCorpus, KvmIsAvailable) {
  const int fd = ::open("/dev/kvm", O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << "the replay corpus needs /dev/kvm (open: " << std::strerror(errno)
                   << "): this test runs real VMs and is not skipped without KVM";
  ::close(fd);
}

TEST(ReplayCorpus, EverySnapshotHasItsExpectation) {
  const std::vector<std::string> snapshots = CorpusNames(".vexsnap");
  const std::vector<std::string> expectations = CorpusNames(".expect");
  EXPECT_GE(snapshots.size(), 5u) << "corpus directory " << CorpusDir() << " is (nearly) empty";
  EXPECT_EQ(snapshots, expectations) << "each <name>.vexsnap needs a <name>.expect and vice versa";
  EXPECT_TRUE(std::find(snapshots.begin(), snapshots.end(), kPinnedName) != snapshots.end());
}

// Format v1 stays readable forever; this file pins it (see kPinnedName).
TEST(ReplayCorpus, FormatV1PinnedKeepsLoading) {
  const std::string path = CorpusDir() + "/" + kPinnedName + ".vexsnap";
  SnapshotFileInfo info;
  absl::StatusOr<v1::Snapshot> snapshot = ReadSnapshotFile(path, &info);
  ASSERT_TRUE(snapshot.ok()) << snapshot.status();
  EXPECT_EQ(info.format_version, 1u);
  EXPECT_EQ(snapshot->format(), v1::SNAPSHOT_FORMAT_V1);
  EXPECT_EQ(info.sha256_hex, kPinnedSha256) << path << " is not the pinned file: it must never be regenerated";
  EXPECT_GT(info.memory_chunks, 0u);
  SnapshotFileInfo inspected;
  ASSERT_TRUE(InspectSnapshotFile(path, &inspected).ok());
  EXPECT_EQ(inspected.sha256_hex, info.sha256_hex);
}

// One corpus entry: <name>.vexsnap read and verified, <name>.expect parsed.
struct CorpusFile {
  v1::Snapshot snapshot;
  replay::Expectation expectation;
};

absl::StatusOr<CorpusFile> LoadCorpusFile(const std::string& name) {
  const std::string base = CorpusDir() + "/" + name;
  CorpusFile file;
  absl::StatusOr<v1::Snapshot> snapshot = ReadSnapshotFile(base + ".vexsnap");
  if (!snapshot.ok()) return snapshot.status();
  file.snapshot = std::move(*snapshot);
  absl::StatusOr<std::string> text = ReadText(base + ".expect");
  if (!text.ok()) return text.status();
  absl::StatusOr<replay::Expectation> expectation = replay::ParseExpectation(*text, name + ".expect");
  if (!expectation.ok()) return expectation.status();
  file.expectation = std::move(*expectation);
  return file;
}

// A new VM from the file, its control writes made while it is still paused (before its first
// instruction), then resumed.
absl::StatusOr<std::unique_ptr<testing::WitnessVm>> RestoreAndResume(const CorpusFile& file,
                                                                     const RestorePolicy& policy = {}) {
  absl::StatusOr<std::unique_ptr<testing::WitnessVm>> w = testing::WitnessVm::Restore(file.snapshot, policy);
  if (!w.ok()) return w.status();
  for (const replay::ControlWrite& write : file.expectation.controls) {
    if (absl::Status s = (*w)->WriteControl(write.offset, write.value); !s.ok()) return s;
  }
  if (absl::Status s = (*w)->vm().Resume(); !s.ok()) return s;
  return w;
}

// Waits until every vCPU made at least as many reports as it is expected to (or the timeout,
// or a vCPU error), then keeps watching for kSettle so that extra reports show too.
void AwaitReports(testing::WitnessVm& w, const replay::Expectation& expectation) {
  std::map<uint32_t, size_t> wanted;
  for (const replay::ExpectedReport& r : expectation.reports) ++wanted[r.vcpu];
  const absl::Time deadline = absl::Now() + kDeliveryTimeout;
  for (;;) {
    std::map<uint32_t, size_t> seen;
    for (const WitnessReport& r : w.console().Reports()) ++seen[r.vcpu];
    bool all = true;
    for (const auto& [vcpu, count] : wanted) all &= seen[vcpu] >= count;
    if (all || absl::Now() > deadline || !w.console().vcpu_error().ok()) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  absl::SleepFor(kSettle);
}

class Replay : public ::testing::TestWithParam<std::string> {};

TEST_P(Replay, GuestReportsExactlyTheExpectation) {
  absl::StatusOr<CorpusFile> file = LoadCorpusFile(GetParam());
  ASSERT_TRUE(file.ok()) << file.status();
  ASSERT_FALSE(file->expectation.reports.empty()) << "an expectation without reports would prove nothing";
  absl::StatusOr<std::unique_ptr<testing::WitnessVm>> w = RestoreAndResume(*file);
  ASSERT_TRUE(w.ok()) << w.status();
  AwaitReports(**w, file->expectation);
  ASSERT_OK((*w)->vm().Pause());

  const std::string transcript = (*w)->console().Transcript();
  const absl::Status vcpu_error = (*w)->console().vcpu_error();
  ASSERT_TRUE(vcpu_error.ok()) << "a vCPU stopped: " << vcpu_error << "\nconsole:\n" << transcript;
  const absl::Status match = replay::MatchReports(file->expectation, (*w)->console().Reports());
  EXPECT_TRUE(match.ok()) << GetParam() << ".expect: " << match.message() << "\nconsole:\n" << transcript;
}

// Nothing lost (SPEC §4.2): before it runs, the restored VM holds exactly the file's guest
// memory and pending exception state. (Registers are compared by the x86 witness tests' round
// trip; here the TSC and kvmclock would differ with the time since the capture.)
TEST_P(Replay, RestoredMemoryAndExceptionStateEqualTheFile) {
  absl::StatusOr<CorpusFile> file = LoadCorpusFile(GetParam());
  ASSERT_TRUE(file.ok()) << file.status();
  absl::StatusOr<std::unique_ptr<testing::WitnessVm>> w = testing::WitnessVm::Restore(file->snapshot);
  ASSERT_TRUE(w.ok()) << w.status();
  absl::StatusOr<v1::Snapshot> restored = (*w)->vm().Capture();
  ASSERT_TRUE(restored.ok()) << restored.status();
  ASSERT_EQ(restored->vcpus_size(), file->snapshot.vcpus_size());
  google::protobuf::util::MessageDifferencer differ;
  std::string diff;
  differ.ReportDifferencesToString(&diff);
  for (int i = 0; i < restored->vcpus_size(); ++i) {
    EXPECT_TRUE(differ.Compare(file->snapshot.vcpus(i).exception(), restored->vcpus(i).exception()))
        << "vCPU " << i << ": " << diff;
  }
  ASSERT_EQ(restored->memory_size(), file->snapshot.memory_size());
  for (int i = 0; i < restored->memory_size(); ++i) {
    EXPECT_EQ(restored->memory(i).gpa(), file->snapshot.memory(i).gpa()) << "chunk " << i;
    EXPECT_TRUE(restored->memory(i).data() == file->snapshot.memory(i).data()) << "chunk " << i << " differs";
  }
}

// The negative control: the same file restored without its exception state gives the guest
// nothing to report, so each expectation really rests on the pending state in the file.
TEST_P(Replay, WithoutExceptionStateNothingIsTaken) {
  absl::StatusOr<CorpusFile> file = LoadCorpusFile(GetParam());
  ASSERT_TRUE(file.ok()) << file.status();
  RestorePolicy skip;
  skip.skip_exception_state = true;
  absl::StatusOr<std::unique_ptr<testing::WitnessVm>> w = RestoreAndResume(*file, skip);
  ASSERT_TRUE(w.ok()) << w.status();
  absl::SleepFor(kSettle);
  ASSERT_OK((*w)->vm().Pause());
  EXPECT_THAT((*w)->console().Find("EXC"), ::testing::IsEmpty()) << (*w)->console().Transcript();
  EXPECT_FALSE(replay::MatchReports(file->expectation, (*w)->console().Reports()).ok());
}

INSTANTIATE_TEST_SUITE_P(Corpus, Replay, ::testing::ValuesIn(CorpusNames(".vexsnap")),
                         [](const ::testing::TestParamInfo<std::string>& info) { return info.param; });

}  // namespace
}  // namespace vexstate
