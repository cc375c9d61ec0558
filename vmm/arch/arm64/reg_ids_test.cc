// ONE_REG id encoding, checked against values KVM itself reported
// (KVM_GET_REG_LIST on Linux 6.1 under qemu-system-aarch64 -cpu max,
// /work/shared/notes/arm64-nested-kvm.md) and against api.rst's layout. Runs on
// every host.
#include "vmm/arch/arm64/reg_ids.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vexstate::arm64 {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

TEST(RegIdsTest, DisrEl1IsWhatKvmLists) {
  EXPECT_EQ(kRegDisrEl1, 0x603000000013c609u);
  EXPECT_EQ(SysRegId(3, 0, 12, 1, 1), 0x603000000013c609u);
}

TEST(RegIdsTest, CoreRegistersUseWordOffsetsIntoKvmRegs) {
  // api.rst: "arm64 core/FP-SIMD registers have the following id bit patterns
  // ... 0x6030 0000 0010 <index into the kvm_regs struct:16>" with the index in
  // 32-bit words.
  EXPECT_EQ(XRegId(0), 0x6030000000100000u);
  EXPECT_EQ(XRegId(30), 0x603000000010003cu);
  EXPECT_EQ(kRegSp, 0x603000000010003eu);
  EXPECT_EQ(kRegPc, 0x6030000000100040u);
  EXPECT_EQ(kRegPstate, 0x6030000000100042u);
  EXPECT_EQ(kRegSpEl1, 0x6030000000100044u);
  EXPECT_EQ(kRegElrEl1, 0x6030000000100046u);
  EXPECT_EQ(kRegSpsrEl1, 0x6030000000100048u);
  EXPECT_EQ(VRegId(0), 0x6040000000100054u);  // 128-bit, offset 336 = word 84
  EXPECT_EQ(VRegId(31), 0x60400000001000d0u);
  EXPECT_EQ(kRegFpsr, 0x60200000001000d4u);
  EXPECT_EQ(kRegFpcr, 0x60200000001000d5u);
}

TEST(RegIdsTest, SizeComesFromTheId) {
  EXPECT_EQ(RegSizeBytes(kRegPc), 8u);
  EXPECT_EQ(RegSizeBytes(kRegFpsr), 4u);
  EXPECT_EQ(RegSizeBytes(VRegId(7)), 16u);
  EXPECT_EQ(RegSizeBytes(kRegArchArm64 | kRegSizeU2048 | kRegGroupSve), 256u);
}

TEST(RegIdsTest, SysregFieldsLandWhereTheUapiPutsThem) {
  // op0 15:14, op1 13:11, CRn 10:7, CRm 6:3, op2 2:0.
  EXPECT_EQ(SysRegId(3, 0, 0, 0, 0), 0x603000000013c000u);   // MIDR_EL1
  EXPECT_EQ(SysRegId(3, 0, 0, 0, 5), 0x603000000013c005u);   // MPIDR_EL1
  EXPECT_EQ(SysRegId(3, 0, 5, 2, 0), 0x603000000013c290u);   // ESR_EL1
  EXPECT_EQ(SysRegId(3, 0, 12, 0, 0), 0x603000000013c600u);  // VBAR_EL1
  EXPECT_EQ(SysRegId(3, 7, 15, 15, 7), 0x603000000013ffffu);
  // KVM's swapped timer ids.
  EXPECT_EQ(kRegTimerCnt, 0x603000000013df1au);
  EXPECT_EQ(kRegTimerCval, 0x603000000013df02u);
  EXPECT_EQ(kRegTimerCtl, 0x603000000013df19u);
}

TEST(RegIdsTest, RecognisesArm64Ids) {
  EXPECT_TRUE(IsArm64RegId(kRegPc));
  EXPECT_TRUE(IsArm64RegId(kRegDisrEl1));
  EXPECT_TRUE(IsArm64RegId(0x6030000000140000u));   // KVM_REG_ARM_PSCI_VERSION
  EXPECT_FALSE(IsArm64RegId(0x4030000000000000u));  // KVM_REG_ARM (32-bit arm)
  EXPECT_FALSE(IsArm64RegId(0x2030000000000000u));  // KVM_REG_X86
  EXPECT_FALSE(
      IsArm64RegId(0x6000000000100040u));  // U8: no arm64 register has it
  EXPECT_FALSE(
      IsArm64RegId(0x6090000000100040u));  // 512 bytes: beyond KVM's largest
  EXPECT_FALSE(IsArm64RegId(0));
}

TEST(RegIdsTest, NamesForPeople) {
  EXPECT_EQ(RegName(kRegDisrEl1), "DISR_EL1 (0x603000000013c609)");
  EXPECT_EQ(RegName(kRegPc), "pc (0x6030000000100040)");
  EXPECT_THAT(RegName(XRegId(5)), StartsWith("x5 ("));
  EXPECT_THAT(RegName(VRegId(31)), StartsWith("v31 ("));
  EXPECT_THAT(RegName(kRegFpcr), StartsWith("fpcr ("));
  EXPECT_THAT(RegName(kRegSpsrEl1), StartsWith("spsr[0] ("));
  EXPECT_THAT(RegName(SysRegId(3, 0, 2, 0, 0)), StartsWith("TTBR0_EL1 ("));
  EXPECT_THAT(RegName(SysRegId(3, 0, 9, 14, 1)), StartsWith("S3_0_C9_C14_1 ("));
  EXPECT_THAT(RegName(kRegTimerCnt), StartsWith("KVM_REG_ARM_TIMER_CNT ("));
  EXPECT_THAT(RegName(0x6030000000140001u), StartsWith("firmware[0x1] ("));
  EXPECT_THAT(RegName(0x6020000000110002u), StartsWith("CCSIDR[csselr=0x2] ("));
  EXPECT_THAT(RegName(0x2030000000000000u),
              HasSubstr("not an arm64 register id"));
}

}  // namespace
}  // namespace vexstate::arm64
