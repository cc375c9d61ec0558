// arm64 KVM register ids (KVM_GET_REG_LIST, KVM_GET/SET_ONE_REG): the encoding,
// the ids vexstate refers to by name, and names for people.
//
// Contract: pure constexpr values and functions; no KVM, no I/O; builds and is
// tested on every host (the x86_64 <linux/kvm.h> lacks the arm64 uapi, so
// nothing here includes it). On an aarch64 build, reg_ids.cc checks every
// constant against <asm/kvm.h> at compile time.
//
// Sources: Linux Documentation/virt/kvm/api.rst, "KVM_SET_ONE_REG" (the ARM64
// id layout and the core/demux/sysreg/firmware groups) and
// arch/arm64/include/uapi/asm/kvm.h; system register encodings (op0, op1, CRn,
// CRm, op2) from the Arm Architecture Reference Manual (DDI 0487), "System
// register index".
//
// Id layout (64 bits):
//   63:56 architecture (0x60 = arm64) | 55:52 log2(size in bytes) | 27:16 group
//   | 15:0 index
// Groups: 0x10 core (struct kvm_regs, index = byte offset / 4), 0x11 demux
// (CCSIDR_EL1 per CSSELR value), 0x13 system register (index =
// op0:op1:CRn:CRm:op2), 0x14 firmware (PSCI/SMCCC pseudo-registers), 0x15 SVE,
// 0x16 firmware feature bitmaps.
#ifndef VEXSTATE_VMM_ARCH_ARM64_REG_IDS_H_
#define VEXSTATE_VMM_ARCH_ARM64_REG_IDS_H_

#include <cstddef>
#include <cstdint>
#include <string>

namespace vexstate::arm64 {

// -----------------------------------------------------------------------------
// encoding
inline constexpr uint64_t kRegArchMask = 0xff00000000000000;
inline constexpr uint64_t kRegArchArm64 = 0x6000000000000000;  // KVM_REG_ARM64
inline constexpr int kRegSizeShift = 52;
inline constexpr uint64_t kRegSizeMask = 0x00f0000000000000;
inline constexpr uint64_t kRegSizeU32 = 0x0020000000000000;
inline constexpr uint64_t kRegSizeU64 = 0x0030000000000000;
inline constexpr uint64_t kRegSizeU128 = 0x0040000000000000;
// The largest size KVM uses on arm64: an SVE Z register of 2048 bits.
inline constexpr uint64_t kRegSizeU2048 = 0x0080000000000000;
inline constexpr int kRegGroupShift = 16;
inline constexpr uint64_t kRegGroupMask =
    0x000000000fff0000;  // KVM_REG_ARM_COPROC_MASK
inline constexpr uint64_t kRegIndexMask = 0x000000000000ffff;

inline constexpr uint64_t kRegGroupCore = uint64_t{0x10} << kRegGroupShift;
inline constexpr uint64_t kRegGroupDemux = uint64_t{0x11} << kRegGroupShift;
inline constexpr uint64_t kRegGroupSysreg = uint64_t{0x13} << kRegGroupShift;
inline constexpr uint64_t kRegGroupFirmware = uint64_t{0x14} << kRegGroupShift;
inline constexpr uint64_t kRegGroupSve = uint64_t{0x15} << kRegGroupShift;
inline constexpr uint64_t kRegGroupFirmwareBitmap = uint64_t{0x16}
                                                    << kRegGroupShift;

// Bytes of the value `id` names (the size field is log2 of it).
constexpr size_t RegSizeBytes(uint64_t id) {
  return size_t{1} << ((id & kRegSizeMask) >> kRegSizeShift);
}

// True for an arm64 id whose size is one KVM can use there (4 to 256 bytes).
// KVM itself decides whether it knows the register.
constexpr bool IsArm64RegId(uint64_t id) {
  const uint64_t size = id & kRegSizeMask;
  return (id & kRegArchMask) == kRegArchArm64 && size >= kRegSizeU32 &&
         size <= kRegSizeU2048;
}

// A core register: `offset` is the byte offset of the field in struct kvm_regs.
constexpr uint64_t CoreRegId(uint32_t offset, uint64_t size) {
  return kRegArchArm64 | size | kRegGroupCore | (offset / 4);
}

// A system register by its encoding (ARM64_SYS_REG in <asm/kvm.h>): always 64
// bits.
constexpr uint64_t SysRegId(uint32_t op0, uint32_t op1, uint32_t crn,
                            uint32_t crm, uint32_t op2) {
  return kRegArchArm64 | kRegSizeU64 | kRegGroupSysreg |
         ((uint64_t{op0} & 0x3) << 14) | ((uint64_t{op1} & 0x7) << 11) |
         ((uint64_t{crn} & 0xf) << 7) | ((uint64_t{crm} & 0xf) << 3) |
         (uint64_t{op2} & 0x7);
}

// -----------------------------------------------------------------------------
// core registers
// struct kvm_regs (arch/arm64/include/uapi/asm/kvm.h):
// user_pt_regs {x0..x30, sp (SP_EL0), pc, pstate}, sp_el1, elr_el1, spsr[5],
// then user_fpsimd_state {vregs[32] (16-byte aligned), fpsr, fpcr}. The byte
// offsets:
inline constexpr uint32_t kCoreOffsetSp = 31 * 8;      // 248
inline constexpr uint32_t kCoreOffsetPc = 32 * 8;      // 256
inline constexpr uint32_t kCoreOffsetPstate = 33 * 8;  // 264
inline constexpr uint32_t kCoreOffsetSpEl1 = 34 * 8;   // 272
inline constexpr uint32_t kCoreOffsetElrEl1 = 35 * 8;  // 280
inline constexpr uint32_t kCoreOffsetSpsr = 36 * 8;  // 288, spsr[0] = SPSR_EL1
inline constexpr uint32_t kCoreOffsetVregs =
    336;  // after spsr[5] (ends at 328), 16-aligned
inline constexpr uint32_t kCoreOffsetFpsr = kCoreOffsetVregs + 32 * 16;  // 848
inline constexpr uint32_t kCoreOffsetFpcr = kCoreOffsetFpsr + 4;         // 852

constexpr uint64_t XRegId(uint32_t n) {
  return CoreRegId(n * 8, kRegSizeU64);
}  // x0..x30
inline constexpr uint64_t kRegSp =
    CoreRegId(kCoreOffsetSp, kRegSizeU64);  // SP_EL0
inline constexpr uint64_t kRegPc = CoreRegId(kCoreOffsetPc, kRegSizeU64);
inline constexpr uint64_t kRegPstate =
    CoreRegId(kCoreOffsetPstate, kRegSizeU64);
inline constexpr uint64_t kRegSpEl1 = CoreRegId(kCoreOffsetSpEl1, kRegSizeU64);
inline constexpr uint64_t kRegElrEl1 =
    CoreRegId(kCoreOffsetElrEl1, kRegSizeU64);
inline constexpr uint64_t kRegSpsrEl1 = CoreRegId(kCoreOffsetSpsr, kRegSizeU64);
constexpr uint64_t VRegId(uint32_t n) {
  return CoreRegId(kCoreOffsetVregs + n * 16, kRegSizeU128);
}
inline constexpr uint64_t kRegFpsr = CoreRegId(kCoreOffsetFpsr, kRegSizeU32);
inline constexpr uint64_t kRegFpcr = CoreRegId(kCoreOffsetFpcr, kRegSizeU32);

// -----------------------------------------------------------------------------
// system registers
inline constexpr uint64_t kRegMidrEl1 = SysRegId(3, 0, 0, 0, 0);
inline constexpr uint64_t kRegMpidrEl1 = SysRegId(3, 0, 0, 0, 5);
inline constexpr uint64_t kRegSctlrEl1 = SysRegId(3, 0, 1, 0, 0);
inline constexpr uint64_t kRegEsrEl1 = SysRegId(3, 0, 5, 2, 0);
inline constexpr uint64_t kRegFarEl1 = SysRegId(3, 0, 6, 0, 0);
inline constexpr uint64_t kRegVbarEl1 = SysRegId(3, 0, 12, 0, 0);
// DISR_EL1 (FEAT_RAS): what the guest reads is VDISR_EL2 while HCR_EL2.AMO=1,
// which KVM keeps per vCPU and exposes under DISR_EL1's encoding.
// 0x603000000013c609.
inline constexpr uint64_t kRegDisrEl1 = SysRegId(3, 0, 12, 1, 1);
// KVM's timer pseudo-registers. Two ids are swapped relative to the
// architectural encodings they reuse (a long-standing ABI quirk, kept for
// compatibility; see <asm/kvm.h>): KVM_REG_ARM_TIMER_CVAL uses CNTVCT_EL0's
// encoding and KVM_REG_ARM_TIMER_CNT CNTV_CVAL_EL0's.
inline constexpr uint64_t kRegTimerCtl = SysRegId(3, 3, 14, 3, 1);
inline constexpr uint64_t kRegTimerCval = SysRegId(3, 3, 14, 0, 2);
inline constexpr uint64_t kRegTimerCnt = SysRegId(3, 3, 14, 3, 2);

// -----------------------------------------------------------------------------
// PSTATE
// PSTATE/SPSR fields (Arm ARM C5.2.18 "SPSR_EL1").
inline constexpr uint64_t kPstateModeMask = 0x1f;  // M[4:0]; M[4] = 1: AArch32
inline constexpr uint64_t kPstateModeEl0t = 0x0;
inline constexpr uint64_t kPstateModeEl1t = 0x4;
inline constexpr uint64_t kPstateModeEl1h = 0x5;
inline constexpr uint64_t kPstateF = uint64_t{1} << 6;
inline constexpr uint64_t kPstateI = uint64_t{1} << 7;
inline constexpr uint64_t kPstateA = uint64_t{1} << 8;  // SError masked
inline constexpr uint64_t kPstateD = uint64_t{1} << 9;
inline constexpr uint64_t kPstateDaif =
    kPstateD | kPstateA | kPstateI | kPstateF;

// -----------------------------------------------------------------------------
// names
// A name for people and error messages, always followed by the id in hex:
//   "pc (0x6030000000100040)", "x5 (...)", "v31 (...)",
//   "DISR_EL1 (0x603000000013c609)", "KVM_REG_ARM_TIMER_CNT (...)",
//   "S3_0_C9_C14_1 (...)" for a system register without a name here,
//   "firmware[0x1] (...)", "CCSIDR[csselr=0x2] (...)",
//   "id 0x... (not an arm64 register id)".
std::string RegName(uint64_t id);

}  // namespace vexstate::arm64

#endif  // VEXSTATE_VMM_ARCH_ARM64_REG_IDS_H_
