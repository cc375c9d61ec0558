// Booting a flat arm64 binary: where it goes in guest memory and the state
// every vCPU starts in.
//
// The boot protocol (what the witness guest, guests/arm64/witness.lds.S, is
// linked for):
//  - the image is a flat binary (objcopy -O binary), copied to RAM base +
//    kImageOffset (0x40100000 with RAM at 0x40000000), the address it is
//    linked at;
//  - every vCPU starts at its first byte, in AArch64 EL1h with DAIF all
//    masked (PSTATE 0x3c5) and the MMU off. That is KVM's state after
//    KVM_ARM_VCPU_INIT (api.rst "KVM_ARM_VCPU_INIT": "AArch64: EL1h, D, A, I
//    and F bits set", general purpose registers 0, system registers as after
//    a warm reset); PC and PSTATE are written explicitly all the same, x0-x3
//    are 0 (no device tree). No vCPU is held in PSCI CPU_OFF: they all run
//    from the start.
#ifndef VEXSTATE_VMM_ARCH_ARM64_BOOT_H_
#define VEXSTATE_VMM_ARCH_ARM64_BOOT_H_

#include <cstdint>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/guest_memory.h"
#include "vmm/kvm/vcpu_fd.h"

namespace vexstate::arm64 {

// Offset of a flat image from the start of RAM (VEX_IMAGE_OFFSET in
// guests/common/witness_abi.h).
inline constexpr uint64_t kImageOffset = 0x100000;

// Copies `image` to memory.base_gpa() + kImageOffset; returns that address (the
// entry point). INVALID_ARGUMENT for an empty image or one that does not fit in
// RAM (sizes named).
absl::StatusOr<uint64_t> LoadFlatImage(absl::Span<const uint8_t> image,
                                       GuestMemory& memory);

// PC = entry, PSTATE = EL1h with D, A, I, F set, x0-x3 = 0. `vcpu` must be
// initialised.
absl::Status SetEntryState(kvm::VcpuFd& vcpu, uint64_t entry);

}  // namespace vexstate::arm64

#endif  // VEXSTATE_VMM_ARCH_ARM64_BOOT_H_
