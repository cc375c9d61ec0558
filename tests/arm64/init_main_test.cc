// Tests of init_main's host channel: files exported through the console (checked end to end by
// the harness, which rebuilds them and verifies size and cksum) and files packed with --file.
#include "tests/arm64/init_main.h"

#include <fstream>
#include <sstream>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace vexstate::nested {
namespace {

TEST(ExportFileTest, RejectsNamesThatAreNotPlainFileNames) {
  for (const char* name : {"", ".", "..", "a/b", "../x", "sp ace", "new\nline"}) {
    EXPECT_EQ(ExportFile(name, "x").code(), absl::StatusCode::kInvalidArgument) << name;
  }
}

TEST(ExportFileTest, ExportsEveryByteValue) {
  // 3 * 256 + 1 bytes: every value, and a length that is not a multiple of 3 (base64 padding).
  std::string data;
  for (int i = 0; i < 3 * 256 + 1; ++i) data.push_back(static_cast<char>(i & 0xff));
  const absl::Status status = ExportFile("every_byte.bin", data);
  EXPECT_TRUE(status.ok()) << status;
}

TEST(ExportFileTest, ExportsAnEmptyFile) {
  const absl::Status status = ExportFile("empty.bin", "");
  EXPECT_TRUE(status.ok()) << status;
}

TEST(ImportTest, ExtraFileIsUnderImportDir) {
  if (!RunningAsInit()) GTEST_SKIP() << "files are packed only into the nested boot";
  std::ifstream in(absl::StrCat(kImportDir, "/import.txt"));
  ASSERT_TRUE(in) << "no " << kImportDir << "/import.txt (nested_kvm_test extra_files)";
  std::stringstream text;
  text << in.rdbuf();
  EXPECT_EQ(text.str(), "imported by the nested boot\n");
}

TEST(InitTest, KernelFilesystemsAreMounted) {
  if (!RunningAsInit()) GTEST_SKIP() << "only /init mounts them";
  EXPECT_TRUE(std::ifstream("/proc/self/status").good()) << "/proc";
  EXPECT_TRUE(std::ifstream("/sys/kernel/uevent_seqnum").good()) << "/sys";
  EXPECT_FALSE(NestedCpuModel().empty()) << "VEXSTATE_NESTED_CPU from the kernel command line";
}

}  // namespace
}  // namespace vexstate::nested
