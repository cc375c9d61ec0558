// Proves the nested-KVM harness: inside the arm64 Linux booted by tools/nested/run_nested.sh,
// /dev/kvm is real arm64 KVM. Raw ioctls on purpose: this checks the environment, not the VMM
// (vmm/arch/arm64 owns the real wrappers).
#include <errno.h>
#include <fcntl.h>
#include "vmm/kvm/linux_kvm.h"
#include <sys/ioctl.h>
#include <unistd.h>

#include <cstring>
#include <string>

#include "gtest/gtest.h"
#include "tests/arm64/init_main.h"

namespace vexstate::nested {
namespace {

class NestedKvmSmokeTest : public testing::Test {
 protected:
  void SetUp() override {
    // Under qemu-aarch64-static (bazel test --config=arm64) /dev/kvm, if any, is the x86
    // host's: arm64 ioctls on it would be meaningless.
    if (!RunningAsInit()) GTEST_SKIP() << "needs the nested arm64 boot (tools/nested/)";
    kvm_ = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    ASSERT_GE(kvm_, 0) << "open /dev/kvm: " << std::strerror(errno)
                       << " (is CONFIG_KVM on and the CPU given virtualization=on?)";
  }
  void TearDown() override {
    if (kvm_ >= 0) close(kvm_);
  }

  int kvm_ = -1;
};

TEST_F(NestedKvmSmokeTest, ApiVersionIsStable) {
  // api.rst 4.1: "The API version is 12 ... applications should refuse to run" otherwise.
  EXPECT_EQ(ioctl(kvm_, KVM_GET_API_VERSION, 0), KVM_API_VERSION);
}

TEST_F(NestedKvmSmokeTest, VcpuEventsAvailable) {
  // arm64 has KVM_GET/SET_VCPU_EVENTS since Linux 4.19 (api.rst 4.31, 4.32).
  EXPECT_EQ(ioctl(kvm_, KVM_CHECK_EXTENSION, KVM_CAP_VCPU_EVENTS), 1);
}

TEST_F(NestedKvmSmokeTest, SerrorEsrInjectionFollowsCpuModel) {
  // KVM_CAP_ARM_INJECT_SERROR_ESR needs FEAT_RAS on the host CPU (api.rst 8.19): QEMU's
  // `max` has it, cortex-a72 (Armv8.0) does not.
  const std::string cpu = NestedCpuModel();
  const int cap = ioctl(kvm_, KVM_CHECK_EXTENSION, KVM_CAP_ARM_INJECT_SERROR_ESR);
  if (cpu == "max") {
    EXPECT_EQ(cap, 1) << "-cpu max has FEAT_RAS";
  } else if (cpu == "cortex-a72") {
    EXPECT_EQ(cap, 0) << "cortex-a72 has no FEAT_RAS";
  } else {
    GTEST_SKIP() << "no expectation for -cpu '" << cpu << "' (cap=" << cap << ")";
  }
}

TEST_F(NestedKvmSmokeTest, CreateVmAndQueryPreferredTarget) {
  const int vm = ioctl(kvm_, KVM_CREATE_VM, 0);  // type 0: default 40-bit IPA space
  ASSERT_GE(vm, 0) << "KVM_CREATE_VM: " << std::strerror(errno);
  kvm_vcpu_init init;
  std::memset(&init, 0xff, sizeof(init));
  ASSERT_EQ(ioctl(vm, KVM_ARM_PREFERRED_TARGET, &init), 0)
      << "KVM_ARM_PREFERRED_TARGET: " << std::strerror(errno);
  // Any CPU that is not one of the few named targets is reported as the generic Armv8 one;
  // the kernel clears the feature bitmap it returns.
  EXPECT_EQ(init.target, static_cast<__u32>(KVM_ARM_TARGET_GENERIC_V8));
  for (__u32 word : init.features) EXPECT_EQ(word, 0u);
  close(vm);
}

}  // namespace
}  // namespace vexstate::nested
