#include "server/incoming_outcomes.h"

#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "gtest/gtest.h"

namespace vexstate::vexd {
namespace {

std::string TempDir() {
  std::string dir = std::string(getenv("TEST_TMPDIR")) + "/outcomes-XXXXXX";
  EXPECT_NE(mkdtemp(dir.data()), nullptr);
  return dir + "/migrations";  // not there yet: Record makes it
}

TEST(IncomingOutcomes, RecordedOutcomeIsFoundAgainByAnotherInstance) {
  const std::string dir = TempDir();
  v1::FinishResponse failed;
  failed.set_phase(v1::MIGRATION_FAILED);
  ASSERT_TRUE(IncomingOutcomes(dir).Record("6dfbf0f3d63c56a1", failed).ok());
  std::optional<v1::FinishResponse> found = IncomingOutcomes(dir).Find("6dfbf0f3d63c56a1");
  ASSERT_TRUE(found.has_value());
  EXPECT_EQ(found->phase(), v1::MIGRATION_FAILED);
  struct stat st {};
  ASSERT_EQ(stat(dir.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700);
}

TEST(IncomingOutcomes, UnknownIdIsNotFound) {
  EXPECT_FALSE(IncomingOutcomes(TempDir()).Find("0123456789abcdef").has_value());
}

TEST(IncomingOutcomes, CorruptFileIsUnknownNotAnAnswer) {
  const std::string dir = TempDir();
  ASSERT_TRUE(IncomingOutcomes(dir).Record("abc", v1::FinishResponse()).ok());
  std::ofstream(dir + "/abc.outcome", std::ios::trunc) << "\xff\xff\xff";
  EXPECT_FALSE(IncomingOutcomes(dir).Find("abc").has_value());
}

TEST(IncomingOutcomes, IdsThatCannotNameAFileAreRefused) {
  const IncomingOutcomes outcomes(TempDir());
  for (const std::string& id : {std::string(""), std::string("../x"), std::string("a/b"), std::string(65, 'a')}) {
    EXPECT_EQ(IncomingOutcomes::ValidateId(id).code(), absl::StatusCode::kInvalidArgument) << id;
    EXPECT_EQ(outcomes.Record(id, v1::FinishResponse()).code(), absl::StatusCode::kInvalidArgument) << id;
    EXPECT_FALSE(outcomes.Find(id).has_value()) << id;
  }
  EXPECT_TRUE(IncomingOutcomes::ValidateId("6dfbf0f3d63c56a1").ok());
  EXPECT_TRUE(IncomingOutcomes::ValidateId(std::string(64, 'Z')).ok());
}

}  // namespace
}  // namespace vexstate::vexd
