/* The contract between a witness guest and the VMM that runs it (x86_64 and arm64).
 *
 * Included from assembly (.S, through cpp) and from C++: only #defines here.
 *
 * REPORTS (guest -> host). The guest writes text lines, one byte per access, to its console:
 *   x86_64: port VEX_X86_CONSOLE_PORT (COM1's data register, so QEMU `-serial` shows them too)
 *   arm64:  byte stores to MMIO address VEX_ARM64_CONSOLE_MMIO
 * A line is "VEX <KIND> key=value key=value ...\n". Values shown as <n> or <i> (cpu, seq, bank,
 * pages, bad, cmd) and banks= are decimal; all other values are lowercase hex with 0x. Every
 * vCPU writes whole lines; the VMM keeps one line buffer per vCPU.
 * A single '.' outside a line is a heartbeat tick (vCPU 0 only, every heartbeat_ms).
 *
 *   VEX BOOT cpu=<n> arch=x86_64|arm64
 *   VEX READY cpu=<n>                       handlers installed, entering the main loop
 *   VEX EXC cpu=<n> seq=<n> vec=<v> err=<e> cr2=<a> rip=<a>            (x86_64, every vector)
 *   VEX MCE cpu=<n> seq=<n> mcg_status=<s> banks=<count of banks with VAL>   (x86_64, after EXC 18)
 *   VEX MCB cpu=<n> seq=<n> bank=<i> status=<s> addr=<a> misc=<m>      (one per bank with VAL)
 *   VEX SERROR cpu=<n> seq=<n> esr=<e> elr=<a> spsr=<s> disr=<d>       (arm64, SError taken)
 *   VEX SYNC cpu=<n> seq=<n> esr=<e> elr=<a> far=<a>                   (arm64, sync exception)
 *   VEX DISR cpu=<n> seq=<n> disr=<d>       (arm64: DISR_EL1 read after `esb` with SError masked)
 *   VEX UNEXPECTED cpu=<n> seq=<n> vec=<offset from VBAR_EL1> elr=<a>  (arm64: IRQ/FIQ, which
 *                                           stay masked: a guest or VMM bug if it ever shows)
 *   VEX MEMCHECK cpu=<n> seq=<n> pages=<n> bad=<n> first_bad=<page index or 0xffffffff>
 *   VEX HOLD cpu=<n> vec=<v>                the handler for <v> is now waiting (see hold_mask;
 *                                           arm64: <v> is the hold_mask bit, 0x0 SError, 0x1 sync)
 *   VEX DONE cpu=<n> cmd=<n>                a command from the control block finished
 *   VEX TOUCHED cpu=<n> pages=<n>           (x86_64) the touch_pages pass is complete: the
 *                                           guest idles from here (a benchmark's "idle after
 *                                           touching N pages" starts now)
 * `seq` counts exceptions taken by that vCPU since boot, all kinds together, starting at 1.
 * arm64 registers are reported in full (64 bits: ESR_EL1 may carry bits above 31, e.g. ISS2);
 * disr= is 0 on a CPU without FEAT_RAS, where DISR_EL1 does not exist.
 * x86_64 #MC with HOLD: the handler holds after its MCE/MCB lines and before it clears the
 * reported MCi_STATUS and MCG_STATUS, so MCIP stays set while held (another #MC then shuts the
 * vCPU down, as on hardware).
 *
 * CONTROL (host -> guest). A control block at guest-physical VEX_CONTROL_GPA that the VMM may
 * write at any time (the guest only reads it, with plain loads, so a write from the VMM while
 * the vCPUs run is seen at the next poll). All fields little-endian u64 at the offsets below.
 * Zero everywhere means "boot, report READY, idle with heartbeat", which is what QEMU gets
 * (x86_64: SeaBIOS zeroes this page; arm64 `-M virt`: QEMU puts its device tree in the first
 * MiB of RAM, over this page; it reads as zeros there). To issue a command the VMM writes
 * COMMAND (and ARG) first and COMMAND_SEQ last, with release semantics (a store-release or a
 * barrier before it): the arm64 guest loads COMMAND_SEQ with acquire semantics and only then
 * reads COMMAND.
 */
#ifndef VEXSTATE_GUESTS_COMMON_WITNESS_ABI_H_
#define VEXSTATE_GUESTS_COMMON_WITNESS_ABI_H_

#define VEX_X86_CONSOLE_PORT 0x3f8
#define VEX_ARM64_CONSOLE_MMIO 0x09000000

/* Guest-physical layout shared by both guests. Guest RAM starts at VEX_RAM_BASE
 * (x86_64: 0; arm64: 0x40000000, like QEMU's virt machine). */
#define VEX_X86_RAM_BASE 0x0
#define VEX_ARM64_RAM_BASE 0x40000000
/* Offset of the control block from the RAM base: 1 page at 64 KiB. */
#define VEX_CONTROL_OFFSET 0x10000
/* Offset of the image (x86_64: the Multiboot ELF loads at 1 MiB physical; arm64: the flat
 * witness.bin loads here and every vCPU starts at its first byte, vCPU i with
 * MPIDR_EL1.Aff0 = i as KVM assigns it). */
#define VEX_IMAGE_OFFSET 0x100000
/* The memory workload's working set starts here (offset from RAM base): 4 MiB. */
#define VEX_WORKSET_OFFSET 0x400000

/* Control block fields (byte offsets). */
#define VEX_CTL_MAGIC 0x00         /* the VMM writes VEX_CTL_MAGIC_VALUE; 0 = defaults */
#define VEX_CTL_HOLD_MASK 0x08     /* bit v set: the handler for vector v (x86) / bit 0 for
                                    * SError, bit 1 for sync (arm64) reports HOLD, then spins
                                    * until the bit is cleared, then continues */
#define VEX_CTL_HEARTBEAT_MS 0x10  /* 0 = no heartbeat */
#define VEX_CTL_TSC_KHZ 0x18       /* x86: TSC (arm64: CNTFRQ is read by the guest) for pacing */
#define VEX_CTL_WORKSET_PAGES 0x20 /* 4 KiB pages dirtied by the workload, from VEX_WORKSET_OFFSET */
#define VEX_CTL_DIRTY_PAGES_PER_SEC 0x28 /* 0 = workload off */
#define VEX_CTL_COMMAND_SEQ 0x30   /* the guest runs `command` when this differs from the last
                                    * value it ran (initially 0), then DONE. Write COMMAND and
                                    * ARG first, COMMAND_SEQ last. */
#define VEX_CTL_COMMAND 0x38       /* one of VEX_CMD_* */
#define VEX_CTL_ARG 0x40           /* command argument */
#define VEX_CTL_TOUCH_PAGES 0x48   /* x86_64: write once to this many 4 KiB pages from
                                    * VEX_WORKSET_OFFSET (the u64 at +VEX_TOUCH_WORD_OFFSET of
                                    * each, so the workload pattern is untouched), a few per
                                    * main-loop turn, then report TOUCHED; latched like
                                    * WORKSET_PAGES. 0 = none */
#define VEX_CTL_SIZE 0x50

/* The same settings without a control block: the x86_64 witness reads the Multiboot command
 * line (QEMU `-append`), tokens `key=decimal` separated by spaces, unknown tokens ignored:
 *   heartbeat_ms= tsc_khz= workset_pages= dirty_pages_per_sec= touch_pages=
 * They apply only while the control block's magic is absent; a control block wins. Without
 * either, heartbeat_ms is 100 and tsc_khz an assumed 2 GHz (give tsc_khz for exact pacing). */
#define VEX_TOUCH_WORD_OFFSET 0x10

#define VEX_CTL_MAGIC_VALUE 0x5645585354415445 /* "VEXSTATE" */

/* Commands (vCPU 0 executes them unless noted). */
#define VEX_CMD_NONE 0
#define VEX_CMD_MEMCHECK 1        /* verify the workload pattern, report MEMCHECK */
#define VEX_CMD_UNMASK_SERROR 2   /* arm64: msr daifclr, #4 (every vCPU), then mask again after 1 ms */
#define VEX_CMD_ESB_READ_DISR 3   /* arm64: with SError masked: esb; report DISR; clear DISR */
#define VEX_CMD_READ_DISR 4       /* arm64: report DISR_EL1 as is (no esb) */

/* The workload pattern: pass k over the working set writes, into the first two u64 of page p,
 *   w0 = (p << 32) | k   and   w1 = ~w0.
 * A page the workload has not yet reached holds zeros (pass 0). MEMCHECK knows the cursor, so
 * it checks each page exactly: p < cursor -> pass k, else pass k-1 (0 = untouched zeros).
 * The x86_64 guest latches WORKSET_PAGES the first time it uses a nonzero value (workload start or
 * MEMCHECK); later changes to it are ignored, so the check never mixes two sizes. */

#endif /* VEXSTATE_GUESTS_COMMON_WITNESS_ABI_H_ */
