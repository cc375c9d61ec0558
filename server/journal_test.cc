#include "server/journal.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/state_dir.h"

namespace vexstate::vexd {
namespace {

using ::testing::HasSubstr;

std::string FreshDir(const std::string& name) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string dir = std::string(tmp != nullptr ? tmp : "/tmp") + "/" + name;
  EXPECT_TRUE(MakeDirs(dir, 0700).ok());
  return dir;
}

v1::VmRecord Record(const std::string& name, v1::VmRunState state) {
  v1::VmRecord record;
  record.set_name(name);
  record.mutable_config()->set_name(name);
  record.set_worker_pid(1234);
  record.set_worker_start_time(5678);
  record.set_last_state(state);
  return record;
}

TEST(Journal, WritesReplacesLoadsAndRemoves) {
  Journal journal(FreshDir("journal-basic"));
  ASSERT_TRUE(journal.Write(Record("b", v1::VM_RUNNING)).ok());
  ASSERT_TRUE(journal.Write(Record("a", v1::VM_CREATED)).ok());
  ASSERT_TRUE(journal.Write(Record("a", v1::VM_PAUSED)).ok());
  absl::StatusOr<Journal::Loaded> loaded = journal.LoadAll();
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  ASSERT_EQ(loaded->records.size(), 2u);
  EXPECT_EQ(loaded->records[0].name(), "a");
  EXPECT_EQ(loaded->records[0].last_state(), v1::VM_PAUSED);
  EXPECT_EQ(loaded->records[1].worker_start_time(), 5678u);
  EXPECT_TRUE(loaded->problems.empty());
  struct stat st;
  ASSERT_EQ(stat(journal.PathOf("a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  ASSERT_TRUE(journal.Remove("a").ok());
  ASSERT_TRUE(journal.Remove("a").ok());  // already gone: fine
  EXPECT_EQ(journal.LoadAll()->records.size(), 1u);
}

TEST(Journal, SkipsBadRecordsAndDropsStaleTemporaries) {
  const std::string dir = FreshDir("journal-bad");
  Journal journal(dir);
  ASSERT_TRUE(journal.Write(Record("good", v1::VM_RUNNING)).ok());
  std::ofstream(dir + "/junk.record") << "\xff\xff\xff not a proto";
  std::string other;
  ASSERT_TRUE(Record("someone-else", v1::VM_RUNNING).SerializeToString(&other));
  std::ofstream(dir + "/renamed.record") << other;
  std::ofstream(dir + "/good.record.tmp") << "half-written";
  absl::StatusOr<Journal::Loaded> loaded = journal.LoadAll();
  ASSERT_TRUE(loaded.ok());
  ASSERT_EQ(loaded->records.size(), 1u);
  EXPECT_EQ(loaded->records[0].name(), "good");
  ASSERT_EQ(loaded->problems.size(), 2u);
  EXPECT_THAT(loaded->problems[0], HasSubstr("junk.record"));
  EXPECT_THAT(loaded->problems[1], HasSubstr("'someone-else'"));
  EXPECT_NE(access((dir + "/good.record.tmp").c_str(), F_OK), 0);
}

TEST(StateDir, OneOwnerAtATime) {
  const char* tmp = std::getenv("TEST_TMPDIR");
  // Short, as a state dir must be: under /tmp unless TEST_TMPDIR is short.
  std::string root = std::string(tmp != nullptr && std::string(tmp).size() < 20 ? tmp : "/tmp") + "/sd-XXXXXX";
  ASSERT_NE(mkdtemp(root.data()), nullptr);
  {
    absl::StatusOr<std::unique_ptr<StateDir>> first = StateDir::Open(root);
    ASSERT_TRUE(first.ok()) << first.status();
    EXPECT_EQ((*first)->VmFile("vm-1", "sock"), root + "/vms/vm-1.sock");
    absl::StatusOr<std::unique_ptr<StateDir>> second = StateDir::Open(root);
    EXPECT_EQ(second.status().code(), absl::StatusCode::kFailedPrecondition);
    EXPECT_THAT(second.status().message(), HasSubstr(absl::StrCat("pid ", getpid())));
  }
  EXPECT_TRUE(StateDir::Open(root).ok());  // released with the first
  EXPECT_EQ(StateDir::Open("relative/dir").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(StateDir::Open("/tmp/" + std::string(40, 'x')).status().code(), absl::StatusCode::kInvalidArgument);
  system(("rm -rf " + root).c_str());
}

}  // namespace
}  // namespace vexstate::vexd
