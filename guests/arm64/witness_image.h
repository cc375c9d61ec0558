// The arm64 witness guest (guests/arm64/witness.S) as a flat binary, built with the repository.
//
// Load it at guest-physical kWitnessLoadAddress and start every vCPU there (PC = that address,
// the KVM_ARM_VCPU_INIT reset state: EL1h, DAIF masked, MMU off). The guest's contract —
// console, control block, reports — is guests/common/witness_abi.h.
#ifndef VEXSTATE_GUESTS_ARM64_WITNESS_IMAGE_H_
#define VEXSTATE_GUESTS_ARM64_WITNESS_IMAGE_H_

#include <cstdint>

#include "absl/types/span.h"
#include "guests/common/witness_abi.h"

namespace vexstate::guests::arm64 {

inline constexpr uint64_t kWitnessLoadAddress = VEX_ARM64_RAM_BASE + VEX_IMAGE_OFFSET;

// The image bytes (static storage, valid for the whole program).
absl::Span<const uint8_t> WitnessImage();

}  // namespace vexstate::guests::arm64

#endif  // VEXSTATE_GUESTS_ARM64_WITNESS_IMAGE_H_
