// Checks the arm64 cross toolchain (bazel/toolchains/arm64) end to end: the binary is aarch64,
// fully static, and links protobuf, Abseil and GoogleTest from the system-library hubs.
// Runs under qemu-aarch64-static (`bazel test --config=arm64`) and as /init of a nested boot.
#include <sys/auxv.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "google/protobuf/duration.pb.h"
#include "google/protobuf/util/time_util.h"
#include "gtest/gtest.h"

namespace vexstate::nested {
namespace {

#if !defined(__aarch64__)
#error "cross_toolchain_test must be built with --config=arm64 (or through nested_kvm_test)"
#endif

TEST(CrossToolchainTest, IsStaticallyLinked) {
  // A static executable has no program interpreter: the kernel maps no ld.so, so AT_BASE
  // (the interpreter's load address) is 0.
  EXPECT_EQ(getauxval(AT_BASE), 0u);
}

TEST(CrossToolchainTest, ProtobufWorks) {
  google::protobuf::Duration d = google::protobuf::util::TimeUtil::MillisecondsToDuration(1500);
  std::string wire;
  ASSERT_TRUE(d.SerializeToString(&wire));
  google::protobuf::Duration back;
  ASSERT_TRUE(back.ParseFromString(wire));
  EXPECT_EQ(back.seconds(), 1);
  EXPECT_EQ(back.nanos(), 500000000);
}

TEST(CrossToolchainTest, AbseilWorks) {
  absl::StatusOr<int> v = 0x2f;
  ASSERT_TRUE(v.ok());
  EXPECT_EQ(absl::StrFormat("ec=%#x", *v), "ec=0x2f");
}

}  // namespace
}  // namespace vexstate::nested
