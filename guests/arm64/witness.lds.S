/* Linker script of the arm64 witness (preprocessed by cpp for the shared layout).
 *
 * Linked at its load address, VEX_ARM64_RAM_BASE + VEX_IMAGE_OFFSET: the VMM copies
 * witness.bin (objcopy -O binary: from the first byte of .text to the last of .data) there and
 * sets every vCPU's PC to it; QEMU's `-kernel witness.elf` loads the same segments. .bss is
 * not in the .bin and is never assumed to be zero (the code writes what it reads).
 */
#include "guests/common/witness_abi.h"

OUTPUT_FORMAT("elf64-littleaarch64")
OUTPUT_ARCH(aarch64)
ENTRY(_start)

PHDRS
{
  text PT_LOAD FLAGS(5);
  data PT_LOAD FLAGS(6);
}

SECTIONS
{
  . = VEX_ARM64_RAM_BASE + VEX_IMAGE_OFFSET;
  _image_start = .;

  .text : {
    KEEP(*(.text.boot))   /* first: the entry point is the image's first byte */
    *(.text .text.*)
  } :text

  .rodata : { *(.rodata .rodata.*) } :text

  . = ALIGN(0x1000);
  .data : { *(.data .data.*) } :data

  .bss : { *(.bss .bss.*) *(COMMON) } :data

  _image_end = .;

  /DISCARD/ : { *(.note .note.*) *(.comment) *(.eh_frame) }
}

ASSERT(_start == _image_start, "_start must be the first byte of the image")
ASSERT(_image_end <= VEX_ARM64_RAM_BASE + VEX_WORKSET_OFFSET,
       "the witness image overlaps the workload working set")
ASSERT(_image_start >= VEX_ARM64_RAM_BASE + VEX_CONTROL_OFFSET + 0x1000,
       "the witness image overlaps the control block")
