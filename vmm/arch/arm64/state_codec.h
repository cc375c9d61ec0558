// Pure conversions between an arm64 vCPU's registers as KVM lists them
// (KVM_GET_REG_LIST + KVM_GET_ONE_REG) and v1::Arm64VcpuState, with the
// validation a restore needs before its first KVM_SET_ONE_REG. No ioctls
// (vcpu_state.h issues them); builds and is tested on every host.
//
// Register values are stored little-endian, exactly as many bytes as the id's
// size field says (api.rst "KVM_SET_ONE_REG": the value is read from/written to
// `addr` with that size; arm64 KVM is little-endian for every register,
// including the 128-bit V registers).
//
// DISR_EL1 is exception state (exception_state.h): it is left out of the
// register list, and a register list that carries it is refused, so there is
// one value for it in a snapshot.
#ifndef VEXSTATE_VMM_ARCH_ARM64_STATE_CODEC_H_
#define VEXSTATE_VMM_ARCH_ARM64_STATE_CODEC_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vexstate/v1/vcpu_state.pb.h"

namespace vexstate::arm64 {

// One register value: `bytes` has RegSizeBytes(id) bytes.
struct RegValue {
  uint64_t id = 0;
  std::string bytes;
};

// The ids of `listed` (KVM_GET_REG_LIST) that a vCPU state carries: all but
// DISR_EL1, in list order.
std::vector<uint64_t> SavedRegisterIds(absl::Span<const uint64_t> listed);

// Values -> proto registers, in the given order.
void EncodeRegisters(absl::Span<const RegValue> values,
                     v1::Arm64VcpuState* out);

// Validates `in` for a destination vCPU whose KVM_GET_REG_LIST is
// `destination_ids`, and returns the values to write, in the snapshot's order.
//  INVALID_ARGUMENT     an id that is not an arm64 register id; a value
//                       whose length is not the id's size; an id given twice;
//                       DISR_EL1 (it belongs in the exception state).
//  FAILED_PRECONDITION  an id the destination does not list (named: this
//                       host's KVM does not know that register, so the state
//                       cannot be restored faithfully here).
// Registers the destination lists and `in` lacks are left at the destination's
// reset values (a newer kernel may list registers an older one did not save).
absl::StatusOr<std::vector<RegValue>> DecodeRegisters(
    const v1::Arm64VcpuState& in, absl::Span<const uint64_t> destination_ids);

// KVM_SET_MP_STATE on arm64 takes RUNNABLE (0), STOPPED (5) and SUSPENDED (10);
// anything else is INVALID_ARGUMENT.
absl::Status ValidateMpState(uint32_t mp_state);

// A 64-bit register's value from `values` by id, or NOT_FOUND naming it;
// INVALID_ARGUMENT if its size is not 8 bytes.
absl::StatusOr<uint64_t> FindU64(absl::Span<const RegValue> values,
                                 uint64_t id);

}  // namespace vexstate::arm64

#endif  // VEXSTATE_VMM_ARCH_ARM64_STATE_CODEC_H_
