#include "vmm/arch/arm64/state_codec.h"

#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/arch/arm64/reg_ids.h"

namespace vexstate::arm64 {
namespace {

using ::testing::HasSubstr;

std::string U64Bytes(uint64_t v) {
  return std::string(reinterpret_cast<const char*>(&v), sizeof(v));
}

const std::vector<uint64_t> kListed = {XRegId(0), kRegPc,   kRegPstate,
                                       VRegId(0), kRegFpsr, kRegDisrEl1,
                                       kRegEsrEl1};

v1::Arm64VcpuState Valid() {
  v1::Arm64VcpuState state;
  EncodeRegisters({{XRegId(0), U64Bytes(7)},
                   {kRegPc, U64Bytes(0x40100000)},
                   {VRegId(0), std::string(16, '\x5a')},
                   {kRegFpsr, std::string(4, '\0')}},
                  &state);
  return state;
}

TEST(StateCodecTest, SavedIdsLeaveDisrToTheExceptionState) {
  EXPECT_EQ(SavedRegisterIds(kListed),
            (std::vector<uint64_t>{XRegId(0), kRegPc, kRegPstate, VRegId(0),
                                   kRegFpsr, kRegEsrEl1}));
}

TEST(StateCodecTest, RoundTripKeepsOrderAndBytes) {
  absl::StatusOr<std::vector<RegValue>> values =
      DecodeRegisters(Valid(), kListed);
  ASSERT_TRUE(values.ok()) << values.status();
  ASSERT_EQ(values->size(), 4u);
  EXPECT_EQ((*values)[1].id, kRegPc);
  EXPECT_EQ((*values)[2].bytes, std::string(16, '\x5a'));
  absl::StatusOr<uint64_t> pc = FindU64(*values, kRegPc);
  ASSERT_TRUE(pc.ok());
  EXPECT_EQ(*pc, 0x40100000u);
  EXPECT_EQ(FindU64(*values, kRegPstate).status().code(),
            absl::StatusCode::kNotFound);
  EXPECT_EQ(FindU64(*values, kRegFpsr).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(StateCodecTest, WrongSizeIsRefused) {
  v1::Arm64VcpuState state = Valid();
  state.mutable_registers(2)->set_value(
      std::string(8, '\0'));  // v0 is 16 bytes
  absl::StatusOr<std::vector<RegValue>> values =
      DecodeRegisters(state, kListed);
  EXPECT_EQ(values.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(values.status().message(), HasSubstr("v0"));
  EXPECT_THAT(values.status().message(), HasSubstr("8 bytes, the id says 16"));
}

TEST(StateCodecTest, DuplicateIsRefused) {
  v1::Arm64VcpuState state = Valid();
  *state.add_registers() = state.registers(1);
  EXPECT_EQ(DecodeRegisters(state, kListed).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(StateCodecTest, ForeignIdIsRefused) {
  v1::Arm64VcpuState state = Valid();
  v1::Arm64Register* reg = state.add_registers();
  reg->set_id(0x2030000000000000u);  // an x86 id
  reg->set_value(U64Bytes(0));
  EXPECT_EQ(DecodeRegisters(state, kListed).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(StateCodecTest, DisrInTheRegisterListIsRefused) {
  v1::Arm64VcpuState state = Valid();
  v1::Arm64Register* reg = state.add_registers();
  reg->set_id(kRegDisrEl1);
  reg->set_value(U64Bytes(0x80000000));
  absl::StatusOr<std::vector<RegValue>> values =
      DecodeRegisters(state, kListed);
  EXPECT_EQ(values.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(values.status().message(), HasSubstr("exception state"));
}

TEST(StateCodecTest, RegisterTheDestinationLacksIsAPrecondition) {
  v1::Arm64VcpuState state = Valid();
  v1::Arm64Register* reg = state.add_registers();
  reg->set_id(SysRegId(3, 0, 9, 14, 1));
  reg->set_value(U64Bytes(0));
  absl::StatusOr<std::vector<RegValue>> values =
      DecodeRegisters(state, kListed);
  EXPECT_EQ(values.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(values.status().message(), HasSubstr("S3_0_C9_C14_1"));
}

TEST(StateCodecTest, MissingRegistersAreAllowed) {
  v1::Arm64VcpuState state;
  EXPECT_TRUE(DecodeRegisters(state, kListed).ok());
}

TEST(StateCodecTest, MpStates) {
  EXPECT_TRUE(ValidateMpState(0).ok());
  EXPECT_TRUE(ValidateMpState(5).ok());
  EXPECT_TRUE(ValidateMpState(10).ok());
  EXPECT_EQ(ValidateMpState(3).code(),
            absl::StatusCode::kInvalidArgument);  // x86 HALTED
}

}  // namespace
}  // namespace vexstate::arm64
