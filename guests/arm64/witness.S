/* The arm64 witness guest: a flat EL1 program that reports every exception it takes on the
 * MMIO console and runs the control-block workload.
 *
 * Contract: guests/common/witness_abi.h (report lines, control block, workload pattern).
 *
 * Boot. The VMM loads witness.bin at VEX_ARM64_RAM_BASE + VEX_IMAGE_OFFSET and starts every
 * vCPU at its first byte (`_start`), in AArch64 EL1h with DAIF masked and the MMU off (KVM's
 * vCPU reset state; QEMU's `-kernel witness.elf` enters the same way on `-M virt` without
 * EL2/EL3). No PSCI: every vCPU runs from the start. Each vCPU learns its index from
 * MPIDR_EL1.Aff0 (KVM gives vCPU i Aff0 = i for i < 16), turns on its MMU with the static
 * identity map below, takes its own stack and per-CPU block (TPIDR_EL1), installs the vector
 * table, and reports BOOT and READY. vCPU 0 then runs the main loop (heartbeat, workload,
 * commands); the others only follow VEX_CMD_UNMASK_SERROR, the one command for every vCPU.
 *
 * Why the MMU is on. With it off, data accesses are Device-nGnRnE and non-cacheable
 * (Arm ARM, "The effects of disabling an address translation stage"), while the VMM
 * reads and writes guest RAM through a cacheable mapping: on hardware without FEAT_S2FWB the
 * two views are not coherent (KVM only cleans a page to PoC when it maps it at stage 2), so a
 * control-block write or a migrated page could be missed. With RAM mapped Normal Write-Back
 * Inner Shareable on both sides, they are coherent. The map is three fixed descriptors:
 *   [0, 1 GiB)            Device-nGnRnE, execute-never (console at 0x09000000)
 *   [1 GiB, 2 GiB)        Normal WB: guest RAM from VEX_ARM64_RAM_BASE (up to 1 GiB used)
 *   above                 unmapped
 *
 * Exceptions. All 16 vector slots save the full register file and ELR/SPSR on the current
 * stack, so the interrupted code, including an interrupted `emit`, resumes intact. SError
 * (VBAR+0x180/0x380/0x580/0x780) -> "VEX SERROR"; synchronous -> "VEX SYNC"; IRQ/FIQ cannot
 * happen (PSTATE.I/F stay set) and are reported as "VEX UNEXPECTED". SError stays masked
 * (PSTATE.A=1) except inside VEX_CMD_UNMASK_SERROR, so a pending virtual SError waits,
 * exactly the state vexstate has to capture and move.
 *
 * Output. Every line is formatted into a buffer on the stack, then written byte by byte by
 * `emit` (aligned byte stores to the console: a Device access the VMM sees as an MMIO exit).
 * An exception that interrupts `emit` first finishes the interrupted line, so lines of one
 * vCPU never interleave (see finish_interrupted_line).
 *
 * Registers. Formatting helpers (fmt_*, emit) are leaves that take the line cursor in x0,
 * return the advanced cursor in x0 and clobber only x1-x7. Other functions follow AAPCS64:
 * x19-x28 are preserved, x9-x15 scratch. No FP/SIMD instruction anywhere (CPACR_EL1.FPEN is
 * left trapping).
 */
#include "guests/common/witness_abi.h"

/* ---- Layout and limits ---------------------------------------------------------------- */
#define MAX_CPUS 16                        /* MPIDR_EL1.Aff0 as KVM assigns it: 0..15 */
#define PAGE_SHIFT 12
#define STACK_SHIFT 14                     /* 16 KiB stack per vCPU */
#define STACK_SIZE (1 << STACK_SHIFT)
#define CONTROL_GPA (VEX_ARM64_RAM_BASE + VEX_CONTROL_OFFSET)
#define WORKSET_GPA (VEX_ARM64_RAM_BASE + VEX_WORKSET_OFFSET)
#define RAM_MAPPED_END (VEX_ARM64_RAM_BASE + (1 << 30))
#define MAX_WORKSET_PAGES ((RAM_MAPPED_END - WORKSET_GPA) >> PAGE_SHIFT)

/* ---- Architectural constants (Arm ARM DDI 0487) ---------------------------------------- */
#define MPIDR_AFF0_MASK 0xff
#define ID_AA64PFR0_RAS_SHIFT 28           /* ID_AA64PFR0_EL1.RAS, 0 = no FEAT_RAS */
#define DAIF_A 4                           /* the A bit in `msr daifset/daifclr, #imm` */
#define DAIF_ALL 0xf
#define SPSR_I_F (0x3 << 6)                /* PSTATE.I and .F in SPSR_EL1 */
#define ESR_EC_SHIFT 26
#define ESR_EC_MASK 0x3f
#define ESR_FSC_MASK 0x3f                  /* ISS[5:0]: IFSC/DFSC of an abort */
#define EC_SVC64 0x15                      /* ELR is already the next instruction for these */
#define EC_HVC64 0x16
#define EC_IABT_LOW 0x20
#define EC_IABT_CUR 0x21
#define EC_DABT_LOW 0x24
#define EC_DABT_CUR 0x25
#define FSC_SYNC_EXTERNAL 0x10             /* synchronous external abort, not on a walk */
#define VEC_GROUP_MASK 0x180               /* vector offset & 0x180: 0 sync, 0x80 IRQ, ... */
#define VEC_SYNC 0x000
#define VEC_SERROR 0x180
#define INSN_SIZE 4

/* VMSAv8-64, 4 KiB granule, 32-bit VA (T0SZ = 32): the walk starts at level 1, whose four
 * entries map 1 GiB blocks (Arm ARM, VMSAv8-64 translation, 4KB granule lookup levels). */
#define TCR_T0SZ 32
#define TCR_IRGN0_WBWA (1 << 8)
#define TCR_ORGN0_WBWA (1 << 10)
#define TCR_SH0_INNER (3 << 12)
#define TCR_EPD1 (1 << 23)                 /* no TTBR1 walks: nothing lives in the upper half */
#define TCR_VALUE (TCR_T0SZ | TCR_IRGN0_WBWA | TCR_ORGN0_WBWA | TCR_SH0_INNER | TCR_EPD1)
#define MAIR_DEVICE_nGnRnE 0x00
#define MAIR_NORMAL_WB 0xff                /* Inner/Outer Write-Back, RW-allocate */
#define ATTR_DEVICE 0
#define ATTR_NORMAL 1
#define MAIR_VALUE ((MAIR_NORMAL_WB << (8 * ATTR_NORMAL)) | (MAIR_DEVICE_nGnRnE << (8 * ATTR_DEVICE)))
#define DESC_BLOCK 0x1                     /* level-1 block descriptor */
#define DESC_ATTRINDX(i) ((i) << 2)
#define DESC_SH_INNER (3 << 8)
#define DESC_AF (1 << 10)                  /* set: no Access flag fault on first use */
#define DESC_PXN (1 << 53)
#define DESC_UXN (1 << 54)
#define BLOCK_DEVICE (DESC_BLOCK | DESC_ATTRINDX(ATTR_DEVICE) | DESC_AF | DESC_PXN | DESC_UXN)
#define BLOCK_NORMAL (DESC_BLOCK | DESC_ATTRINDX(ATTR_NORMAL) | DESC_SH_INNER | DESC_AF | DESC_UXN)
/* SCTLR_EL1: the Armv8.0 RES1 bits (29, 28, 23, 22, 20, 11), plus M (MMU), C (data cache)
 * and I (instruction cache). Everything else 0: little-endian, no alignment checking (all
 * accesses are aligned anyway), no WXN, no pointer authentication. */
#define SCTLR_RES1 ((1 << 29) | (1 << 28) | (1 << 23) | (1 << 22) | (1 << 20) | (1 << 11))
#define SCTLR_VALUE (SCTLR_RES1 | (1 << 12) | (1 << 2) | (1 << 0))

/* ---- Per-CPU block (TPIDR_EL1 points at this vCPU's) ------------------------------------ */
#define PCPU_CPU 0x00                      /* vCPU index = MPIDR_EL1.Aff0 */
#define PCPU_SEQ 0x08                      /* exceptions taken since boot */
#define PCPU_COMMAND_SEQ 0x10              /* COMMAND_SEQ of the last command seen */
#define PCPU_HAS_RAS 0x18                  /* FEAT_RAS: DISR_EL1 exists, ESB defers */
#define PCPU_SIZE_SHIFT 5
#define PCPU_SIZE (1 << PCPU_SIZE_SHIFT)

/* ---- Exception frame, relative to x28 in the handlers ----------------------------------- */
#define F_X(n) ((n) * 8)                   /* x0..x30 */
#define F_ELR 248                          /* where eret returns (may be moved forward) */
#define F_SPSR 256
#define F_ESR 264
#define F_FAR 272
#define F_VEC 280                          /* vector offset from VBAR_EL1 */
#define F_ELR_TAKEN 288                    /* ELR_EL1 as the exception left it, for reports */
#define FRAME_SIZE 304                     /* multiple of 16: SP stays 16-byte aligned */
#define LINE_SIZE 192                      /* longest line + fmt_dec's 20-byte scratch */

/* ---- Main loop ------------------------------------------------------------------------- */
#define DEFAULT_HEARTBEAT_MS 100           /* when the control block is absent (magic 0) */
#define FALLBACK_CNTFRQ 62500000           /* if firmware left CNTFRQ_EL0 at 0 (QEMU's rate) */
#define UNMASK_WINDOW_DIVISOR 1000         /* VEX_CMD_UNMASK_SERROR: SError open for 1 ms */
#define WORKLOAD_MAX_BATCH 64              /* pages per main-loop turn, bounds the catch-up */
#define WORKLOAD_MAX_LAG_DIVISOR 10        /* debt older than 1/10 s (100 ms) is dropped */
#define NO_BAD_PAGE 0xffffffff
#define ASCII_LF 0x0a
#define ASCII_ZERO 0x30
#define ASCII_X 0x78
#define ASCII_DOT 0x2e
#define HOLD_BIT_SERROR 0                  /* VEX_CTL_HOLD_MASK bits on arm64 (witness_abi.h) */
#define HOLD_BIT_SYNC 1

/* Main-loop state of vCPU 0 (in guest RAM, so it migrates with the memory). */
#define MS_HEARTBEAT_MS 0x00
#define MS_WORKSET_CFG 0x08                /* VEX_CTL_WORKSET_PAGES as last read */
#define MS_DIRTY_RATE 0x10
#define MS_CNTFRQ 0x18
#define MS_HEARTBEAT_NEXT 0x20             /* CNTVCT deadline of the next '.', 0 = none set */
#define MS_DIRTY_NEXT 0x28                 /* CNTVCT deadline of the next page, 0 = idle */
#define MS_WORKSET_PAGES 0x30              /* latched working-set size, 0 = not yet */
#define MS_CURSOR 0x38                     /* next page of the current pass */
#define MS_PASS 0x40                       /* current pass k, from 1 */
#define MS_SIZE 0x48

/* System registers by encoding, so no -march extension is needed to assemble them. */
#define DISR_EL1 s3_0_c12_c1_1             /* FEAT_RAS: deferred interrupt status */
#define ESB hint #16                       /* FEAT_RAS error synchronization barrier; a NOP without */

/* ======================================================================================== */
/* Macros                                                                                  */
/* ======================================================================================== */

/* \reg = address of \sym (PC-relative, +-4 GiB). */
.macro ADDR reg, sym
    adrp \reg, \sym
    add \reg, \reg, :lo12:\sym
.endm

/* Line formatting; x0 is the cursor. */
.macro PUT_STR text
    .pushsection .rodata.strings, "a"
.Lstr\@:
    .asciz "\text"
    .popsection
    ADDR x1, .Lstr\@
    bl fmt_str
.endm

.macro PUT_HEX reg
    mov x1, \reg
    bl fmt_hex
.endm

.macro PUT_DEC reg
    mov x1, \reg
    bl fmt_dec
.endm

.macro PUT_PCPU field                      /* decimal per-CPU field (cpu, seq) */
    mrs x1, tpidr_el1
    ldr x1, [x1, #\field]
    bl fmt_dec
.endm

.macro PUT_NL
    mov w1, #ASCII_LF
    strb w1, [x0], #1
.endm

/* A line in its own stack buffer, emitted at LINE_END. */
.macro LINE_BEGIN
    sub sp, sp, #LINE_SIZE
    mov x0, sp
.endm

.macro LINE_END
    PUT_NL
    mov x1, x0
    mov x0, sp
    bl emit
    add sp, sp, #LINE_SIZE
.endm

.macro PROLOGUE                            /* frame record + x19..x22 */
    stp x29, x30, [sp, #-48]!
    mov x29, sp
    stp x19, x20, [sp, #16]
    stp x21, x22, [sp, #32]
.endm

.macro EPILOGUE
    ldp x21, x22, [sp, #32]
    ldp x19, x20, [sp, #16]
    ldp x29, x30, [sp], #48
    ret
.endm

/* ======================================================================================== */
/* Entry, every vCPU                                                                       */
/* ======================================================================================== */
    .section .text.boot, "ax"
    .globl _start
_start:
    msr daifset, #DAIF_ALL                 /* already so after reset; be explicit */
    mrs x19, mpidr_el1
    and x19, x19, #MPIDR_AFF0_MASK         /* x19: vCPU index, kept through boot */
    cmp x19, #MAX_CPUS
    b.hs park                              /* no stack for it: stay out of the way */

    /* MMU on with the static identity map. Nothing was stored before this point, so no
     * non-cacheable write can be shadowed by a stale cache line afterwards. */
    ADDR x0, ttb_level1
    msr ttbr0_el1, x0
    ldr x0, =MAIR_VALUE
    msr mair_el1, x0
    ldr x0, =TCR_VALUE
    msr tcr_el1, x0
    isb                                    /* the table registers before SCTLR_EL1.M */
    tlbi vmalle1                           /* no stale entries from whatever ran before */
    dsb nsh
    ldr x0, =SCTLR_VALUE
    msr sctlr_el1, x0
    isb                                    /* this code is identity-mapped: fetch continues */
    ic iallu
    dsb nsh
    isb

    msr spsel, #1                          /* EL1h: SP_EL1, the stack exceptions use too */
    ADDR x0, stacks
    add x1, x19, #1
    add x0, x0, x1, lsl #STACK_SHIFT       /* top of this vCPU's stack */
    mov sp, x0
    ADDR x0, percpu
    add x0, x0, x19, lsl #PCPU_SIZE_SHIFT
    msr tpidr_el1, x0
    str x19, [x0, #PCPU_CPU]
    str xzr, [x0, #PCPU_SEQ]
    str xzr, [x0, #PCPU_COMMAND_SEQ]
    mrs x1, id_aa64pfr0_el1
    ubfx x1, x1, #ID_AA64PFR0_RAS_SHIFT, #4
    cmp x1, #0
    cset x1, ne
    str x1, [x0, #PCPU_HAS_RAS]
    ADDR x0, vectors
    msr vbar_el1, x0
    isb                                    /* VBAR_EL1 in effect before anything can fault */

    bl report_boot
    cbnz x19, 1f
    bl main_state_init                     /* before READY: a command may follow at once */
1:  bl report_ready
    cbz x19, main_loop
secondary_loop:                            /* no WFI/WFE: stay runnable for injection */
    bl poll_command
    yield
    b secondary_loop

park:
    wfe
    b park

report_boot:
    PROLOGUE
    LINE_BEGIN
    PUT_STR "VEX BOOT cpu="
    PUT_PCPU PCPU_CPU
    PUT_STR " arch=arm64"
    LINE_END
    EPILOGUE

report_ready:
    PROLOGUE
    LINE_BEGIN
    PUT_STR "VEX READY cpu="
    PUT_PCPU PCPU_CPU
    LINE_END
    EPILOGUE

/* ======================================================================================== */
/* Exceptions                                                                              */
/* ======================================================================================== */

/* One 128-byte slot per vector (Arm ARM, "Exception vectors": four groups of four, 0x80 apart,
 * by where the exception came from and its kind): make room for the
 * frame, free x0/x1, record which slot, and go to the common entry. */
.macro VECTOR offset
    .balign 128
    sub sp, sp, #FRAME_SIZE
    stp x0, x1, [sp, #F_X(0)]
    mov x0, #\offset
    b exc_entry
.endm

    .text
    .balign 2048                           /* VBAR_EL1[10:0] are RES0 */
vectors:
    VECTOR 0x000                           /* current EL with SP_EL0: sync */
    VECTOR 0x080                           /*   IRQ */
    VECTOR 0x100                           /*   FIQ */
    VECTOR 0x180                           /*   SError */
    VECTOR 0x200                           /* current EL with SP_ELx: sync */
    VECTOR 0x280                           /*   IRQ */
    VECTOR 0x300                           /*   FIQ */
    VECTOR 0x380                           /*   SError: where a virtual SError arrives here */
    VECTOR 0x400                           /* lower EL, AArch64 (never: no EL0 code) */
    VECTOR 0x480
    VECTOR 0x500
    VECTOR 0x580
    VECTOR 0x600                           /* lower EL, AArch32 (never) */
    VECTOR 0x680
    VECTOR 0x700
    VECTOR 0x780

/* x0 = vector offset; x0/x1 of the interrupted code are in the frame already. Every
 * exception masks DAIF on entry (PSTATE.{D,A,I,F} = 1), so only a synchronous exception can
 * nest here, and the frame makes that safe too. */
exc_entry:
    stp x2, x3, [sp, #F_X(2)]
    stp x4, x5, [sp, #F_X(4)]
    stp x6, x7, [sp, #F_X(6)]
    stp x8, x9, [sp, #F_X(8)]
    stp x10, x11, [sp, #F_X(10)]
    stp x12, x13, [sp, #F_X(12)]
    stp x14, x15, [sp, #F_X(14)]
    stp x16, x17, [sp, #F_X(16)]
    stp x18, x19, [sp, #F_X(18)]
    stp x20, x21, [sp, #F_X(20)]
    stp x22, x23, [sp, #F_X(22)]
    stp x24, x25, [sp, #F_X(24)]
    stp x26, x27, [sp, #F_X(26)]
    stp x28, x29, [sp, #F_X(28)]
    str x30, [sp, #F_X(30)]
    mrs x1, elr_el1
    mrs x2, spsr_el1
    stp x1, x2, [sp, #F_ELR]
    str x1, [sp, #F_ELR_TAKEN]
    mrs x1, esr_el1
    mrs x2, far_el1
    stp x1, x2, [sp, #F_ESR]
    str x0, [sp, #F_VEC]
    mov x28, sp                            /* x28: the frame, for every handler */
    mov x29, #0                            /* end of the frame-record chain */

    and x1, x0, #VEC_GROUP_MASK
    cmp x1, #VEC_SERROR
    b.eq 1f
    cmp x1, #VEC_SYNC
    b.eq 2f
    bl handle_unexpected
    b 3f
1:  bl handle_serror
    b 3f
2:  bl handle_sync

3:  ldp x1, x2, [x28, #F_ELR]
    msr elr_el1, x1
    msr spsr_el1, x2
    mov sp, x28
    ldp x2, x3, [sp, #F_X(2)]
    ldp x4, x5, [sp, #F_X(4)]
    ldp x6, x7, [sp, #F_X(6)]
    ldp x8, x9, [sp, #F_X(8)]
    ldp x10, x11, [sp, #F_X(10)]
    ldp x12, x13, [sp, #F_X(12)]
    ldp x14, x15, [sp, #F_X(14)]
    ldp x16, x17, [sp, #F_X(16)]
    ldp x18, x19, [sp, #F_X(18)]
    ldp x20, x21, [sp, #F_X(20)]
    ldp x22, x23, [sp, #F_X(22)]
    ldp x24, x25, [sp, #F_X(24)]
    ldp x26, x27, [sp, #F_X(26)]
    ldp x28, x29, [sp, #F_X(28)]
    ldr x30, [sp, #F_X(30)]
    ldp x0, x1, [sp, #F_X(0)]
    add sp, sp, #FRAME_SIZE
    eret                                   /* restores PSTATE from SPSR_EL1, incl. A */

/* "VEX SERROR": ESR_EL1 holds the SError syndrome (EC 0x2f; with FEAT_RAS and an injected
 * ESR, IDS=1 and ISS = the VMM's VSESR_EL2 value). Returns to where it was taken. */
handle_serror:
    PROLOGUE
    bl finish_interrupted_line
    bl count_exception
    bl read_disr
    mov x19, x0
    LINE_BEGIN
    PUT_STR "VEX SERROR cpu="
    PUT_PCPU PCPU_CPU
    PUT_STR " seq="
    PUT_PCPU PCPU_SEQ
    PUT_STR " esr="
    ldr x2, [x28, #F_ESR]
    PUT_HEX x2
    PUT_STR " elr="
    ldr x2, [x28, #F_ELR_TAKEN]
    PUT_HEX x2
    PUT_STR " spsr="
    ldr x2, [x28, #F_SPSR]
    PUT_HEX x2
    PUT_STR " disr="
    PUT_HEX x19
    LINE_END
    mov x0, #HOLD_BIT_SERROR
    bl hold_if_requested
    EPILOGUE

/* "VEX SYNC". Where to resume: an injected external abort (KVM_SET_VCPU_EVENTS
 * ext_dabt_pending, KVM_ARM_INJECT_EXT_DABT) is taken before the instruction at ELR ran
 * (KVM sets ELR_EL1 to the vCPU's PC), so that instruction runs again; SVC/HVC already left
 * ELR at the next instruction; anything else is a fault of the instruction at ELR, which is
 * skipped so one bad instruction gives one report, not an endless stream. */
handle_sync:
    PROLOGUE
    bl finish_interrupted_line
    bl count_exception
    LINE_BEGIN
    PUT_STR "VEX SYNC cpu="
    PUT_PCPU PCPU_CPU
    PUT_STR " seq="
    PUT_PCPU PCPU_SEQ
    PUT_STR " esr="
    ldr x2, [x28, #F_ESR]
    PUT_HEX x2
    PUT_STR " elr="
    ldr x2, [x28, #F_ELR_TAKEN]
    PUT_HEX x2
    PUT_STR " far="
    ldr x2, [x28, #F_FAR]
    PUT_HEX x2
    LINE_END
    mov x0, #HOLD_BIT_SYNC
    bl hold_if_requested

    ldr x0, [x28, #F_ESR]
    ubfx x1, x0, #ESR_EC_SHIFT, #6
    cmp x1, #EC_SVC64
    b.eq 9f
    cmp x1, #EC_HVC64
    b.eq 9f
    and x2, x0, #ESR_FSC_MASK
    cmp x2, #FSC_SYNC_EXTERNAL
    b.ne 8f
    cmp x1, #EC_IABT_LOW
    b.eq 9f
    cmp x1, #EC_IABT_CUR
    b.eq 9f
    cmp x1, #EC_DABT_LOW
    b.eq 9f
    cmp x1, #EC_DABT_CUR
    b.eq 9f
8:  ldr x2, [x28, #F_ELR]
    add x2, x2, #INSN_SIZE
    str x2, [x28, #F_ELR]
9:  EPILOGUE

/* IRQ/FIQ while PSTATE.I/F are set cannot happen; if one does, say so once and return with
 * I and F set so it cannot fire again. */
handle_unexpected:
    PROLOGUE
    bl finish_interrupted_line
    bl count_exception
    LINE_BEGIN
    PUT_STR "VEX UNEXPECTED cpu="
    PUT_PCPU PCPU_CPU
    PUT_STR " seq="
    PUT_PCPU PCPU_SEQ
    PUT_STR " vec="
    ldr x2, [x28, #F_VEC]
    PUT_HEX x2
    PUT_STR " elr="
    ldr x2, [x28, #F_ELR_TAKEN]
    PUT_HEX x2
    LINE_END
    ldr x0, [x28, #F_SPSR]
    orr x0, x0, #SPSR_I_F
    str x0, [x28, #F_SPSR]
    EPILOGUE

/* PCPU_SEQ += 1. Clobbers x9, x10. */
count_exception:
    mrs x9, tpidr_el1
    ldr x10, [x9, #PCPU_SEQ]
    add x10, x10, #1
    str x10, [x9, #PCPU_SEQ]
    ret

/* x0 = DISR_EL1, or 0 on a CPU without FEAT_RAS (where the register does not exist and
 * reading it is UNDEFINED). Clobbers x9. */
read_disr:
    mrs x9, tpidr_el1
    ldr x9, [x9, #PCPU_HAS_RAS]
    mov x0, #0
    cbz x9, 1f
    mrs x0, DISR_EL1
1:  ret

/* If the exception interrupted `emit`, print the rest of that line now and make the
 * interrupted `emit` return as if it had finished. Exceptions are taken on instruction
 * boundaries, so ELR says exactly whether the byte at x0 was sent: only when ELR is
 * `emit_sent` (store done, cursor not yet advanced). Works at any nesting depth. */
finish_interrupted_line:
    PROLOGUE
    ldr x9, [x28, #F_ELR]
    ADDR x10, emit_loop
    cmp x9, x10
    b.lo 2f
    ADDR x10, emit_end
    cmp x9, x10
    b.hs 2f
    ldp x0, x1, [x28, #F_X(0)]
    ADDR x10, emit_sent
    cmp x9, x10
    b.ne 1f
    add x0, x0, #1
1:  bl emit
    ldr x1, [x28, #F_X(1)]
    str x1, [x28, #F_X(0)]                 /* cursor = end */
    ADDR x10, emit_end
    str x10, [x28, #F_ELR]
2:  EPILOGUE

/* If bit x0 of HOLD_MASK is set: "VEX HOLD", then spin until the VMM clears it. The handler
 * keeps every exception masked meanwhile, so a second SError stays pending. */
hold_if_requested:
    PROLOGUE
    mov x19, x0
    bl control_block_active
    cbz x0, 3f
    ldr x20, =CONTROL_GPA
    ldr x1, [x20, #VEX_CTL_HOLD_MASK]
    lsr x1, x1, x19
    tbz x1, #0, 3f
    LINE_BEGIN
    PUT_STR "VEX HOLD cpu="
    PUT_PCPU PCPU_CPU
    PUT_STR " vec="
    PUT_HEX x19
    LINE_END
2:  yield
    ldr x1, [x20, #VEX_CTL_HOLD_MASK]      /* a plain load each turn sees the VMM's write */
    lsr x1, x1, x19
    tbnz x1, #0, 2b
3:  EPILOGUE

/* x0 = 1 when the control block carries VEX_CTL_MAGIC_VALUE, else 0. Clobbers x9, x10. */
control_block_active:
    ldr x9, =CONTROL_GPA
    ldr x9, [x9, #VEX_CTL_MAGIC]
    ldr x10, =VEX_CTL_MAGIC_VALUE
    cmp x9, x10
    cset x0, eq
    ret

/* ======================================================================================== */
/* Console and formatting (leaves: x0 cursor in and out, clobber x1-x7)                   */
/* ======================================================================================== */

/* Writes bytes [x0, x1) to the console, one aligned byte store each. Clobbers x2, x3.
 * finish_interrupted_line relies on the cursor being x0 and the end x1 throughout. */
emit:
    ldr x3, =VEX_ARM64_CONSOLE_MMIO
emit_loop:
    cmp x0, x1
    b.hs emit_end
    ldrb w2, [x0]
    strb w2, [x3]
emit_sent:
    add x0, x0, #1
    b emit_loop
emit_end:
    ret

/* Appends the NUL-terminated string at x1. */
fmt_str:
    ldrb w2, [x1], #1
    cbz w2, 1f
    strb w2, [x0], #1
    b fmt_str
1:  ret

/* Appends x1 as 0x-prefixed lowercase hex without leading zeros. */
fmt_hex:
    mov w2, #ASCII_ZERO
    strb w2, [x0], #1
    mov w2, #ASCII_X
    strb w2, [x0], #1
    mov x3, #60                            /* shift of the highest nibble */
1:  cbz x3, 2f                             /* skip leading zero nibbles, keep the last */
    lsr x4, x1, x3
    tst x4, #0xf
    b.ne 2f
    sub x3, x3, #4
    b 1b
2:  ADDR x5, hex_digits
3:  lsr x4, x1, x3
    and x4, x4, #0xf
    ldrb w4, [x5, x4]
    strb w4, [x0], #1
    subs x3, x3, #4
    b.ge 3b
    ret

/* Appends x1 in decimal: digits go to the end of a 20-byte scratch area first (2^64 has 20
 * digits), then are copied in order. */
fmt_dec:
    add x2, x0, #20                        /* scratch beyond the cursor, inside the line */
    mov x3, x2
    mov x4, #10
1:  udiv x5, x1, x4
    msub x6, x5, x4, x1                    /* x6 = x1 % 10 */
    add w6, w6, #ASCII_ZERO
    strb w6, [x3, #-1]!
    mov x1, x5
    cbnz x1, 1b
2:  ldrb w6, [x3], #1
    strb w6, [x0], #1
    cmp x3, x2
    b.lo 2b
    ret

/* ======================================================================================== */
/* Main loop (vCPU 0): heartbeat, memory workload, commands. No WFI: nothing would wake it */
/* (no timer interrupt is enabled), and an injected exception must find the vCPU running.   */
/* ======================================================================================== */

main_state_init:
    ADDR x9, main_state
    mov x10, #0
1:  str xzr, [x9, x10]
    add x10, x10, #8
    cmp x10, #MS_SIZE
    b.lo 1b
    mov x10, #1
    str x10, [x9, #MS_PASS]
    mrs x10, cntfrq_el0
    cbnz x10, 2f
    ldr x10, =FALLBACK_CNTFRQ
2:  str x10, [x9, #MS_CNTFRQ]
    ret

main_loop:
    bl read_config
    bl poll_heartbeat
    bl poll_workload
    bl poll_command
    yield
    b main_loop

/* Copies the control block's settings into main_state (or the defaults when the magic is
 * absent, e.g. under plain QEMU). */
read_config:
    PROLOGUE
    ADDR x19, main_state
    bl control_block_active
    cbz x0, 1f
    ldr x9, =CONTROL_GPA
    ldr x10, [x9, #VEX_CTL_HEARTBEAT_MS]
    str x10, [x19, #MS_HEARTBEAT_MS]
    ldr x10, [x9, #VEX_CTL_WORKSET_PAGES]
    str x10, [x19, #MS_WORKSET_CFG]
    ldr x10, [x9, #VEX_CTL_DIRTY_PAGES_PER_SEC]
    str x10, [x19, #MS_DIRTY_RATE]
    b 2f
1:  mov x10, #DEFAULT_HEARTBEAT_MS
    str x10, [x19, #MS_HEARTBEAT_MS]
    str xzr, [x19, #MS_WORKSET_CFG]
    str xzr, [x19, #MS_DIRTY_RATE]
2:  EPILOGUE

/* x0 = CNTVCT_EL0. The ISB keeps the read from being performed early (Arm ARM, Generic
 * Timer: counter reads can occur speculatively and out of order; an ISB before orders them). */
read_counter:
    isb
    mrs x0, cntvct_el0
    ret

/* A '.' every heartbeat_ms. A deadline missed by more than a period (the VM was paused) is
 * moved to now + period rather than paid back in a burst. */
poll_heartbeat:
    PROLOGUE
    ADDR x19, main_state
    ldr x20, [x19, #MS_HEARTBEAT_MS]
    cbz x20, 4f
    ldr x1, [x19, #MS_CNTFRQ]
    mul x20, x20, x1
    mov x1, #1000
    udiv x20, x20, x1                      /* x20: period in counter ticks */
    bl read_counter
    ldr x21, [x19, #MS_HEARTBEAT_NEXT]
    cbz x21, 2f
    cmp x0, x21
    b.lo 3f
    ldr x1, =VEX_ARM64_CONSOLE_MMIO
    mov w2, #ASCII_DOT
    strb w2, [x1]
    add x21, x21, x20
    cmp x21, x0
    b.hi 1f
2:  add x21, x0, x20
1:  str x21, [x19, #MS_HEARTBEAT_NEXT]
3:  EPILOGUE
4:  str xzr, [x19, #MS_HEARTBEAT_NEXT]
    EPILOGUE

/* x0 = pages in the working set. Latched the first time it is nonzero, so the cursor and
 * the MEMCHECK expectation never refer to two different sizes. Clobbers x9, x10. */
latch_workset:
    ADDR x9, main_state
    ldr x0, [x9, #MS_WORKSET_PAGES]
    cbnz x0, 1f
    ldr x0, [x9, #MS_WORKSET_CFG]
    ldr x10, =MAX_WORKSET_PAGES
    cmp x0, x10
    csel x0, x0, x10, ls
    str x0, [x9, #MS_WORKSET_PAGES]
1:  ret

/* Dirties pages at DIRTY_PAGES_PER_SEC, one deadline per page, at most WORKLOAD_MAX_BATCH
 * per turn; debt older than 100 ms is dropped. */
poll_workload:
    PROLOGUE
    ADDR x19, main_state
    ldr x1, [x19, #MS_DIRTY_RATE]
    cbz x1, 5f
    bl latch_workset
    cbz x0, 5f
    ldr x2, [x19, #MS_CNTFRQ]
    ldr x1, [x19, #MS_DIRTY_RATE]
    udiv x20, x2, x1                       /* x20: counter ticks per page */
    cmp x20, #0
    csinc x20, x20, xzr, ne                /* at least 1 */
    bl read_counter
    mov x21, x0                            /* x21: now */
    ldr x22, [x19, #MS_DIRTY_NEXT]         /* x22: next deadline */
    cbz x22, 1f
    cmp x21, x22
    b.lo 4f
    ldr x2, [x19, #MS_CNTFRQ]
    mov x1, #WORKLOAD_MAX_LAG_DIVISOR
    udiv x2, x2, x1
    sub x3, x21, x22
    cmp x3, x2
    b.ls 2f
1:  mov x22, x21
2:  mov x1, #WORKLOAD_MAX_BATCH
    str x1, [sp, #-16]!                    /* batch budget */
3:  cmp x21, x22
    b.lo 31f
    bl dirty_one_page
    add x22, x22, x20
    ldr x1, [sp]
    subs x1, x1, #1
    str x1, [sp]
    b.ne 3b
31: add sp, sp, #16
4:  str x22, [x19, #MS_DIRTY_NEXT]
    EPILOGUE
5:  str xzr, [x19, #MS_DIRTY_NEXT]
    EPILOGUE

/* Writes pass k into page `cursor` (witness_abi.h): w0 = (p << 32) | k, w1 = ~w0, as one
 * aligned 16-byte store pair. Clobbers x9-x13. */
dirty_one_page:
    ADDR x9, main_state
    ldr x10, [x9, #MS_CURSOR]
    ldr x11, [x9, #MS_PASS]
    ldr x12, =WORKSET_GPA
    add x12, x12, x10, lsl #PAGE_SHIFT
    mov w11, w11                           /* k as 32 bits */
    orr x11, x11, x10, lsl #32
    mvn x13, x11
    stp x11, x13, [x12]
    add x10, x10, #1
    ldr x11, [x9, #MS_WORKSET_PAGES]
    cmp x10, x11
    b.lo 1f
    mov x10, #0
    ldr x11, [x9, #MS_PASS]
    add x11, x11, #1
    str x11, [x9, #MS_PASS]
1:  str x10, [x9, #MS_CURSOR]
    ret

/* Runs the command when COMMAND_SEQ differs from the last one this vCPU saw (initially 0).
 * COMMAND_SEQ is loaded with acquire semantics, so COMMAND is read after it (Arm ARM,
 * Load-Acquire: later loads are not observed before it); the VMM must publish COMMAND before
 * COMMAND_SEQ (a store-release of COMMAND_SEQ, or a barrier between the two stores). vCPU 0
 * runs every command and always reports DONE; the others run and report only
 * VEX_CMD_UNMASK_SERROR. */
poll_command:
    PROLOGUE
    bl control_block_active
    cbz x0, 9f
    ldr x9, =CONTROL_GPA
    add x10, x9, #VEX_CTL_COMMAND_SEQ
    ldar x10, [x10]
    mrs x11, tpidr_el1
    ldr x12, [x11, #PCPU_COMMAND_SEQ]
    cmp x10, x12
    b.eq 9f
    str x10, [x11, #PCPU_COMMAND_SEQ]
    ldr x19, [x9, #VEX_CTL_COMMAND]        /* x19: the command */
    ldr x20, [x11, #PCPU_CPU]              /* x20: this vCPU */
    cmp x19, #VEX_CMD_UNMASK_SERROR
    b.ne 1f
    bl run_unmask_serror
    b 8f
1:  cbnz x20, 9f                           /* the rest is vCPU 0's */
    cmp x19, #VEX_CMD_MEMCHECK
    b.ne 2f
    bl run_memcheck
    b 8f
2:  cmp x19, #VEX_CMD_ESB_READ_DISR
    b.ne 3f
    bl run_esb_read_disr
    b 8f
3:  cmp x19, #VEX_CMD_READ_DISR
    b.ne 8f                                /* unknown or NONE: just DONE */
    bl report_disr
8:  LINE_BEGIN
    PUT_STR "VEX DONE cpu="
    PUT_PCPU PCPU_CPU
    PUT_STR " cmd="
    PUT_DEC x19
    LINE_END
9:  EPILOGUE

/* Opens the SError window for 1 ms: a pending (virtual) SError is taken inside it and
 * reported by handle_serror. The ISB after the unmask is a context synchronization event, so
 * the new PSTATE.A is in effect by the next instruction at the latest (Arm ARM: a PSTATE change
 * by MSR DAIFClr is only guaranteed visible after one): the SError's ELR is the ISB (taken
 * right after the MSR, as KVM on QEMU does) or a point inside the window, never later. */
run_unmask_serror:
    PROLOGUE
    mrs x19, cntfrq_el0
    cbnz x19, 1f
    ldr x19, =FALLBACK_CNTFRQ
1:  mov x1, #UNMASK_WINDOW_DIVISOR
    udiv x19, x19, x1
    bl read_counter
    add x19, x19, x0                       /* x19: end of the window */
    msr daifclr, #DAIF_A
    isb
serror_window:
    bl read_counter
    cmp x0, x19
    b.lo serror_window
    msr daifset, #DAIF_A
    isb
    EPILOGUE

/* With SError masked, ESB defers a pending SError instead of taking it: PSTATE.A=1, so the
 * barrier records its syndrome in DISR_EL1 (for a virtual SError: in VDISR_EL2, which is what
 * an EL1 read of DISR_EL1 returns, and clears HCR_EL2.VSE) -- Arm ARM, RAS extension, "Error
 * Synchronization Barrier". Report it, then clear DISR so the next ESB starts afresh. */
run_esb_read_disr:
    PROLOGUE
    msr daifset, #DAIF_A                   /* masked already; the deferral depends on it */
    ESB
    isb
    bl report_disr
    mrs x9, tpidr_el1
    ldr x9, [x9, #PCPU_HAS_RAS]
    cbz x9, 1f
    msr DISR_EL1, xzr
    isb
1:  EPILOGUE

/* "VEX DISR" with DISR_EL1 as it is now (0 without FEAT_RAS). */
report_disr:
    PROLOGUE
    bl read_disr
    mov x19, x0
    LINE_BEGIN
    PUT_STR "VEX DISR cpu="
    PUT_PCPU PCPU_CPU
    PUT_STR " seq="
    PUT_PCPU PCPU_SEQ
    PUT_STR " disr="
    PUT_HEX x19
    LINE_END
    EPILOGUE

/* Checks every page of the working set: pages before the cursor hold pass k, the others
 * pass k-1 (pass 0: never written, zeros). */
run_memcheck:
    PROLOGUE
    stp x23, x24, [sp, #-16]!
    bl latch_workset
    mov x19, x0                            /* x19: pages */
    mov x20, #0                            /* x20: bad pages */
    ldr x21, =NO_BAD_PAGE                  /* x21: first bad page */
    ADDR x9, main_state
    ldr x22, [x9, #MS_CURSOR]              /* x22: cursor */
    ldr x23, [x9, #MS_PASS]
    mov w23, w23                           /* x23: pass k (32 bits, as written) */
    mov x24, #0                            /* x24: page index */
1:  cmp x24, x19
    b.hs 5f
    mov x2, x23
    cmp x24, x22
    b.lo 2f
    sub w2, w2, #1                         /* not yet reached this pass: k-1 */
2:  mov x3, #0                             /* expected w0 in x3, w1 in x4 */
    mov x4, #0
    cbz w2, 3f
    orr x3, x2, x24, lsl #32
    mvn x4, x3
3:  ldr x5, =WORKSET_GPA
    add x5, x5, x24, lsl #PAGE_SHIFT
    ldp x6, x7, [x5]
    cmp x6, x3
    ccmp x7, x4, #0, eq                    /* Z set only if both words match */
    b.eq 4f
    add x20, x20, #1
    ldr x6, =NO_BAD_PAGE
    cmp x21, x6
    csel x21, x24, x21, eq
4:  add x24, x24, #1
    b 1b
5:  LINE_BEGIN
    PUT_STR "VEX MEMCHECK cpu="
    PUT_PCPU PCPU_CPU
    PUT_STR " seq="
    PUT_PCPU PCPU_SEQ
    PUT_STR " pages="
    PUT_DEC x19
    PUT_STR " bad="
    PUT_DEC x20
    PUT_STR " first_bad="
    PUT_HEX x21
    LINE_END
    ldp x23, x24, [sp], #16
    EPILOGUE

    .ltorg

/* ======================================================================================== */
/* Data                                                                                    */
/* ======================================================================================== */
    .section .rodata
hex_digits:
    .ascii "0123456789abcdef"

/* The level-1 table: in the image (not built at run time), so it is in memory before the
 * MMU reads it, without any store made while the caches were off. */
    .balign 4096
ttb_level1:
    .quad 0x00000000 | BLOCK_DEVICE
    .quad VEX_ARM64_RAM_BASE | BLOCK_NORMAL
    .quad 0
    .quad 0

    .bss
    .balign 16
stacks:
    .skip MAX_CPUS * STACK_SIZE
percpu:
    .skip MAX_CPUS * PCPU_SIZE
main_state:
    .skip MS_SIZE
