/* Linker script of the x86_64 witness (preprocessed by cpp for the shared layout).
 *
 * The image is linked as ELF64 at VEX_IMAGE_OFFSET and converted to ELF32 afterwards
 * (`objcopy -O elf32-i386`): QEMU's Multiboot loader refuses ELF64, and the program headers,
 * which are all a loader uses, carry over unchanged. Two PT_LOAD segments: code (RX) and
 * data (RW, with .bss as its zero-filled tail).
 */
#include "guests/common/witness_abi.h"

OUTPUT_FORMAT("elf64-x86-64")
OUTPUT_ARCH(i386:x86-64)
ENTRY(_start)

PHDRS
{
  text PT_LOAD FLAGS(5);
  data PT_LOAD FLAGS(6);
}

SECTIONS
{
  . = VEX_X86_RAM_BASE + VEX_IMAGE_OFFSET;
  _image_start = .;

  .text : {
    KEEP(*(.multiboot))   /* first: the header must lie in the first 8 KiB of the file */
    *(.text.boot32)
    *(.text .text.*)
  } :text

  .rodata : { *(.rodata .rodata.*) } :text

  . = ALIGN(0x1000);
  .data : { *(.data .data.*) } :data

  .bss : { *(.bss .bss.*) *(COMMON) } :data

  _image_end = .;

  /DISCARD/ : { *(.note .note.*) *(.comment) *(.eh_frame) }
}

ASSERT(_image_end <= VEX_X86_RAM_BASE + VEX_WORKSET_OFFSET,
       "the witness image overlaps the workload working set")
ASSERT(_image_start >= VEX_X86_RAM_BASE + VEX_CONTROL_OFFSET + 0x1000,
       "the witness image overlaps the control block")
