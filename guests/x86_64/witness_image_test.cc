// Checks the embedded x86_64 witness image against what its loaders require: QEMU's
// Multiboot loader (ELF32, i386, header in the first 8 KiB) and the guest-physical layout of
// guests/common/witness_abi.h (image between the control block and the working set).
#include "guests/x86_64/witness_image.h"

#include <elf.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "gtest/gtest.h"
#include "guests/common/witness_abi.h"

namespace vexstate {
namespace {

constexpr uint32_t kMultibootHeaderMagic = 0x1BADB002;
constexpr size_t kMultibootSearchBytes = 8192;  // Multiboot spec 3.1.1
constexpr uint64_t kImageBase = VEX_X86_RAM_BASE + VEX_IMAGE_OFFSET;
constexpr uint64_t kWorksetBase = VEX_X86_RAM_BASE + VEX_WORKSET_OFFSET;
constexpr uint64_t kControlEnd = VEX_X86_RAM_BASE + VEX_CONTROL_OFFSET + VEX_CTL_SIZE;

template <typename T>
T ReadAt(size_t offset) {
  T value;
  EXPECT_LE(offset + sizeof(T), kX86WitnessElfSize);
  std::memcpy(&value, kX86WitnessElf + offset, sizeof(T));
  return value;
}

Elf32_Ehdr Header() { return ReadAt<Elf32_Ehdr>(0); }

std::vector<Elf32_Phdr> LoadSegments() {
  Elf32_Ehdr ehdr = Header();
  std::vector<Elf32_Phdr> loads;
  for (int i = 0; i < ehdr.e_phnum; ++i) {
    Elf32_Phdr phdr = ReadAt<Elf32_Phdr>(ehdr.e_phoff + i * sizeof(Elf32_Phdr));
    if (phdr.p_type == PT_LOAD) loads.push_back(phdr);
  }
  return loads;
}

TEST(X86WitnessImage, IsAnElf32I386Executable) {
  ASSERT_GE(kX86WitnessElfSize, sizeof(Elf32_Ehdr));
  ASSERT_EQ(std::memcmp(kX86WitnessElf, ELFMAG, SELFMAG), 0);
  Elf32_Ehdr ehdr = Header();
  EXPECT_EQ(ehdr.e_ident[EI_CLASS], ELFCLASS32) << "QEMU's Multiboot loader refuses ELF64";
  EXPECT_EQ(ehdr.e_machine, EM_386);
  EXPECT_EQ(ehdr.e_type, ET_EXEC);
  EXPECT_EQ(ehdr.e_phentsize, sizeof(Elf32_Phdr));
}

TEST(X86WitnessImage, HasAValidMultibootHeaderInTheFirst8KiB) {
  bool found = false;
  size_t limit = std::min(kX86WitnessElfSize, kMultibootSearchBytes);
  for (size_t off = 0; off + 12 <= limit && !found; off += 4) {
    uint32_t magic = ReadAt<uint32_t>(off);
    uint32_t flags = ReadAt<uint32_t>(off + 4);
    uint32_t checksum = ReadAt<uint32_t>(off + 8);
    found = magic == kMultibootHeaderMagic && static_cast<uint32_t>(magic + flags + checksum) == 0;
  }
  EXPECT_TRUE(found);
}

TEST(X86WitnessImage, LoadsBetweenTheControlBlockAndTheWorkingSet) {
  std::vector<Elf32_Phdr> loads = LoadSegments();
  ASSERT_FALSE(loads.empty());
  for (const Elf32_Phdr& phdr : loads) {
    EXPECT_GE(phdr.p_paddr, kImageBase);
    EXPECT_GE(phdr.p_paddr, kControlEnd);
    EXPECT_LE(uint64_t{phdr.p_paddr} + phdr.p_memsz, kWorksetBase) << "overlaps the working set";
    EXPECT_LE(phdr.p_filesz, phdr.p_memsz);
    EXPECT_LE(uint64_t{phdr.p_offset} + phdr.p_filesz, kX86WitnessElfSize);
  }
}

TEST(X86WitnessImage, EntryIsInAnExecutableSegment) {
  uint32_t entry = Header().e_entry;
  bool inside = false;
  for (const Elf32_Phdr& phdr : LoadSegments()) {
    bool executable = (phdr.p_flags & PF_X) != 0;
    if (executable && entry >= phdr.p_paddr && entry < phdr.p_paddr + phdr.p_filesz) inside = true;
  }
  EXPECT_TRUE(inside) << "entry 0x" << std::hex << entry;
}

}  // namespace
}  // namespace vexstate
