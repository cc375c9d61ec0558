// Loading a Multiboot v1 ELF (the x86 witness guest; QEMU boots the same file with -kernel)
// and putting vCPUs into the machine state the Multiboot spec promises its entry point.
#ifndef VEXSTATE_VMM_ARCH_X86_64_MULTIBOOT_H_
#define VEXSTATE_VMM_ARCH_X86_64_MULTIBOOT_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vmm/guest_memory.h"
#include "vmm/kvm/vcpu_fd.h"

namespace vexstate::x86 {

// Multiboot spec 3.2 / 3.3.
inline constexpr uint32_t kMultibootHeaderMagic = 0x1BADB002;
inline constexpr uint32_t kMultibootBootloaderMagic = 0x2BADB002;
// Where vexstate puts the Multiboot information structure (below the control block).
inline constexpr uint64_t kMultibootInfoGpa = 0x9000;

// Copies the ELF's PT_LOAD segments to their physical addresses (zero-filling .bss) and
// writes the Multiboot information structure. Returns the entry point. INVALID_ARGUMENT
// for a file that is not an ELF with a Multiboot header, or whose segments leave RAM.
absl::StatusOr<uint64_t> LoadMultibootElf(absl::Span<const uint8_t> image, GuestMemory& memory);

// Sets `vcpu` to the Multiboot entry state: 32-bit protected mode, flat 4 GiB segments,
// paging off, EAX = the bootloader magic, EBX = the info structure, EIP = `entry`.
// Every vCPU enters here (vexstate starts APs directly, no INIT/SIPI): the guest tells
// them apart by initial APIC ID.
absl::Status SetMultibootEntryState(kvm::VcpuFd& vcpu, uint64_t entry);

}  // namespace vexstate::x86

#endif  // VEXSTATE_VMM_ARCH_X86_64_MULTIBOOT_H_
