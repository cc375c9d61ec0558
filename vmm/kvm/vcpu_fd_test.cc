// Real-KVM tests of VcpuFd's MSR batches (KVM_GET_MSRS / KVM_SET_MSRS): the
// stack-held buffer up to KVM's limit, and the refusals that must change
// nothing. Needs /dev/kvm: without it every test fails.
#include "vmm/kvm/vcpu_fd.h"

#include <cstdint>
#include <optional>
#include <vector>

#include "gtest/gtest.h"
#include "vmm/kvm/system.h"
#include "vmm/kvm/vm_fd.h"

namespace vexstate::kvm {
namespace {

#if defined(__x86_64__)

// IA32_SYSENTER_CS: present on every x86_64 vCPU, no CPUID needed, takes any
// 64-bit value KVM passes through.
constexpr uint32_t kSysenterCs = 0x174;

class VcpuFdMsrTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<KvmSystem> kvm = KvmSystem::Open();
    ASSERT_TRUE(kvm.ok()) << "vcpu_fd_test needs /dev/kvm: " << kvm.status();
    kvm_.emplace(std::move(*kvm));
    absl::StatusOr<VmFd> vm = kvm_->CreateVm();
    ASSERT_TRUE(vm.ok()) << vm.status();
    vm_.emplace(std::move(*vm));
    absl::StatusOr<VcpuFd> vcpu = vm_->CreateVcpu(0);
    ASSERT_TRUE(vcpu.ok()) << vcpu.status();
    vcpu_.emplace(std::move(*vcpu));
  }

  uint64_t Read(uint32_t msr) {
    std::vector<uint64_t> values;
    absl::Status s = vcpu_->GetMsrs({msr}, &values);
    EXPECT_TRUE(s.ok()) << s;
    return values.empty() ? 0 : values[0];
  }

  std::optional<KvmSystem> kvm_;
  std::optional<VmFd> vm_;
  std::optional<VcpuFd> vcpu_;
};

TEST_F(VcpuFdMsrTest, InlineBatchRoundTrips) {
  ASSERT_TRUE(vcpu_->SetMsrs({kSysenterCs}, {0x10}).ok());
  uint64_t value = 0;
  ASSERT_TRUE(vcpu_->GetMsrs({kSysenterCs}, absl::MakeSpan(&value, 1)).ok());
  EXPECT_EQ(value, 0x10u);
}

// A full batch (KVM's limit) goes through entry for entry: KVM writes the
// entries in order, so the last value written is the one kept.
TEST_F(VcpuFdMsrTest, FullBatchKeepsOrder) {
  const size_t n = VcpuFd::kMaxMsrsPerCall;
  std::vector<uint32_t> indices(n, kSysenterCs);
  std::vector<uint64_t> values(n);
  for (size_t i = 0; i < n; ++i) values[i] = 0x1000 + i;
  absl::Status set = vcpu_->SetMsrs(indices, values);
  ASSERT_TRUE(set.ok()) << set;
  std::vector<uint64_t> back;
  ASSERT_TRUE(vcpu_->GetMsrs(indices, &back).ok());
  ASSERT_EQ(back.size(), n);
  for (uint64_t v : back) EXPECT_EQ(v, 0x1000 + n - 1);
}

// One MSR past KVM's limit: refused before the ioctl, as KVM would (E2BIG),
// and nothing is written.
TEST_F(VcpuFdMsrTest, BatchOverKvmLimitIsRefusedAndChangesNothing) {
  ASSERT_TRUE(vcpu_->SetMsrs({kSysenterCs}, {0x10}).ok());
  const size_t n = VcpuFd::kMaxMsrsPerCall + 1;
  std::vector<uint32_t> indices(n, kSysenterCs);
  std::vector<uint64_t> values(n, 0x20);
  absl::Status s = vcpu_->SetMsrs(indices, values);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(Read(kSysenterCs), 0x10u);
  std::vector<uint64_t> back;
  s = vcpu_->GetMsrs(indices, &back);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_EQ(vcpu_->GetMsrsPrefix(indices, &back).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST_F(VcpuFdMsrTest, CountMismatchIsRefusedAndChangesNothing) {
  ASSERT_TRUE(vcpu_->SetMsrs({kSysenterCs}, {0x10}).ok());
  const uint32_t two[] = {kSysenterCs, kSysenterCs};
  const uint64_t one[] = {0x20};
  absl::Status s = vcpu_->SetMsrs(two, one);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_EQ(Read(kSysenterCs), 0x10u);
  uint64_t slot = 0;
  s = vcpu_->GetMsrs(two, absl::MakeSpan(&slot, 1));
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
}

// KVM stops at the first MSR it cannot read; the error names it.
TEST_F(VcpuFdMsrTest, UnreadableMsrIsNamed) {
  std::vector<uint64_t> values;
  absl::Status s = vcpu_->GetMsrs({kSysenterCs, 0xdeadbeef}, &values);
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("0xdeadbeef"), absl::string_view::npos) << s;
}

#endif  // defined(__x86_64__)

}  // namespace
}  // namespace vexstate::kvm
