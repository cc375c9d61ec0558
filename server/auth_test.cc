#include "server/auth.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vexstate::vexd {
namespace {

using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  const char* dir = std::getenv("TEST_TMPDIR");
  return std::string(dir != nullptr ? dir : "/tmp") + "/" + name;
}

TEST(TokenStore, ParsesRolesNamesAndComments) {
  absl::StatusOr<TokenStore> store =
      TokenStore::Parse("# a comment\n\n  alpha operator Alice Smith\nbeta\tviewer\n   # indented comment\n", "tokens");
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_EQ(store->principals().size(), 2u);
  const Principal* alice = store->Find("alpha");
  ASSERT_NE(alice, nullptr);
  EXPECT_EQ(alice->role, Role::kOperator);
  EXPECT_EQ(alice->name, "Alice Smith");
  const Principal* beta = store->Find("beta");
  ASSERT_NE(beta, nullptr);
  EXPECT_EQ(beta->role, Role::kViewer);
  EXPECT_EQ(beta->name, "line 4");
  EXPECT_EQ(store->Find("alph"), nullptr);
  EXPECT_EQ(store->Find("alphaa"), nullptr);
  EXPECT_EQ(store->Find(""), nullptr);
}

TEST(TokenStore, RefusesMalformedFilesNamingTheLine) {
  absl::StatusOr<TokenStore> no_role = TokenStore::Parse("x operator\nlonely\n", "f");
  EXPECT_EQ(no_role.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_role.status().message(), HasSubstr("f line 2"));
  absl::StatusOr<TokenStore> bad_role = TokenStore::Parse("x admin\n", "f");
  EXPECT_THAT(bad_role.status().message(), HasSubstr("'admin'"));
  absl::StatusOr<TokenStore> twice = TokenStore::Parse("x viewer\nx operator\n", "f");
  EXPECT_THAT(twice.status().message(), HasSubstr("twice"));
  EXPECT_EQ(TokenStore::Parse("# nothing\n", "f").status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(TokenStore, LoadRefusesFilesOthersCanRead) {
  const std::string path = TempPath("open-tokens");
  std::ofstream(path) << "t operator\n";
  chmod(path.c_str(), 0644);
  absl::StatusOr<TokenStore> store = TokenStore::Load(path);
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(store.status().message(), HasSubstr("chmod 600"));
  chmod(path.c_str(), 0600);
  EXPECT_TRUE(TokenStore::Load(path).ok());
  EXPECT_EQ(TokenStore::Load(TempPath("missing-tokens")).status().code(), absl::StatusCode::kNotFound);
}

TEST(TokenStore, CreateDefaultMakesOneOperatorThenOneViewer) {
  const std::string path = TempPath("default-tokens");
  unlink(path.c_str());
  ASSERT_TRUE(TokenStore::CreateDefault(path).ok());
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  absl::StatusOr<TokenStore> store = TokenStore::Load(path);
  ASSERT_TRUE(store.ok()) << store.status();
  ASSERT_EQ(store->principals().size(), 2u);
  EXPECT_EQ(store->principals()[0].role, Role::kOperator);
  EXPECT_EQ(store->principals()[1].role, Role::kViewer);
  EXPECT_EQ(store->principals()[0].token.size(), 64u);
  EXPECT_NE(store->principals()[0].token, store->principals()[1].token);
  EXPECT_EQ(TokenStore::CreateDefault(path).code(), absl::StatusCode::kAlreadyExists);
}

}  // namespace
}  // namespace vexstate::vexd
