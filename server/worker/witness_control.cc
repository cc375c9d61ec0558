#include "server/worker/witness_control.h"

#include <atomic>
#include <utility>

#include "absl/strings/str_format.h"
#include "guests/common/witness_abi.h"

namespace vexstate::worker {

namespace {

uint64_t FieldGpa(const GuestMemory& memory, uint64_t offset) {
  return memory.base_gpa() + VEX_CONTROL_OFFSET + offset;
}

absl::Status WriteField(GuestMemory& memory, uint64_t offset, uint64_t value) {
  absl::Status s = memory.WriteU64(FieldGpa(memory, offset), value);
  if (!s.ok()) {
    return absl::Status(s.code(), absl::StrFormat("witness control block field at +0x%x: %s", offset, s.message()));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status WriteSettings(GuestMemory& memory, const v1::WitnessSettings& settings) {
  const std::pair<uint64_t, uint64_t> fields[] = {
      {VEX_CTL_HOLD_MASK, settings.hold_mask()},
      {VEX_CTL_HEARTBEAT_MS, settings.heartbeat_ms()},
      {VEX_CTL_WORKSET_PAGES, settings.workset_pages()},
      {VEX_CTL_DIRTY_PAGES_PER_SEC, settings.dirty_pages_per_sec()},
      {VEX_CTL_TOUCH_PAGES, settings.touch_pages()},
  };
  for (const auto& [offset, value] : fields) {
    if (absl::Status s = WriteField(memory, offset, value); !s.ok()) return s;
  }
  return absl::OkStatus();
}

absl::Status WriteInitialControlBlock(GuestMemory& memory, const v1::WitnessSettings& settings, uint64_t tsc_khz) {
  if (absl::Status s = WriteSettings(memory, settings); !s.ok()) return s;
  if (absl::Status s = WriteField(memory, VEX_CTL_TSC_KHZ, tsc_khz); !s.ok()) return s;
  // Magic last: the guest uses the other fields only once it sees it (witness_abi.h).
  std::atomic_thread_fence(std::memory_order_release);
  return WriteField(memory, VEX_CTL_MAGIC, VEX_CTL_MAGIC_VALUE);
}

absl::StatusOr<uint64_t> WitnessCommandNumber(v1::GuestCommand command, v1::Arch arch) {
  bool arm64_only = false;
  uint64_t number = VEX_CMD_NONE;
  switch (command) {
    case v1::GUEST_COMMAND_MEMCHECK:
      number = VEX_CMD_MEMCHECK;
      break;
    case v1::GUEST_COMMAND_UNMASK_SERROR:
      number = VEX_CMD_UNMASK_SERROR;
      arm64_only = true;
      break;
    case v1::GUEST_COMMAND_ESB_READ_DISR:
      number = VEX_CMD_ESB_READ_DISR;
      arm64_only = true;
      break;
    case v1::GUEST_COMMAND_READ_DISR:
      number = VEX_CMD_READ_DISR;
      arm64_only = true;
      break;
    case v1::GUEST_COMMAND_APPLY_SETTINGS:
      return absl::InvalidArgumentError("GUEST_COMMAND_APPLY_SETTINGS writes settings; it is not a guest command");
    default:
      return absl::InvalidArgumentError(absl::StrFormat("guest command %d is not one the witness knows (%s)", command,
                                                        v1::GuestCommand_Name(command)));
  }
  if (arm64_only && arch != v1::ARCH_ARM64) {
    return absl::InvalidArgumentError(absl::StrFormat("guest command %s exists only on arm64 guests; this VM is %s",
                                                      v1::GuestCommand_Name(command), v1::Arch_Name(arch)));
  }
  return number;
}

absl::StatusOr<uint64_t> IssueCommand(GuestMemory& memory, uint64_t command, uint64_t arg) {
  absl::StatusOr<uint64_t> seq = memory.ReadU64(FieldGpa(memory, VEX_CTL_COMMAND_SEQ));
  if (!seq.ok()) return seq.status();
  if (absl::Status s = WriteField(memory, VEX_CTL_ARG, arg); !s.ok()) return s;
  if (absl::Status s = WriteField(memory, VEX_CTL_COMMAND, command); !s.ok()) return s;
  // COMMAND_SEQ last, after a release fence: the guest runs the command once it sees a new
  // sequence, and must then read this COMMAND and ARG (witness_abi.h, CONTROL).
  std::atomic_thread_fence(std::memory_order_release);
  const uint64_t next = *seq + 1;
  if (absl::Status s = WriteField(memory, VEX_CTL_COMMAND_SEQ, next); !s.ok()) return s;
  return next;
}

}  // namespace vexstate::worker
