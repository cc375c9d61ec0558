// The x86_64 witness guest (guests/x86_64/witness.S), built from source by Bazel and embedded
// here as the bytes of its Multiboot v1 ELF32 image (guests/x86_64/witness.elf).
//
// Load it as a Multiboot kernel: copy the PT_LOAD segments to their physical addresses
// (VEX_IMAGE_OFFSET = 1 MiB up, .bss zero-filled) and start every vCPU at the ELF entry in
// 32-bit protected mode, paging off, IF clear, with CPUID.01H:EBX[31:24] (initial APIC ID)
// = vCPU index < 8. The report lines and the control block are in guests/common/witness_abi.h.
//
// Thread-safety: immutable data.
#ifndef VEXSTATE_GUESTS_X86_64_WITNESS_IMAGE_H_
#define VEXSTATE_GUESTS_X86_64_WITNESS_IMAGE_H_

#include <cstddef>

namespace vexstate {

extern const unsigned char kX86WitnessElf[];
extern const size_t kX86WitnessElfSize;

}  // namespace vexstate

#endif  // VEXSTATE_GUESTS_X86_64_WITNESS_IMAGE_H_
