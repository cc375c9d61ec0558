/* The x86_64 witness guest: a Multiboot v1 image that switches itself to 64-bit long mode,
 * reports every exception it takes on COM1, and runs the control-block workload.
 *
 * Contract: guests/common/witness_abi.h (report lines, control block, workload pattern).
 *
 * Boot. The loader (QEMU -kernel, or the vexstate VMM) enters `_start` in 32-bit protected
 * mode, flat segments, paging off, IF=0. The vexstate VMM starts every vCPU there at the same
 * time (no INIT/SIPI), so each vCPU finds its identity from its initial APIC ID
 * (CPUID.01H:EBX[31:24]; vCPU i has APIC ID i, i < MAX_CPUS). No 32-bit code uses a stack:
 * the per-CPU stacks exist only once the vCPU knows its index. vCPU 0 builds the shared
 * structures (identity page tables, IDT); the others wait for `boot_ready`.
 *
 * Why long mode: this project's KVM (kvm_pvm) cannot run 32-bit IRET or non-long-mode paging,
 * and faults software interrupts (int/int3) in 64-bit mode. The guest therefore uses only plain
 * integer instructions, port I/O, CPUID, RDMSR/WRMSR, RDTSC, PAUSE, control-register moves,
 * LGDT/LIDT/LTR, and IRETQ (see /work/shared/notes/x86-kvm.md).
 *
 * Output. Every line is first formatted into a buffer on the stack, then written byte by byte
 * by `emit`. An exception that interrupts `emit` finishes the interrupted line itself before
 * printing its own (see `finish_interrupted_line`), so lines from one vCPU never interleave.
 */
#include "guests/common/witness_abi.h"

/* ---- Layout and limits ---------------------------------------------------------------- */
#define MAX_CPUS 8
#define PAGE_SHIFT 12
#define PAGE_SIZE 0x1000
#define STACK_SHIFT 14                     /* 16 KiB stack per vCPU */
#define STACK_SIZE (1 << STACK_SHIFT)
#define DF_STACK_SHIFT 12                  /* 4 KiB #DF stack per vCPU (IST1) */
#define DF_STACK_SIZE (1 << DF_STACK_SHIFT)
#define CONTROL_GPA (VEX_X86_RAM_BASE + VEX_CONTROL_OFFSET)
#define WORKSET_GPA (VEX_X86_RAM_BASE + VEX_WORKSET_OFFSET)

/* Identity map of the first MAPPED_GIB GiB with 2 MiB pages: one PD per GiB. */
#define MAPPED_GIB 16
#define LARGE_PAGE_SHIFT 21
#define ENTRIES_PER_TABLE 512
#define PD_ENTRIES (MAPPED_GIB * ENTRIES_PER_TABLE)
#define PTE_PRESENT 0x1
#define PTE_WRITABLE 0x2
#define PTE_LARGE 0x80                     /* PS: the PDE maps 2 MiB (SDM "4-Level Paging") */
#define MAX_WORKSET_PAGES (((MAPPED_GIB << 30) - WORKSET_GPA) >> PAGE_SHIFT)

/* ---- Multiboot v1 --------------------------------------------------------------------- */
#define MULTIBOOT_MAGIC 0x1BADB002
#define MULTIBOOT_FLAGS 0x0                /* nothing requested: the ELF headers place us */
/* Multiboot 0.6.96 "Machine state" and "Boot information format": EAX holds this magic and
 * EBX the info structure's address; its flags bit 2 says a command line is at +16. */
#define MULTIBOOT_BOOTLOADER_MAGIC 0x2BADB002
#define MB_INFO_FLAGS 0
#define MB_INFO_CMDLINE 16
#define MB_INFO_HAS_CMDLINE (1 << 2)

/* ---- Architectural constants (Intel SDM Vol 3A/3B; MSR numbers from Vol 4) -------------- */
#define CR0_PE (1 << 0)
#define CR0_NE (1 << 5)                    /* native x87 error reporting, as every 64-bit OS */
#define CR0_PG (1 << 31)
#define CR4_PAE (1 << 5)
#define CR4_MCE (1 << 6)                   /* without it a #MC shuts the CPU down */
#define CR4_OSFXSR (1 << 9)
#define CPUID1_EDX_MCE (1 << 7)
#define CPUID1_EDX_FXSR (1 << 24)
#define CPUID1_EBX_APIC_ID_SHIFT 24
#define MSR_EFER 0xC0000080
#define EFER_LME (1 << 8)
#define MSR_GS_BASE 0xC0000101
#define MSR_MCG_CAP 0x179
#define MSR_MCG_STATUS 0x17A
#define MSR_MC0_STATUS 0x401               /* MCi_STATUS = 0x401 + 4*i, ADDR +1, MISC +2 */
#define MC_BANK_STRIDE 4
#define MC_BANK_ADDR 1
#define MC_BANK_MISC 2
#define MCG_CAP_COUNT_MASK 0xFF
#define MAX_MC_BANKS 32                    /* bank MSRs 0x400-0x47F; KVM_CAP_MCE is 32 */
#define MCI_STATUS_VAL_BIT 63
#define MCI_STATUS_MISCV_BIT 59
#define MCI_STATUS_ADDRV_BIT 58

/* GDT selectors. Each vCPU has its own TSS descriptor: LTR marks the descriptor busy, so
 * two vCPUs cannot load the same one (SDM Vol 3A "Task Register", LTR). A 64-bit TSS
 * descriptor takes two GDT slots. */
#define SEL_CODE64 0x08
#define SEL_DATA 0x10
#define SEL_TSS0 0x18
#define TSS_DESC_SHIFT 4                   /* 16 bytes */
#define DESC_CODE64 0x00AF9A000000FFFF     /* P, DPL0, execute/read, L=1, D=0 */
#define DESC_DATA 0x00CF92000000FFFF       /* P, DPL0, read/write, 4 GiB */
#define DESC_TSS64_AVAILABLE 0x89          /* P, DPL0, type 9: available 64-bit TSS */

/* 64-bit TSS layout (SDM Vol 3A "Task Management in 64-bit Mode"). */
#define TSS_RSP0 0x04
#define TSS_IST1 0x24
#define TSS_IOPB 0x66
#define TSS_SIZE 0x68
#define TSS_STRIDE_SHIFT 7
#define TSS_STRIDE (1 << TSS_STRIDE_SHIFT)

/* IDT: 256 interrupt gates of 16 bytes (SDM Vol 3A "64-Bit Mode IDT"). */
#define IDT_VECTORS 256
#define IDT_GATE_SIZE 16
#define GATE_INTERRUPT 0x8E                /* P, DPL0, 64-bit interrupt gate */
#define DF_IST 1
#define VEC_DF 8
#define VEC_MC 18
#define STUB_SIZE 16
/* Vectors for which the CPU pushes an error code (SDM Vol 3A "Exception and Interrupt
 * Vectors" table, and "Error Code"). */
#define HAS_ERROR_CODE(v) ((v) == 8 || (v) == 10 || (v) == 11 || (v) == 12 || (v) == 13 || \
                           (v) == 14 || (v) == 17 || (v) == 21 || (v) == 29 || (v) == 30)

/* ---- Per-CPU data (addressed through GS, whose base each vCPU sets to its own block) ---- */
#define PCPU_CPU 0x00                      /* vCPU index = initial APIC ID */
#define PCPU_SEQ 0x08                      /* exceptions taken since boot */
#define PCPU_SIZE_SHIFT 6
#define PCPU_SIZE (1 << PCPU_SIZE_SHIFT)

/* ---- Exception frame: what exc_common leaves, relative to %rbp ------------------------- */
#define F_RDI 64
#define F_RSI 72
#define F_VEC 120
#define F_ERR 128
#define F_RIP 136
#define LINE_SIZE 160                      /* longest line (MCB) is ~125 bytes */
#define LOC_MC_MASK (-8)                   /* banks reported by this #MC, to clear later */
#define LOC_RIP (-16)                      /* RIP as pushed by the CPU, before any fix-up */
#define LOC_LINE (-16 - LINE_SIZE)
#define EXC_LOCALS (16 + LINE_SIZE)        /* keeps %rsp 16-byte aligned */

/* ---- Main loop ------------------------------------------------------------------------- */
#define DEFAULT_HEARTBEAT_MS 100           /* when the control block is absent (magic 0) */
/* Assumed TSC rate when the VMM gives none (QEMU): 2 GHz. The heartbeat is only as exact
 * as this guess; the vexstate VMM always writes VEX_CTL_TSC_KHZ. */
#define DEFAULT_TSC_KHZ 2000000
#define WORKLOAD_MAX_BATCH 64              /* pages per main-loop turn, bounds the catch-up */
#define WORKLOAD_MAX_LAG_MS 100            /* older debt is dropped (e.g. after a pause) */
/* touch_pages per main-loop turn: a first guest write to a page can take ~350 us on this
 * project's KVM (kvm_pvm), so 16 keep the heartbeat within ~6 ms while touching. */
#define TOUCH_BATCH 16
#define NO_BAD_PAGE 0xffffffff

#define ASCII_LF 0x0a
#define ASCII_ZERO 0x30
#define ASCII_DOT 0x2e
#define ASCII_SPACE 0x20
#define ASCII_NINE 0x39
#define HEX_PREFIX 0x7830                  /* "0x" as a little-endian 16-bit store */

/* ======================================================================================== */
/* Line formatting: %rdi is the write cursor into a line buffer.                            */
/* ======================================================================================== */

.macro PUT_STR text
    .pushsection .rodata.strings, "a"
.Lstr\@:
    .asciz "\text"
    .popsection
    leaq .Lstr\@(%rip), %rsi
    call fmt_str
.endm

.macro PUT_HEX src
    movq \src, %rax
    call fmt_hex
.endm

.macro PUT_DEC src
    movq \src, %rax
    call fmt_dec
.endm

.macro PUT_NL
    movb $ASCII_LF, (%rdi)
    incq %rdi
.endm

/* A line in the main (non-exception) context: buffer on the stack, emitted at LINE_END. */
.macro LINE_BEGIN
    subq $LINE_SIZE, %rsp
    movq %rsp, %rdi
.endm

.macro LINE_END
    PUT_NL
    movq %rsp, %rsi
    call emit
    addq $LINE_SIZE, %rsp
.endm

/* ======================================================================================== */
/* Multiboot header: must lie 4-byte aligned within the first 8 KiB of the file.           */
/* ======================================================================================== */
    .section .multiboot, "a"
    .p2align 2
    .long MULTIBOOT_MAGIC
    .long MULTIBOOT_FLAGS
    .long -(MULTIBOOT_MAGIC + MULTIBOOT_FLAGS)

/* ======================================================================================== */
/* 32-bit entry: no stack, registers only.                                                 */
/* ======================================================================================== */
    .section .text.boot32, "ax"
    .code32
    .globl _start
_start:
    cld
    cmpl $MULTIBOOT_BOOTLOADER_MAGIC, %eax /* before CPUID clobbers EAX/EBX. Every vCPU that */
    jne 0f                                 /* enters here under vexstate gets the same EBX */
    movl %ebx, mb_info
0:  movl $1, %eax
    cpuid
    movl %edx, %edi                        /* %edi: CPUID.01H:EDX features, for CR4 */
    shrl $CPUID1_EBX_APIC_ID_SHIFT, %ebx
    movl %ebx, %esi                        /* %esi: vCPU index, kept into long mode */
    cmpl $MAX_CPUS, %esi
    jae park32
    testl %esi, %esi
    jnz wait_for_bsp

    /* vCPU 0: PML4[0] -> PDPT, PDPT[g] -> PD g, PD entries map 2 MiB pages 1:1. Every
     * entry is written, so nothing depends on the loader zeroing .bss. */
    xorl %ecx, %ecx
1:  movl $0, pml4(,%ecx,4)
    movl $0, pdpt(,%ecx,4)
    incl %ecx
    cmpl $(2 * ENTRIES_PER_TABLE), %ecx    /* two dwords per entry */
    jb 1b
    movl $(pdpt + PTE_PRESENT + PTE_WRITABLE), pml4
    xorl %ecx, %ecx
2:  movl %ecx, %eax
    shll $PAGE_SHIFT, %eax
    addl $(pd + PTE_PRESENT + PTE_WRITABLE), %eax
    movl %eax, pdpt(,%ecx,8)
    incl %ecx
    cmpl $MAPPED_GIB, %ecx
    jb 2b
    xorl %ecx, %ecx
3:  movl %ecx, %eax                        /* entry i maps i << 21: split into two dwords */
    shll $LARGE_PAGE_SHIFT, %eax
    orl $(PTE_PRESENT + PTE_WRITABLE + PTE_LARGE), %eax
    movl %eax, pd(,%ecx,8)
    movl %ecx, %eax
    shrl $(32 - LARGE_PAGE_SHIFT), %eax
    movl %eax, pd + 4(,%ecx,8)
    incl %ecx
    cmpl $PD_ENTRIES, %ecx
    jb 3b
    jmp enter_long_mode

wait_for_bsp:                              /* the BSP sets it once tables and IDT are built */
    pause
    cmpl $0, boot_ready
    je wait_for_bsp

/* SDM Vol 3A "Initializing IA-32e Mode": PAE, then CR3, then EFER.LME, then CR0.PG
 * (which sets EFER.LMA); this code is identity-mapped, so the fetch after MOV CR0 works. A far
 * jump to an L=1 code segment then leaves compatibility mode for 64-bit mode. */
enter_long_mode:
    lgdt gdt_pointer                       /* 32-bit base: reads 6 bytes, enough below 4 GiB */
    movl %cr4, %eax
    orl $CR4_PAE, %eax
    testl $CPUID1_EDX_MCE, %edi            /* CR4.MCE is reserved (#GP) without CPUID.MCE */
    jz 4f
    orl $CR4_MCE, %eax
4:  testl $CPUID1_EDX_FXSR, %edi
    jz 5f
    orl $CR4_OSFXSR, %eax
5:  movl %eax, %cr4
    movl $pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    movl %cr0, %eax
    orl $(CR0_PE + CR0_NE + CR0_PG), %eax
    movl %eax, %cr0
    ljmp $SEL_CODE64, $long_mode_entry

park32:                                    /* APIC ID >= MAX_CPUS: no stack for it, stay out */
    pause
    jmp park32

/* ======================================================================================== */
/* 64-bit boot, every vCPU. %esi = vCPU index.                                             */
/* ======================================================================================== */
    .text
    .code64
long_mode_entry:
    movl $SEL_DATA, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs                         /* before GS_BASE: loading %gs resets the base */
    movl %esi, %esi                        /* upper halves are undefined after the switch */
    movq %rsi, %rax
    shlq $STACK_SHIFT, %rax
    leaq stacks + STACK_SIZE(%rax), %rsp
    movq %rsi, %rax
    shlq $PCPU_SIZE_SHIFT, %rax
    addq $percpu, %rax
    movq %rax, %rdx
    shrq $32, %rdx
    movl $MSR_GS_BASE, %ecx
    wrmsr
    movq %rsi, %gs:PCPU_CPU
    movq $0, %gs:PCPU_SEQ
    call report_boot

    cmpq $0, %gs:PCPU_CPU
    jne 1f
    call parse_cmdline
    call build_idt
    movl $1, boot_ready                    /* x86 stores are ordered: the IDT is visible first */
1:  call load_tss
    lidt idt_pointer
    call report_ready
    cmpq $0, %gs:PCPU_CPU
    je bsp_main_loop
ap_idle:                                   /* no HLT with IF=0: stay runnable for injection */
    pause
    jmp ap_idle

/* Fills this vCPU's TSS (RSP0, IST1 for #DF) and its GDT descriptor, then LTR. */
load_tss:
    movq %gs:PCPU_CPU, %rsi
    movq %rsi, %rdi
    shlq $TSS_STRIDE_SHIFT, %rdi
    addq $tss_area, %rdi                   /* %rdi: this vCPU's TSS */
    xorl %eax, %eax
    movl $(TSS_STRIDE / 8), %ecx
1:  movq %rax, -8(%rdi,%rcx,8)
    decl %ecx
    jnz 1b
    movq %rsi, %rax
    shlq $STACK_SHIFT, %rax
    addq $(stacks + STACK_SIZE), %rax
    movq %rax, TSS_RSP0(%rdi)
    movq %rsi, %rax
    shlq $DF_STACK_SHIFT, %rax
    addq $(df_stacks + DF_STACK_SIZE), %rax
    movq %rax, TSS_IST1(%rdi)
    movw $TSS_SIZE, TSS_IOPB(%rdi)         /* I/O bitmap beyond the limit: none */

    /* 16-byte descriptor (SDM Vol 3A "TSS Descriptor in 64-bit mode"): limit[15:0],
     * base[23:0], type/P, base[31:24], then base[63:32]. */
    movq %rdi, %rax
    andq $0xFFFFFF, %rax
    shlq $16, %rax
    orq $(TSS_SIZE - 1), %rax
    movq $DESC_TSS64_AVAILABLE, %rdx
    shlq $40, %rdx
    orq %rdx, %rax
    movq %rdi, %rdx
    shrq $24, %rdx
    andq $0xFF, %rdx
    shlq $56, %rdx
    orq %rdx, %rax
    movq %rsi, %rcx
    shlq $TSS_DESC_SHIFT, %rcx
    movq %rax, gdt + SEL_TSS0(%rcx)
    movq %rdi, %rdx
    shrq $32, %rdx
    movq %rdx, gdt + SEL_TSS0 + 8(%rcx)
    addl $SEL_TSS0, %ecx
    ltr %cx
    ret

/* IDT gate v -> exc_stubs + v * STUB_SIZE, interrupt gate (IF stays clear in handlers). */
build_idt:
    leaq idt(%rip), %rdi
    leaq exc_stubs(%rip), %rsi
    xorl %ecx, %ecx
1:  movq %rsi, %rax                        /* offset[15:0] | selector | offset[31:16] */
    andq $0xFFFF, %rax
    orq $(SEL_CODE64 << 16), %rax
    movq %rsi, %rdx
    shrq $16, %rdx
    andq $0xFFFF, %rdx
    shlq $48, %rdx
    orq %rdx, %rax
    movq $GATE_INTERRUPT, %rdx
    shlq $40, %rdx
    orq %rdx, %rax
    cmpl $VEC_DF, %ecx                     /* #DF on its own stack: a fault on a bad stack
                                            * still reports (SDM Vol 3A "Interrupt Stack Table") */
    jne 2f
    movq $DF_IST, %rdx
    shlq $32, %rdx
    orq %rdx, %rax
2:  movq %rax, (%rdi)
    movq %rsi, %rax
    shrq $32, %rax
    movq %rax, 8(%rdi)
    addq $IDT_GATE_SIZE, %rdi
    addq $STUB_SIZE, %rsi
    incl %ecx
    cmpl $IDT_VECTORS, %ecx
    jb 1b
    ret

report_boot:
    LINE_BEGIN
    PUT_STR "VEX BOOT cpu="
    PUT_DEC %gs:PCPU_CPU
    PUT_STR " arch=x86_64"
    LINE_END
    ret

report_ready:
    LINE_BEGIN
    PUT_STR "VEX READY cpu="
    PUT_DEC %gs:PCPU_CPU
    LINE_END
    ret

/* ======================================================================================== */
/* Exceptions                                                                              */
/* ======================================================================================== */

/* One 16-byte stub per vector: push a zero error code where the CPU pushes none, then the
 * vector, so exc_common sees one frame shape. */
    .p2align 4
exc_stubs:
    .set vec, 0
    .rept IDT_VECTORS
    .if HAS_ERROR_CODE(vec) == 0
    pushq $0
    .endif
    pushq $vec
    jmp exc_common
    .org exc_stubs + (vec + 1) * STUB_SIZE, 0x90   /* fails if a stub outgrows its slot */
    .set vec, vec + 1
    .endr

/* Saves every GPR (so the interrupted code, including an interrupted `emit`, resumes intact),
 * reports, optionally holds, and returns with IRETQ. Nothing here executes IRET before the
 * final one: inside the NMI handler NMIs stay blocked until that IRETQ (SDM Vol 3A "Handling
 * Multiple NMIs"), so a second NMI stays pending while the first is held. */
exc_common:
    pushq %rax
    pushq %rcx
    pushq %rdx
    pushq %rbx
    pushq %rbp
    pushq %rsi
    pushq %rdi
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, %rbp
    subq $EXC_LOCALS, %rsp
    movq F_RIP(%rbp), %rax
    movq %rax, LOC_RIP(%rbp)
    call finish_interrupted_line
    incq %gs:PCPU_SEQ
    call report_exc
    cmpq $VEC_MC, F_VEC(%rbp)
    jne 1f
    call report_mce
1:  call hold_if_requested
    cmpq $VEC_MC, F_VEC(%rbp)
    jne 2f
    call clear_mce
2:  movq %rbp, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rdi
    popq %rsi
    popq %rbp
    popq %rbx
    popq %rdx
    popq %rcx
    popq %rax
    addq $16, %rsp                         /* vector and error code */
    iretq

/* If the exception interrupted `emit`, print the rest of that line now and make the
 * interrupted `emit` return as if it had finished. Exceptions arrive on instruction
 * boundaries, so the saved RIP says exactly whether the byte at %rsi was sent: only when
 * RIP is `emit_sent` (OUT done, cursor not yet advanced). Works at any nesting depth. */
finish_interrupted_line:
    movq F_RIP(%rbp), %rax
    leaq emit_loop(%rip), %rcx
    cmpq %rcx, %rax
    jb 2f
    leaq emit_end(%rip), %rcx
    cmpq %rcx, %rax
    jae 2f
    movq F_RSI(%rbp), %rsi
    movq F_RDI(%rbp), %rdi
    leaq emit_sent(%rip), %rcx
    cmpq %rcx, %rax
    jne 1f
    incq %rsi
1:  call emit
    movq F_RDI(%rbp), %rax
    movq %rax, F_RSI(%rbp)
    leaq emit_end(%rip), %rax
    movq %rax, F_RIP(%rbp)
2:  ret

report_exc:
    leaq LOC_LINE(%rbp), %rdi
    PUT_STR "VEX EXC cpu="
    PUT_DEC %gs:PCPU_CPU
    PUT_STR " seq="
    PUT_DEC %gs:PCPU_SEQ
    PUT_STR " vec="
    PUT_HEX F_VEC(%rbp)
    PUT_STR " err="
    PUT_HEX F_ERR(%rbp)
    PUT_STR " cr2="
    movq %cr2, %rax
    call fmt_hex
    PUT_STR " rip="
    PUT_HEX LOC_RIP(%rbp)
    PUT_NL
    leaq LOC_LINE(%rbp), %rsi
    call emit
    ret

/* #MC: "VEX MCE" with the number of banks whose MCi_STATUS.VAL is set, then one "VEX MCB"
 * per such bank. MCi_ADDR/MCi_MISC are read only when ADDRV/MISCV say they hold data
 * (SDM Vol 3B "IA32_MCi_STATUS MSRs", ADDRV and MISCV), otherwise reported as 0. */
report_mce:
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    movl $MSR_MCG_CAP, %ecx
    rdmsr
    andl $MCG_CAP_COUNT_MASK, %eax
    cmpl $MAX_MC_BANKS, %eax
    jbe 1f
    movl $MAX_MC_BANKS, %eax
1:  movl %eax, %r12d                       /* %r12: banks to scan */
    xorl %ebx, %ebx                        /* %rbx: bank */
    xorl %r13d, %r13d                      /* %r13: mask of banks with VAL */
    xorl %r14d, %r14d                      /* %r14: how many */
2:  cmpl %r12d, %ebx
    jae 3f
    call read_bank_status
    btq $MCI_STATUS_VAL_BIT, %rax
    jnc 21f
    btsq %rbx, %r13
    incl %r14d
21: incl %ebx
    jmp 2b
3:  movq %r13, LOC_MC_MASK(%rbp)

    leaq LOC_LINE(%rbp), %rdi
    PUT_STR "VEX MCE cpu="
    PUT_DEC %gs:PCPU_CPU
    PUT_STR " seq="
    PUT_DEC %gs:PCPU_SEQ
    PUT_STR " mcg_status="
    movl $MSR_MCG_STATUS, %ecx
    rdmsr
    shlq $32, %rdx
    orq %rdx, %rax
    call fmt_hex
    PUT_STR " banks="
    PUT_DEC %r14
    PUT_NL
    leaq LOC_LINE(%rbp), %rsi
    call emit

    xorl %ebx, %ebx
4:  cmpl %r12d, %ebx
    jae 6f
    btq %rbx, %r13
    jnc 5f
    call report_bank
5:  incl %ebx
    jmp 4b
6:  popq %r14
    popq %r13
    popq %r12
    popq %rbx
    ret

/* "VEX MCB" for bank %rbx. */
report_bank:
    pushq %r12
    leaq LOC_LINE(%rbp), %rdi
    PUT_STR "VEX MCB cpu="
    PUT_DEC %gs:PCPU_CPU
    PUT_STR " seq="
    PUT_DEC %gs:PCPU_SEQ
    PUT_STR " bank="
    PUT_DEC %rbx
    PUT_STR " status="
    call read_bank_status
    movq %rax, %r12
    call fmt_hex
    PUT_STR " addr="
    xorl %eax, %eax
    btq $MCI_STATUS_ADDRV_BIT, %r12
    jnc 1f
    movl $MC_BANK_ADDR, %ecx
    call read_bank_msr
1:  call fmt_hex
    PUT_STR " misc="
    xorl %eax, %eax
    btq $MCI_STATUS_MISCV_BIT, %r12
    jnc 2f
    movl $MC_BANK_MISC, %ecx
    call read_bank_msr
2:  call fmt_hex
    PUT_NL
    leaq LOC_LINE(%rbp), %rsi
    call emit
    popq %r12
    ret

/* %rax = MCi_STATUS for bank %rbx. Clobbers %rcx, %rdx. */
read_bank_status:
    xorl %ecx, %ecx
/* %rax = MSR (MCi_STATUS + %ecx) for bank %rbx. Clobbers %rcx, %rdx. */
read_bank_msr:
    leal MSR_MC0_STATUS(%ecx,%ebx,MC_BANK_STRIDE), %ecx
    rdmsr
    shlq $32, %rdx
    orq %rdx, %rax
    ret

/* Clear the reported banks, then MCG_STATUS: with MCIP left set, the next #MC would shut the
 * vCPU down (SDM Vol 3B "IA32_MCG_STATUS MSR", MCIP). Writing 0 to MCi_STATUS is always
 * permitted. */
clear_mce:
    movq LOC_MC_MASK(%rbp), %r8
    xorl %r9d, %r9d
1:  cmpl $MAX_MC_BANKS, %r9d
    jae 3f
    btq %r9, %r8
    jnc 2f
    leal MSR_MC0_STATUS(,%r9d,MC_BANK_STRIDE), %ecx
    xorl %eax, %eax
    xorl %edx, %edx
    wrmsr
2:  incl %r9d
    jmp 1b
3:  movl $MSR_MCG_STATUS, %ecx
    xorl %eax, %eax
    xorl %edx, %edx
    wrmsr
    ret

/* If bit `vec` of HOLD_MASK is set: report HOLD, then spin until the VMM clears it. */
hold_if_requested:
    movq F_VEC(%rbp), %rcx
    cmpq $64, %rcx
    jae 3f
    call control_block_active
    jne 3f
    movq VEX_CTL_HOLD_MASK(%rdx), %rax
    btq %rcx, %rax
    jnc 3f
    leaq LOC_LINE(%rbp), %rdi
    PUT_STR "VEX HOLD cpu="
    PUT_DEC %gs:PCPU_CPU
    PUT_STR " vec="
    PUT_HEX F_VEC(%rbp)
    PUT_NL
    leaq LOC_LINE(%rbp), %rsi
    call emit
    movq F_VEC(%rbp), %rcx
    movl $CONTROL_GPA, %edx
2:  pause
    movq VEX_CTL_HOLD_MASK(%rdx), %rax     /* a plain load each turn sees the VMM's write */
    btq %rcx, %rax
    jc 2b
3:  ret

/* ZF set when the control block carries VEX_CTL_MAGIC_VALUE. Leaves %rdx = CONTROL_GPA,
 * clobbers %rax. */
control_block_active:
    movabsq $VEX_CTL_MAGIC_VALUE, %rax
    movl $CONTROL_GPA, %edx
    cmpq %rax, VEX_CTL_MAGIC(%rdx)
    ret

/* ======================================================================================== */
/* Console                                                                                 */
/* ======================================================================================== */

/* Writes bytes [%rsi, %rdi) to the console port. Clobbers %rax, %rdx, %rsi.
 * Keep the cursor in %rsi and the end in %rdi: finish_interrupted_line relies on it. */
emit:
    movl $VEX_X86_CONSOLE_PORT, %edx
emit_loop:
    cmpq %rdi, %rsi
    jae emit_end
    movzbl (%rsi), %eax
    outb %al, %dx
emit_sent:
    incq %rsi
    jmp emit_loop
emit_end:
    ret

/* Appends the NUL-terminated string at %rsi. Clobbers %rax, %rsi. */
fmt_str:
    movb (%rsi), %al
    testb %al, %al
    jz 1f
    movb %al, (%rdi)
    incq %rsi
    incq %rdi
    jmp fmt_str
1:  ret

/* Appends %rax as 0x-prefixed lowercase hex without leading zeros. Clobbers %rax, %rcx,
 * %rdx, %r8. */
fmt_hex:
    movw $HEX_PREFIX, (%rdi)
    addq $2, %rdi
    movq %rax, %rdx
    movl $60, %ecx                         /* shift of the highest nibble */
1:  testl %ecx, %ecx
    jz 2f
    movq %rdx, %rax
    shrq %cl, %rax
    testb $0xF, %al
    jnz 2f
    subl $4, %ecx
    jmp 1b
2:  leaq hex_digits(%rip), %r8
3:  movq %rdx, %rax
    shrq %cl, %rax
    andl $0xF, %eax
    movb (%r8,%rax), %al
    movb %al, (%rdi)
    incq %rdi
    subl $4, %ecx
    jns 3b
    ret

/* Appends %rax in decimal. Clobbers %rax, %rcx, %rdx, %r8. */
fmt_dec:
    movl $10, %ecx
    xorl %r8d, %r8d
1:  xorl %edx, %edx
    divq %rcx
    pushq %rdx
    incl %r8d
    testq %rax, %rax
    jnz 1b
2:  popq %rax
    addb $ASCII_ZERO, %al
    movb %al, (%rdi)
    incq %rdi
    decl %r8d
    jnz 2b
    ret

/* ======================================================================================== */
/* Main loop (vCPU 0): heartbeat, memory workload, commands. No HLT: IF is 0, and an       */
/* injected exception must find the vCPU running.                                          */
/* ======================================================================================== */

bsp_main_loop:
    movq $0, st_heartbeat_next
    movq $0, st_dirty_next
    movq $0, st_workset_pages
    movq $0, st_cursor
    movq $1, st_pass
    movq $0, st_command_seq
    movq $0, st_touch_pages
    movq $0, st_touch_cursor
1:  call read_config
    call poll_heartbeat
    call poll_touch
    call poll_workload
    call poll_command
    pause
    jmp 1b

/* Copies the control block into cfg_*, or, when its magic is absent, the command line's
 * settings (parse_cmdline; defaults where it gave none). */
read_config:
    call control_block_active
    je 1f
    movl $cmdline_settings, %edx           /* laid out like the control block's fields */
1:  movq VEX_CTL_HEARTBEAT_MS(%rdx), %rax
    movq %rax, cfg_heartbeat_ms
    movq VEX_CTL_TSC_KHZ(%rdx), %rax
    movq %rax, cfg_tsc_khz
    movq VEX_CTL_WORKSET_PAGES(%rdx), %rax
    movq %rax, cfg_workset_pages
    movq VEX_CTL_DIRTY_PAGES_PER_SEC(%rdx), %rax
    movq %rax, cfg_dirty_rate
    movq VEX_CTL_TOUCH_PAGES(%rdx), %rax
    movq %rax, cfg_touch_pages
    cmpq $0, cfg_tsc_khz
    jne 3f
    movq $DEFAULT_TSC_KHZ, cfg_tsc_khz
3:  ret

/* Reads `key=decimal` tokens from the Multiboot command line (witness_abi.h) into
 * cmdline_settings. vCPU 0, once, before anything writes guest RAM beyond the image: the
 * loader put the string after the image (QEMU) and the workset starts at 4 MiB. A token
 * whose key is unknown (QEMU puts the image's path first) is skipped. */
parse_cmdline:
    pushq %rbx
    movl mb_info, %eax
    testl %eax, %eax
    jz 9f
    testl $MB_INFO_HAS_CMDLINE, MB_INFO_FLAGS(%rax)
    jz 9f
    movl MB_INFO_CMDLINE(%rax), %esi       /* %rsi: cursor */
1:  movb (%rsi), %al                       /* skip spaces */
    cmpb $ASCII_SPACE, %al
    jne 2f
    incq %rsi
    jmp 1b
2:  testb %al, %al
    jz 9f
    leaq cmdline_keys(%rip), %rbx          /* %rbx: {key with '=', field offset} entry */
3:  movq (%rbx), %rdi
    testq %rdi, %rdi
    jz 7f                                  /* no key matches: skip the token */
    movq %rsi, %rdx
4:  movb (%rdi), %al
    testb %al, %al
    jz 5f
    cmpb (%rdx), %al
    jne 41f
    incq %rdi
    incq %rdx
    jmp 4b
41: addq $16, %rbx
    jmp 3b
5:  xorl %eax, %eax                        /* decimal digits at %rdx */
6:  movzbl (%rdx), %ecx
    cmpl $ASCII_ZERO, %ecx
    jb 61f
    cmpl $ASCII_NINE, %ecx
    ja 61f
    subl $ASCII_ZERO, %ecx
    imulq $10, %rax
    addq %rcx, %rax
    incq %rdx
    jmp 6b
61: movq 8(%rbx), %rcx
    movq %rax, cmdline_settings(%rcx)
    movq %rdx, %rsi
7:  movb (%rsi), %al                       /* to the next space or the end */
    testb %al, %al
    jz 9f
    cmpb $ASCII_SPACE, %al
    je 1b
    incq %rsi
    jmp 7b
9:  popq %rbx
    ret

/* %rax = TSC. Clobbers %rdx. */
read_tsc:
    rdtsc
    shlq $32, %rdx
    orq %rdx, %rax
    ret

/* A '.' every heartbeat_ms. A deadline missed by more than a period (the VM was paused) is
 * moved to now + period rather than paid back in a burst. */
poll_heartbeat:
    movq cfg_heartbeat_ms, %rcx
    imulq cfg_tsc_khz, %rcx                /* ms * kHz = TSC ticks */
    testq %rcx, %rcx
    jz 4f
    call read_tsc
    movq st_heartbeat_next, %r8
    testq %r8, %r8
    jz 2f
    cmpq %r8, %rax
    jb 3f
    movl $VEX_X86_CONSOLE_PORT, %edx
    movq %rax, %r9
    movb $ASCII_DOT, %al
    outb %al, %dx
    movq %r9, %rax
    addq %rcx, %r8
    cmpq %rax, %r8
    ja 1f
2:  leaq (%rax,%rcx), %r8
1:  movq %r8, st_heartbeat_next
3:  ret
4:  movq $0, st_heartbeat_next
    ret

/* %rax = pages in the working set. Latched the first time it is nonzero, so the cursor and
 * the MEMCHECK expectation never refer to two different sizes. */
latch_workset:
    movq st_workset_pages, %rax
    testq %rax, %rax
    jnz 1f
    movq cfg_workset_pages, %rax
    cmpq $MAX_WORKSET_PAGES, %rax
    jbe 2f
    movq $MAX_WORKSET_PAGES, %rax
2:  movq %rax, st_workset_pages
1:  ret

/* Touches TOUCH_PAGES pages once (witness_abi.h), TOUCH_BATCH per turn, then reports
 * TOUCHED. The count is latched like the working set's. */
poll_touch:
    movq st_touch_pages, %rax
    testq %rax, %rax
    jnz 1f
    movq cfg_touch_pages, %rax
    testq %rax, %rax
    jz 4f
    cmpq $MAX_WORKSET_PAGES, %rax
    jbe 11f
    movq $MAX_WORKSET_PAGES, %rax
11: movq %rax, st_touch_pages
1:  movq st_touch_cursor, %rdx
    cmpq %rax, %rdx
    jae 4f
    movl $TOUCH_BATCH, %ecx
2:  movq %rdx, %r8
    shlq $PAGE_SHIFT, %r8
    leaq 1(%rdx), %r9                      /* nonzero: a page of zeros could stay unbacked */
    movq %r9, WORKSET_GPA + VEX_TOUCH_WORD_OFFSET(%r8)
    incq %rdx
    cmpq %rax, %rdx
    jae 3f
    decl %ecx
    jnz 2b
    movq %rdx, st_touch_cursor
    ret
3:  movq %rdx, st_touch_cursor
    LINE_BEGIN
    PUT_STR "VEX TOUCHED cpu="
    PUT_DEC %gs:PCPU_CPU
    PUT_STR " pages="
    PUT_DEC st_touch_pages
    LINE_END
4:  ret

/* Dirties pages at DIRTY_PAGES_PER_SEC, one deadline per page, at most WORKLOAD_MAX_BATCH
 * per turn; debt older than WORKLOAD_MAX_LAG_MS is dropped. */
poll_workload:
    pushq %r12
    pushq %r13
    pushq %r14
    movq cfg_dirty_rate, %rcx
    testq %rcx, %rcx
    jz 5f
    call latch_workset
    testq %rax, %rax
    jz 5f
    movq cfg_tsc_khz, %rax
    imulq $1000, %rax
    xorl %edx, %edx
    divq cfg_dirty_rate
    movq %rax, %r12                        /* %r12: TSC ticks per page */
    call read_tsc
    movq %rax, %r13                        /* %r13: now */
    movq st_dirty_next, %r14               /* %r14: next deadline */
    testq %r14, %r14
    jz 1f
    cmpq %r14, %r13
    jb 4f
    movq cfg_tsc_khz, %rax
    imulq $WORKLOAD_MAX_LAG_MS, %rax
    movq %r13, %rdx
    subq %r14, %rdx
    cmpq %rax, %rdx
    jbe 2f
1:  movq %r13, %r14
2:  movl $WORKLOAD_MAX_BATCH, %ecx
3:  cmpq %r14, %r13
    jb 4f
    call dirty_one_page
    addq %r12, %r14
    decl %ecx
    jnz 3b
4:  movq %r14, st_dirty_next
    jmp 6f
5:  movq $0, st_dirty_next
6:  popq %r14
    popq %r13
    popq %r12
    ret

/* Writes pass st_pass into page st_cursor (witness_abi.h): w0 = (p << 32) | k, w1 = ~w0.
 * Clobbers %rax, %rdx, %r8, %r9 (keeps %rcx). */
dirty_one_page:
    movq st_cursor, %rax
    movq %rax, %r8
    shlq $PAGE_SHIFT, %r8
    addq $WORKSET_GPA, %r8
    movq %rax, %rdx
    shlq $32, %rdx
    movl st_pass, %r9d
    orq %r9, %rdx
    movq %rdx, (%r8)
    notq %rdx
    movq %rdx, 8(%r8)
    incq %rax
    cmpq st_workset_pages, %rax
    jb 1f
    xorl %eax, %eax
    incq st_pass
1:  movq %rax, st_cursor
    ret

/* Runs the command when COMMAND_SEQ differs from the last one run (initially 0). The VMM
 * writes COMMAND before COMMAND_SEQ; x86 keeps loads in order, so COMMAND is read after. */
poll_command:
    call control_block_active
    jne 2f
    movq VEX_CTL_COMMAND_SEQ(%rdx), %rax
    cmpq st_command_seq, %rax
    je 2f
    movq %rax, st_command_seq
    pushq %r12
    movq VEX_CTL_COMMAND(%rdx), %r12
    cmpq $VEX_CMD_MEMCHECK, %r12
    jne 1f
    call run_memcheck
1:  LINE_BEGIN
    PUT_STR "VEX DONE cpu="
    PUT_DEC %gs:PCPU_CPU
    PUT_STR " cmd="
    PUT_DEC %r12
    LINE_END
    popq %r12
2:  ret

/* Checks every page of the working set: pages before the cursor hold pass k, the others
 * pass k-1 (pass 0: never written, zeros). */
run_memcheck:
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    call latch_workset
    movq %rax, %r12                        /* %r12: pages */
    xorl %r13d, %r13d                      /* %r13: bad pages */
    movl $NO_BAD_PAGE, %r14d               /* %r14: first bad page */
    movq st_cursor, %r15                   /* %r15: cursor */
    xorl %ebx, %ebx                        /* %rbx: page index */
1:  cmpq %r12, %rbx
    jae 5f
    movl st_pass, %eax
    cmpq %r15, %rbx
    jb 2f
    decl %eax
2:  xorl %edx, %edx                        /* expected w0 in %rdx, w1 in %rcx */
    xorl %ecx, %ecx
    testl %eax, %eax
    jz 3f
    movq %rbx, %rdx
    shlq $32, %rdx
    orq %rax, %rdx
    movq %rdx, %rcx
    notq %rcx
3:  movq %rbx, %r8
    shlq $PAGE_SHIFT, %r8
    addq $WORKSET_GPA, %r8
    cmpq (%r8), %rdx
    jne 31f
    cmpq 8(%r8), %rcx
    je 4f
31: incq %r13
    cmpl $NO_BAD_PAGE, %r14d
    jne 4f
    movq %rbx, %r14
4:  incq %rbx
    jmp 1b
5:  LINE_BEGIN
    PUT_STR "VEX MEMCHECK cpu="
    PUT_DEC %gs:PCPU_CPU
    PUT_STR " seq="
    PUT_DEC %gs:PCPU_SEQ
    PUT_STR " pages="
    PUT_DEC %r12
    PUT_STR " bad="
    PUT_DEC %r13
    PUT_STR " first_bad="
    PUT_HEX %r14
    LINE_END
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    ret

/* ======================================================================================== */
/* Data                                                                                    */
/* ======================================================================================== */
    .section .rodata
hex_digits:
    .ascii "0123456789abcdef"

    .data
    .p2align 3
gdt:
    .quad 0                                /* null */
    .quad DESC_CODE64                      /* SEL_CODE64 */
    .quad DESC_DATA                        /* SEL_DATA */
    .fill 2 * MAX_CPUS, 8, 0               /* SEL_TSS0 + 16*i: written by vCPU i */
gdt_end:
    .p2align 3
    .word 0                                /* aligns the base field */
gdt_pointer:
    .word gdt_end - gdt - 1
    .quad gdt
    .word 0
idt_pointer:
    .word IDT_VECTORS * IDT_GATE_SIZE - 1
    .quad idt
    .p2align 2
boot_ready:                                /* in .data, not .bss: 0 comes from the file */
    .long 0
mb_info:                                   /* Multiboot info address, 0 = none */
    .long 0

/* Settings from the command line, at the control block's field offsets so read_config
 * reads either the same way; initial values are the defaults. */
    .p2align 3
cmdline_settings:
    .org cmdline_settings + VEX_CTL_HEARTBEAT_MS, 0
    .quad DEFAULT_HEARTBEAT_MS
    .org cmdline_settings + VEX_CTL_SIZE, 0

    .section .rodata
    .p2align 3
cmdline_keys:                              /* {"key=", offset in cmdline_settings} */
    .quad 1f, VEX_CTL_HEARTBEAT_MS
    .quad 2f, VEX_CTL_TSC_KHZ
    .quad 3f, VEX_CTL_WORKSET_PAGES
    .quad 4f, VEX_CTL_DIRTY_PAGES_PER_SEC
    .quad 5f, VEX_CTL_TOUCH_PAGES
    .quad 0, 0
1:  .asciz "heartbeat_ms="
2:  .asciz "tsc_khz="
3:  .asciz "workset_pages="
4:  .asciz "dirty_pages_per_sec="
5:  .asciz "touch_pages="

    .bss
    .p2align 12
pml4:
    .skip PAGE_SIZE
pdpt:
    .skip PAGE_SIZE
pd:
    .skip MAPPED_GIB * PAGE_SIZE
idt:
    .skip IDT_VECTORS * IDT_GATE_SIZE
stacks:
    .skip MAX_CPUS * STACK_SIZE
df_stacks:
    .skip MAX_CPUS * DF_STACK_SIZE
tss_area:
    .skip MAX_CPUS * TSS_STRIDE
percpu:
    .skip MAX_CPUS * PCPU_SIZE

/* vCPU 0's main-loop state: in guest RAM, so it migrates with the memory. */
    .p2align 3
cfg_heartbeat_ms:  .skip 8
cfg_tsc_khz:       .skip 8
cfg_workset_pages: .skip 8
cfg_dirty_rate:    .skip 8
cfg_touch_pages:   .skip 8
st_heartbeat_next: .skip 8                 /* TSC deadline of the next '.', 0 = none set */
st_dirty_next:     .skip 8                 /* TSC deadline of the next page, 0 = idle */
st_workset_pages:  .skip 8                 /* latched working-set size, 0 = not yet */
st_cursor:         .skip 8                 /* next page of the current pass */
st_pass:           .skip 8                 /* current pass k, from 1 */
st_command_seq:    .skip 8                 /* COMMAND_SEQ of the last command run */
st_touch_pages:    .skip 8                 /* latched touch_pages, 0 = not yet */
st_touch_cursor:   .skip 8                 /* pages touched so far */
