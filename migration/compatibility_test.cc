// The Prepare-time check, pure (no KVM): each refusal names its capability, each degradation
// is recorded, and nothing is recorded for a refusal.
#include "migration/compatibility.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vexstate::migration {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

v1::HostCapabilities X86Host() {
  v1::HostCapabilities host;
  host.set_arch(v1::ARCH_X86_64);
  host.set_max_vcpus(288);
  host.set_vcpu_events(true);
  host.set_exception_payload(true);
  host.set_mce_banks(32);
  return host;
}

v1::HostCapabilities Arm64Host() {
  v1::HostCapabilities host;
  host.set_arch(v1::ARCH_ARM64);
  host.set_max_vcpus(8);
  host.set_vcpu_events(true);
  host.set_arm_inject_serror_esr(true);
  return host;
}

v1::VmConfig Config(v1::Arch arch, uint32_t vcpus = 2) {
  v1::VmConfig config;
  config.set_name("vm");
  config.set_arch(arch);
  config.set_vcpu_count(vcpus);
  config.set_memory_bytes(32ull << 20);
  return config;
}

v1::VcpuExceptionState X86State(uint64_t mcg_cap) {
  v1::VcpuExceptionState state;
  state.mutable_x86_64()->mutable_machine_check()->set_mcg_cap(mcg_cap);
  return state;
}

// Expects FAILED_PRECONDITION mentioning `capability`, with and without degradation allowed
// when `degradable` is false; returns nothing recorded.
void ExpectRefused(const v1::MigrationRequirements& requirements, const v1::HostCapabilities& destination,
                   bool allow_degrade, const std::string& capability) {
  std::vector<std::string> degradations;
  absl::Status s = CheckCompatibility(requirements, destination, allow_degrade, &degradations);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr(capability));
  EXPECT_THAT(degradations, IsEmpty());
}

TEST(Compatibility, SameKindOfHostIsCompatible) {
  v1::MigrationRequirements req = RequirementsOf(Config(v1::ARCH_X86_64), X86Host(), nullptr);
  std::vector<std::string> degradations;
  EXPECT_TRUE(CheckCompatibility(req, X86Host(), false, &degradations).ok());
  EXPECT_THAT(degradations, IsEmpty());
  EXPECT_TRUE(CheckCompatibility(req, X86Host(), false, nullptr).ok());
}

TEST(Compatibility, OtherArchIsRefused) {
  v1::MigrationRequirements req = RequirementsOf(Config(v1::ARCH_X86_64), X86Host(), nullptr);
  ExpectRefused(req, Arm64Host(), true, "arch: the VM is ARCH_X86_64, the destination host is ARCH_ARM64");
}

TEST(Compatibility, NoVcpuEventsIsRefused) {
  v1::MigrationRequirements req = RequirementsOf(Config(v1::ARCH_X86_64), X86Host(), nullptr);
  v1::HostCapabilities destination = X86Host();
  destination.set_vcpu_events(false);
  ExpectRefused(req, destination, true, "KVM_CAP_VCPU_EVENTS");
}

TEST(Compatibility, MoreVcpusThanTheDestinationAllowsIsRefused) {
  v1::MigrationRequirements req = RequirementsOf(Config(v1::ARCH_X86_64, 4), X86Host(), nullptr);
  v1::HostCapabilities destination = X86Host();
  destination.set_max_vcpus(2);
  ExpectRefused(req, destination, true, "vCPUs: the VM has 4, the destination's KVM allows at most 2");
}

TEST(Compatibility, MemoryOutsideTheRulesIsRefused) {
  v1::VmConfig config = Config(v1::ARCH_X86_64);
  config.set_memory_bytes(3ull << 20);
  ExpectRefused(RequirementsOf(config, X86Host(), nullptr), X86Host(), true, "memory_bytes");
}

TEST(Compatibility, SerrorWithEsrNeedsTheEsrCapabilityOrDegradation) {
  std::vector<v1::VcpuExceptionState> states(1);
  states[0].mutable_arm64()->set_serror_pending(true);
  states[0].mutable_arm64()->set_serror_has_esr(true);
  v1::MigrationRequirements req = RequirementsOf(Config(v1::ARCH_ARM64, 1), Arm64Host(), &states);
  EXPECT_TRUE(req.serror_with_esr_pending());
  v1::HostCapabilities no_ras = Arm64Host();
  no_ras.set_arm_inject_serror_esr(false);
  EXPECT_TRUE(CheckCompatibility(req, Arm64Host(), false, nullptr).ok());
  ExpectRefused(req, no_ras, false, "KVM_CAP_ARM_INJECT_SERROR_ESR");
  std::vector<std::string> degradations;
  ASSERT_TRUE(CheckCompatibility(req, no_ras, true, &degradations).ok());
  EXPECT_THAT(degradations, ElementsAre(HasSubstr("without its ESR")));
}

TEST(Compatibility, SerrorWithoutEsrOrNotPendingNeedsNoEsrCapability) {
  v1::HostCapabilities no_ras = Arm64Host();
  no_ras.set_arm_inject_serror_esr(false);
  std::vector<v1::VcpuExceptionState> states(1);
  states[0].mutable_arm64()->set_serror_pending(true);  // captured on a host without the cap
  v1::MigrationRequirements req = RequirementsOf(Config(v1::ARCH_ARM64, 1), no_ras, &states);
  EXPECT_FALSE(req.serror_with_esr_pending());
  EXPECT_TRUE(CheckCompatibility(req, no_ras, false, nullptr).ok());
  states[0].mutable_arm64()->set_serror_pending(false);
  states[0].mutable_arm64()->set_serror_has_esr(true);
  req = RequirementsOf(Config(v1::ARCH_ARM64, 1), Arm64Host(), &states);
  EXPECT_FALSE(req.serror_with_esr_pending());
}

TEST(Compatibility, FewerMceBanksNeedDegradation) {
  std::vector<v1::VcpuExceptionState> states = {X86State(0x120), X86State(0x120)};  // 32 banks | CTL_P
  v1::MigrationRequirements req = RequirementsOf(Config(v1::ARCH_X86_64), X86Host(), &states);
  EXPECT_EQ(req.mce_banks_in_use(), 32u);
  v1::HostCapabilities qemu_like = X86Host();
  qemu_like.set_mce_banks(10);
  ExpectRefused(req, qemu_like, false, "KVM_CAP_MCE: the guest's MCG_CAP has 32 MCE banks, the destination offers 10");
  std::vector<std::string> degradations = {"earlier entry"};
  ASSERT_TRUE(CheckCompatibility(req, qemu_like, true, &degradations).ok());
  EXPECT_THAT(degradations, ElementsAre("earlier entry", HasSubstr("MCE banks 10..31 dropped")));
  // No MCE at all on the destination.
  v1::HostCapabilities no_mce = X86Host();
  no_mce.set_mce_banks(0);
  ExpectRefused(req, no_mce, false, "KVM_CAP_MCE");
}

TEST(Compatibility, MceBanksOfARunningVmComeFromItsConfig) {
  v1::VmConfig config = Config(v1::ARCH_X86_64);
  EXPECT_EQ(RequirementsOf(config, X86Host(), nullptr).mce_banks_in_use(), 32u) << "0 = all the host offers";
  config.set_mce_banks(10);
  v1::MigrationRequirements req = RequirementsOf(config, X86Host(), nullptr);
  EXPECT_EQ(req.mce_banks_in_use(), 10u);
  v1::HostCapabilities qemu_like = X86Host();
  qemu_like.set_mce_banks(10);
  EXPECT_TRUE(CheckCompatibility(req, qemu_like, false, nullptr).ok());
  EXPECT_EQ(RequirementsOf(Config(v1::ARCH_ARM64), Arm64Host(), nullptr).mce_banks_in_use(), 0u);
}

TEST(Compatibility, PendingPayloadNeedsThePayloadCapabilityEvenWithDegradation) {
  std::vector<v1::VcpuExceptionState> states = {X86State(0x120)};
  v1::X86Exception* pf = states[0].mutable_x86_64()->mutable_exception();
  pf->set_pending(true);
  pf->set_vector(14);
  pf->set_has_payload(true);
  pf->set_payload(0xdead000);
  v1::MigrationRequirements req = RequirementsOf(Config(v1::ARCH_X86_64, 1), X86Host(), &states);
  EXPECT_TRUE(req.exception_payload_needed());
  v1::HostCapabilities old_kernel = X86Host();
  old_kernel.set_exception_payload(false);
  EXPECT_TRUE(CheckCompatibility(req, X86Host(), false, nullptr).ok());
  ExpectRefused(req, old_kernel, true, "KVM_CAP_EXCEPTION_PAYLOAD");
  pf->set_pending(false);  // nothing pending: the payload field is stale
  EXPECT_FALSE(RequirementsOf(Config(v1::ARCH_X86_64, 1), X86Host(), &states).exception_payload_needed());
}

TEST(Compatibility, RequirementsCarryConfigAndSourceHost) {
  v1::MigrationRequirements req = RequirementsOf(Config(v1::ARCH_X86_64, 3), X86Host(), nullptr);
  EXPECT_EQ(req.config().vcpu_count(), 3u);
  EXPECT_EQ(req.source_host().mce_banks(), 32u);
  EXPECT_FALSE(req.serror_with_esr_pending());
  EXPECT_FALSE(req.exception_payload_needed());
}

}  // namespace
}  // namespace vexstate::migration
