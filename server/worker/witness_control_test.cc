#include "server/worker/witness_control.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "guests/common/witness_abi.h"

namespace vexstate::worker {
namespace {

using ::testing::HasSubstr;

constexpr uint64_t kRamBase = 0x40000000;  // arm64's RAM base: offsets must be relative to it

GuestMemory Memory(uint64_t size = 1 << 20) {
  absl::StatusOr<GuestMemory> memory = GuestMemory::Create(kRamBase, size, "witness-control-test");
  EXPECT_TRUE(memory.ok()) << memory.status();
  return std::move(*memory);
}

uint64_t Field(const GuestMemory& memory, uint64_t offset) {
  absl::StatusOr<uint64_t> value = memory.ReadU64(kRamBase + VEX_CONTROL_OFFSET + offset);
  EXPECT_TRUE(value.ok()) << value.status();
  return value.value_or(0);
}

TEST(WitnessControl, InitialBlockHasEveryFieldAndTheMagic) {
  GuestMemory memory = Memory();
  v1::WitnessSettings settings;
  settings.set_heartbeat_ms(10);
  settings.set_workset_pages(64);
  settings.set_dirty_pages_per_sec(1000);
  settings.set_hold_mask(1 << 18);
  settings.set_touch_pages(4096);
  ASSERT_TRUE(WriteInitialControlBlock(memory, settings, 2500000).ok());
  EXPECT_EQ(Field(memory, VEX_CTL_MAGIC), static_cast<uint64_t>(VEX_CTL_MAGIC_VALUE));
  EXPECT_EQ(Field(memory, VEX_CTL_HOLD_MASK), 1u << 18);
  EXPECT_EQ(Field(memory, VEX_CTL_HEARTBEAT_MS), 10u);
  EXPECT_EQ(Field(memory, VEX_CTL_TSC_KHZ), 2500000u);
  EXPECT_EQ(Field(memory, VEX_CTL_WORKSET_PAGES), 64u);
  EXPECT_EQ(Field(memory, VEX_CTL_DIRTY_PAGES_PER_SEC), 1000u);
  EXPECT_EQ(Field(memory, VEX_CTL_TOUCH_PAGES), 4096u);
  EXPECT_EQ(Field(memory, VEX_CTL_COMMAND_SEQ), 0u);
}

TEST(WitnessControl, SettingsLeaveMagicAndCommandsAlone) {
  GuestMemory memory = Memory();
  ASSERT_TRUE(WriteInitialControlBlock(memory, {}, 1).ok());
  ASSERT_TRUE(IssueCommand(memory, VEX_CMD_MEMCHECK, 0).ok());
  v1::WitnessSettings settings;
  settings.set_hold_mask(0x4);
  ASSERT_TRUE(WriteSettings(memory, settings).ok());
  EXPECT_EQ(Field(memory, VEX_CTL_HOLD_MASK), 0x4u);
  EXPECT_EQ(Field(memory, VEX_CTL_MAGIC), static_cast<uint64_t>(VEX_CTL_MAGIC_VALUE));
  EXPECT_EQ(Field(memory, VEX_CTL_COMMAND_SEQ), 1u);
  EXPECT_EQ(Field(memory, VEX_CTL_TSC_KHZ), 1u);
}

TEST(WitnessControl, CommandsBumpTheSequence) {
  GuestMemory memory = Memory();
  absl::StatusOr<uint64_t> first = IssueCommand(memory, VEX_CMD_MEMCHECK, 7);
  ASSERT_TRUE(first.ok());
  EXPECT_EQ(*first, 1u);
  EXPECT_EQ(Field(memory, VEX_CTL_COMMAND), static_cast<uint64_t>(VEX_CMD_MEMCHECK));
  EXPECT_EQ(Field(memory, VEX_CTL_ARG), 7u);
  absl::StatusOr<uint64_t> second = IssueCommand(memory, VEX_CMD_READ_DISR, 0);
  ASSERT_TRUE(second.ok());
  EXPECT_EQ(*second, 2u);
  EXPECT_EQ(Field(memory, VEX_CTL_COMMAND_SEQ), 2u);
  EXPECT_EQ(Field(memory, VEX_CTL_COMMAND), static_cast<uint64_t>(VEX_CMD_READ_DISR));
}

TEST(WitnessControl, CommandNumbers) {
  EXPECT_EQ(WitnessCommandNumber(v1::GUEST_COMMAND_MEMCHECK, v1::ARCH_X86_64).value_or(0),
            static_cast<uint64_t>(VEX_CMD_MEMCHECK));
  EXPECT_EQ(WitnessCommandNumber(v1::GUEST_COMMAND_UNMASK_SERROR, v1::ARCH_ARM64).value_or(0),
            static_cast<uint64_t>(VEX_CMD_UNMASK_SERROR));
  EXPECT_EQ(WitnessCommandNumber(v1::GUEST_COMMAND_ESB_READ_DISR, v1::ARCH_ARM64).value_or(0),
            static_cast<uint64_t>(VEX_CMD_ESB_READ_DISR));
  EXPECT_EQ(WitnessCommandNumber(v1::GUEST_COMMAND_READ_DISR, v1::ARCH_ARM64).value_or(0),
            static_cast<uint64_t>(VEX_CMD_READ_DISR));
  absl::StatusOr<uint64_t> wrong_arch = WitnessCommandNumber(v1::GUEST_COMMAND_UNMASK_SERROR, v1::ARCH_X86_64);
  EXPECT_EQ(wrong_arch.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(wrong_arch.status().message(), HasSubstr("only on arm64"));
  EXPECT_EQ(WitnessCommandNumber(v1::GUEST_COMMAND_UNSPECIFIED, v1::ARCH_X86_64).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WitnessCommandNumber(static_cast<v1::GuestCommand>(99), v1::ARCH_X86_64).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(WitnessCommandNumber(v1::GUEST_COMMAND_APPLY_SETTINGS, v1::ARCH_X86_64).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(WitnessControl, MemoryWithoutAControlBlockIsAnError) {
  GuestMemory tiny = Memory(GuestMemory::kPageSize);  // ends before VEX_CONTROL_OFFSET
  absl::Status s = WriteInitialControlBlock(tiny, {}, 1);
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(s.message(), HasSubstr("witness control block field"));
  EXPECT_FALSE(IssueCommand(tiny, VEX_CMD_MEMCHECK, 0).ok());
}

}  // namespace
}  // namespace vexstate::worker
