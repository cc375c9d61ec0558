#include "vmm/arch/x86_64/multiboot.h"

#include <elf.h>

#include <cstring>

#include "absl/strings/str_format.h"

namespace vexstate::x86 {

namespace {

// Multiboot spec 3.1.1: the header lies within the first 8192 bytes, 4-byte aligned.
constexpr size_t kMultibootSearchBytes = 8192;
constexpr uint32_t kInfoFlagMemory = 1u << 0;

template <typename Ehdr, typename Phdr>
absl::StatusOr<uint64_t> LoadSegments(absl::Span<const uint8_t> image, GuestMemory& memory) {
  if (image.size() < sizeof(Ehdr)) return absl::InvalidArgumentError("ELF image is shorter than its header");
  Ehdr ehdr;
  std::memcpy(&ehdr, image.data(), sizeof(ehdr));
  if (ehdr.e_phentsize != sizeof(Phdr) ||
      ehdr.e_phoff + static_cast<uint64_t>(ehdr.e_phnum) * sizeof(Phdr) > image.size()) {
    return absl::InvalidArgumentError("ELF program headers lie outside the image");
  }
  int loaded = 0;
  for (int i = 0; i < ehdr.e_phnum; ++i) {
    Phdr phdr;
    std::memcpy(&phdr, image.data() + ehdr.e_phoff + i * sizeof(Phdr), sizeof(phdr));
    if (phdr.p_type != PT_LOAD) continue;
    if (phdr.p_offset + phdr.p_filesz > image.size() || phdr.p_filesz > phdr.p_memsz) {
      return absl::InvalidArgumentError(absl::StrFormat("ELF segment %d lies outside the image", i));
    }
    absl::StatusOr<uint8_t*> dst = memory.HostPointer(phdr.p_paddr, phdr.p_memsz);
    if (!dst.ok()) {
      return absl::InvalidArgumentError(absl::StrFormat("ELF segment %d does not fit in guest RAM: %s", i,
                                                        dst.status().message()));
    }
    std::memcpy(*dst, image.data() + phdr.p_offset, phdr.p_filesz);
    std::memset(*dst + phdr.p_filesz, 0, phdr.p_memsz - phdr.p_filesz);
    ++loaded;
  }
  if (loaded == 0) return absl::InvalidArgumentError("ELF image has no PT_LOAD segment");
  return static_cast<uint64_t>(ehdr.e_entry);
}

bool HasMultibootHeader(absl::Span<const uint8_t> image) {
  size_t limit = std::min(image.size(), kMultibootSearchBytes);
  for (size_t off = 0; off + 12 <= limit; off += 4) {
    uint32_t magic, flags, checksum;
    std::memcpy(&magic, image.data() + off, 4);
    std::memcpy(&flags, image.data() + off + 4, 4);
    std::memcpy(&checksum, image.data() + off + 8, 4);
    if (magic == kMultibootHeaderMagic && static_cast<uint32_t>(magic + flags + checksum) == 0) return true;
  }
  return false;
}

}  // namespace

absl::StatusOr<uint64_t> LoadMultibootElf(absl::Span<const uint8_t> image, GuestMemory& memory) {
  if (image.size() < EI_NIDENT || std::memcmp(image.data(), ELFMAG, SELFMAG) != 0) {
    return absl::InvalidArgumentError("guest image is not an ELF file");
  }
  if (!HasMultibootHeader(image)) {
    return absl::InvalidArgumentError("guest image has no Multiboot v1 header in its first 8 KiB");
  }
  absl::StatusOr<uint64_t> entry = image[EI_CLASS] == ELFCLASS32
                                       ? LoadSegments<Elf32_Ehdr, Elf32_Phdr>(image, memory)
                                       : LoadSegments<Elf64_Ehdr, Elf64_Phdr>(image, memory);
  if (!entry.ok()) return entry.status();
  // Multiboot spec 3.3: mem_lower/mem_upper in KiB (below 640 KiB / above 1 MiB).
  uint32_t info[2 + 1] = {kInfoFlagMemory, 640, static_cast<uint32_t>((memory.size() - (1u << 20)) >> 10)};
  absl::Status s = memory.Write(kMultibootInfoGpa, absl::MakeConstSpan(reinterpret_cast<uint8_t*>(info), sizeof(info)));
  if (!s.ok()) return s;
  return entry;
}

absl::Status SetMultibootEntryState(kvm::VcpuFd& vcpu, uint64_t entry) {
  kvm_sregs sregs;
  if (absl::Status s = vcpu.GetSregs(&sregs); !s.ok()) return s;
  kvm_segment code = {};
  code.base = 0;
  code.limit = 0xffffffff;
  code.selector = 0x08;
  code.type = 0xb;  // execute/read, accessed
  code.present = 1;
  code.s = 1;
  code.db = 1;  // 32-bit
  code.g = 1;
  kvm_segment data = code;
  data.selector = 0x10;
  data.type = 0x3;  // read/write, accessed
  sregs.cs = code;
  sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
  // VM entry requires a usable TR (a busy TSS) even though the guest loads its own later.
  sregs.tr = {};
  sregs.tr.limit = 0xffff;
  sregs.tr.type = 0xb;
  sregs.tr.present = 1;
  sregs.ldt = {};
  sregs.ldt.type = 0x2;
  sregs.ldt.present = 1;
  sregs.ldt.limit = 0xffff;
  sregs.cr0 = 0x11;  // PE | ET: protected mode, paging off (Multiboot 3.2)
  sregs.cr4 = 0;
  sregs.efer = 0;
  if (absl::Status s = vcpu.SetSregs(sregs); !s.ok()) return s;
  kvm_regs regs = {};
  regs.rip = entry;
  regs.rflags = 0x2;  // bit 1 is reserved-one; IF clear
  regs.rax = kMultibootBootloaderMagic;
  regs.rbx = kMultibootInfoGpa;
  if (absl::Status s = vcpu.SetRegs(regs); !s.ok()) return s;
  // Application processors start in wait-for-SIPI under the in-kernel irqchip; make them
  // runnable so they enter at the same entry point as the BSP.
  kvm_mp_state runnable = {KVM_MP_STATE_RUNNABLE};
  return vcpu.SetMpState(runnable);
}

}  // namespace vexstate::x86
