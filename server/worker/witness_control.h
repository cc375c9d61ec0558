// The host side of the witness guest's control block (guests/common/witness_abi.h): initial
// settings at boot, new settings later, and commands.
//
// The guest polls the block with plain loads while it runs, so the order of the host's stores
// is the protocol: at boot every field before MAGIC (the guest ignores the block until MAGIC
// is set); for a command ARG and COMMAND before COMMAND_SEQ, with a release fence between
// them (the arm64 guest loads COMMAND_SEQ with acquire semantics, then COMMAND).
//
// Thread-safety: none of its own; callers serialise commands (two commands issued before the
// guest polls would leave only the second).
#ifndef VEXSTATE_SERVER_WORKER_WITNESS_CONTROL_H_
#define VEXSTATE_SERVER_WORKER_WITNESS_CONTROL_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vexstate/v1/control.pb.h"
#include "vexstate/v1/host.pb.h"
#include "vmm/guest_memory.h"

namespace vexstate::worker {

// Writes hold mask, heartbeat, TSC rate (for the guest's pacing), workload, then MAGIC last.
absl::Status WriteInitialControlBlock(GuestMemory& memory, const v1::WitnessSettings& settings, uint64_t tsc_khz);

// Writes the four settings fields (GUEST_COMMAND_APPLY_SETTINGS). The guest reads them at its
// next poll; the x86_64 guest latches WORKSET_PAGES at first use (witness_abi.h).
absl::Status WriteSettings(GuestMemory& memory, const v1::WitnessSettings& settings);

// The VEX_CMD_* number for `command` on a guest of `arch`. INVALID_ARGUMENT for
// UNSPECIFIED/unknown values, APPLY_SETTINGS (not a guest command) and arm64-only commands on
// other arches.
absl::StatusOr<uint64_t> WitnessCommandNumber(v1::GuestCommand command, v1::Arch arch);

// Writes ARG, COMMAND, then COMMAND_SEQ = previous + 1. Returns the new COMMAND_SEQ.
absl::StatusOr<uint64_t> IssueCommand(GuestMemory& memory, uint64_t command, uint64_t arg);

}  // namespace vexstate::worker

#endif  // VEXSTATE_SERVER_WORKER_WITNESS_CONTROL_H_
