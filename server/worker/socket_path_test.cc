#include "server/worker/socket_path.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vexstate::worker {
namespace {

using ::testing::HasSubstr;

// A scratch directory under /tmp, not TEST_TMPDIR: Bazel's sandbox paths are longer than a
// socket path may be.
class SocketPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = "/tmp/vexd-worker-sockXXXXXX";
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr) << strerror(errno);
    dir_ = tmpl;
  }
  void TearDown() override {
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }
  std::string TempDir() const { return dir_; }

 private:
  std::string dir_;
};

// A bound socket at `path`; listening if `listen_on` (else a leftover nobody serves).
int BindSocket(const std::string& path, bool listen_on) {
  int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  EXPECT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)), 0) << strerror(errno);
  if (listen_on) {
    EXPECT_EQ(listen(fd, 1), 0);
  }
  return fd;
}

TEST_F(SocketPathTest, FreePathIsFine) { EXPECT_TRUE(PrepareSocketPath(TempDir() + "/w.sock").ok()); }

TEST_F(SocketPathTest, StaleSocketIsRemoved) {
  const std::string path = TempDir() + "/w.sock";
  close(BindSocket(path, false));  // the file stays, nobody listens
  ASSERT_TRUE(PrepareSocketPath(path).ok());
  struct stat info;
  EXPECT_NE(lstat(path.c_str(), &info), 0) << "the stale socket is gone";
}

TEST_F(SocketPathTest, LiveSocketIsRefused) {
  const std::string path = TempDir() + "/w.sock";
  int fd = BindSocket(path, true);
  absl::Status s = PrepareSocketPath(path);
  close(fd);
  EXPECT_EQ(s.code(), absl::StatusCode::kAlreadyExists) << s;
  EXPECT_THAT(s.message(), HasSubstr(path));
}

TEST_F(SocketPathTest, RegularFileIsNeverRemoved) {
  const std::string path = TempDir() + "/not-a-socket";
  std::ofstream(path) << "data";
  absl::Status s = PrepareSocketPath(path);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  struct stat info;
  EXPECT_EQ(lstat(path.c_str(), &info), 0) << "still there";
}

TEST_F(SocketPathTest, BadPaths) {
  EXPECT_EQ(PrepareSocketPath("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PrepareSocketPath("/tmp/" + std::string(200, 'x')).code(), absl::StatusCode::kInvalidArgument);
  absl::Status s = PrepareSocketPath(TempDir() + "/missing-dir/w.sock");
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_THAT(s.message(), HasSubstr("missing-dir"));
}

TEST_F(SocketPathTest, ExitRemovesTheSocketUnlessASuccessorServesIt) {
  const std::string path = TempDir() + "/w.sock";
  int successor = BindSocket(path, true);
  RemoveSocketUnlessServed(path);
  struct stat info;
  EXPECT_EQ(lstat(path.c_str(), &info), 0) << "a listening successor keeps its socket";
  close(successor);  // now nobody listens: the file is a leftover
  RemoveSocketUnlessServed(path);
  EXPECT_NE(lstat(path.c_str(), &info), 0);
  RemoveSocketUnlessServed(path);  // nothing there: nothing to do
}

}  // namespace
}  // namespace vexstate::worker
