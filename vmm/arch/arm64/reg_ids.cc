#include "vmm/arch/arm64/reg_ids.h"

#include "absl/strings/str_format.h"

#if defined(__aarch64__)
#include <cstddef>

#include "vmm/kvm/linux_kvm.h"

// The hand-written encodings above must be exactly the kernel's (they are used
// on x86 hosts, where <asm/kvm.h> for arm64 is not available, to read
// snapshots).
namespace vexstate::arm64 {
static_assert(kRegArchArm64 == KVM_REG_ARM64);
static_assert(kRegSizeU32 == KVM_REG_SIZE_U32 &&
              kRegSizeU64 == KVM_REG_SIZE_U64 &&
              kRegSizeU128 == KVM_REG_SIZE_U128 &&
              kRegSizeU2048 == KVM_REG_SIZE_U2048);
static_assert(kRegGroupMask == KVM_REG_ARM_COPROC_MASK);
static_assert(kRegGroupCore == KVM_REG_ARM_CORE &&
              kRegGroupDemux == KVM_REG_ARM_DEMUX &&
              kRegGroupSysreg == KVM_REG_ARM64_SYSREG &&
              kRegGroupFirmware == KVM_REG_ARM_FW &&
              kRegGroupSve == KVM_REG_ARM64_SVE &&
              kRegGroupFirmwareBitmap == KVM_REG_ARM_FW_FEAT_BMAP);
static_assert(kCoreOffsetSp == offsetof(kvm_regs, regs.sp));
static_assert(kCoreOffsetPc == offsetof(kvm_regs, regs.pc));
static_assert(kCoreOffsetPstate == offsetof(kvm_regs, regs.pstate));
static_assert(kCoreOffsetSpEl1 == offsetof(kvm_regs, sp_el1));
static_assert(kCoreOffsetElrEl1 == offsetof(kvm_regs, elr_el1));
static_assert(kCoreOffsetSpsr == offsetof(kvm_regs, spsr));
static_assert(kCoreOffsetVregs == offsetof(kvm_regs, fp_regs.vregs));
static_assert(kCoreOffsetFpsr == offsetof(kvm_regs, fp_regs.fpsr));
static_assert(kCoreOffsetFpcr == offsetof(kvm_regs, fp_regs.fpcr));
static_assert(kRegDisrEl1 == ARM64_SYS_REG(3, 0, 12, 1, 1));
static_assert(kRegTimerCtl == KVM_REG_ARM_TIMER_CTL &&
              kRegTimerCval == KVM_REG_ARM_TIMER_CVAL &&
              kRegTimerCnt == KVM_REG_ARM_TIMER_CNT);
static_assert(kPstateModeEl1h == PSR_MODE_EL1h && kPstateA == PSR_A_BIT &&
              kPstateD == PSR_D_BIT && kPstateI == PSR_I_BIT &&
              kPstateF == PSR_F_BIT);
}  // namespace vexstate::arm64
#endif

namespace vexstate::arm64 {

namespace {

struct NamedSysreg {
  uint64_t id;
  const char* name;
};

// The system registers vexstate's messages name; any other reads as
// S<op0>_<op1>_C<n>_C<m>_<op2>.
constexpr NamedSysreg kNamedSysregs[] = {
    {kRegMidrEl1, "MIDR_EL1"},
    {kRegMpidrEl1, "MPIDR_EL1"},
    {kRegSctlrEl1, "SCTLR_EL1"},
    {SysRegId(3, 0, 2, 0, 0), "TTBR0_EL1"},
    {SysRegId(3, 0, 2, 0, 1), "TTBR1_EL1"},
    {SysRegId(3, 0, 2, 0, 2), "TCR_EL1"},
    {SysRegId(3, 0, 5, 1, 0), "AFSR0_EL1"},
    {SysRegId(3, 0, 5, 1, 1), "AFSR1_EL1"},
    {kRegEsrEl1, "ESR_EL1"},
    {kRegFarEl1, "FAR_EL1"},
    {SysRegId(3, 0, 7, 4, 0), "PAR_EL1"},
    {SysRegId(3, 0, 10, 2, 0), "MAIR_EL1"},
    {kRegVbarEl1, "VBAR_EL1"},
    {kRegDisrEl1, "DISR_EL1"},
    {SysRegId(3, 0, 13, 0, 4), "TPIDR_EL1"},
    {SysRegId(3, 0, 1, 0, 2), "CPACR_EL1"},
    {SysRegId(3, 0, 0, 4, 0), "ID_AA64PFR0_EL1"},
    {SysRegId(3, 3, 14, 0, 0), "CNTFRQ_EL0"},
    {kRegTimerCtl, "KVM_REG_ARM_TIMER_CTL"},
    {kRegTimerCval, "KVM_REG_ARM_TIMER_CVAL"},
    {kRegTimerCnt, "KVM_REG_ARM_TIMER_CNT"},
};

std::string CoreRegName(uint64_t id) {
  const uint32_t offset = static_cast<uint32_t>(id & kRegIndexMask) * 4;
  const size_t size = RegSizeBytes(id);
  if (offset < kCoreOffsetSp && offset % 8 == 0 && size == 8)
    return absl::StrFormat("x%u", offset / 8);
  if (offset == kCoreOffsetSp && size == 8) return "sp";
  if (offset == kCoreOffsetPc && size == 8) return "pc";
  if (offset == kCoreOffsetPstate && size == 8) return "pstate";
  if (offset == kCoreOffsetSpEl1 && size == 8) return "sp_el1";
  if (offset == kCoreOffsetElrEl1 && size == 8) return "elr_el1";
  if (offset >= kCoreOffsetSpsr && offset < kCoreOffsetSpsr + 5 * 8 &&
      offset % 8 == 0 && size == 8) {
    return absl::StrFormat("spsr[%u]", (offset - kCoreOffsetSpsr) / 8);
  }
  if (offset >= kCoreOffsetVregs && offset < kCoreOffsetFpsr &&
      (offset - kCoreOffsetVregs) % 16 == 0 && size == 16) {
    return absl::StrFormat("v%u", (offset - kCoreOffsetVregs) / 16);
  }
  if (offset == kCoreOffsetFpsr && size == 4) return "fpsr";
  if (offset == kCoreOffsetFpcr && size == 4) return "fpcr";
  return absl::StrFormat("core[offset %u, %u bytes]", offset, size);
}

std::string SysregName(uint64_t id) {
  for (const NamedSysreg& reg : kNamedSysregs) {
    if (reg.id == id) return reg.name;
  }
  return absl::StrFormat("S%u_%u_C%u_C%u_%u", (id >> 14) & 0x3,
                         (id >> 11) & 0x7, (id >> 7) & 0xf, (id >> 3) & 0xf,
                         id & 0x7);
}

}  // namespace

std::string RegName(uint64_t id) {
  if (!IsArm64RegId(id))
    return absl::StrFormat("id 0x%016x (not an arm64 register id)", id);
  std::string name;
  switch (id & kRegGroupMask) {
    case kRegGroupCore:
      name = CoreRegName(id);
      break;
    case kRegGroupDemux:
      name = absl::StrFormat("CCSIDR[csselr=0x%x]", id & 0xff);
      break;
    case kRegGroupSysreg:
      name = SysregName(id);
      break;
    case kRegGroupFirmware:
      name = absl::StrFormat("firmware[0x%x]", id & kRegIndexMask);
      break;
    case kRegGroupSve:
      name = absl::StrFormat("sve[0x%x]", id & kRegIndexMask);
      break;
    case kRegGroupFirmwareBitmap:
      name = absl::StrFormat("firmware_bitmap[0x%x]", id & kRegIndexMask);
      break;
    default:
      name = absl::StrFormat("group 0x%x index 0x%x",
                             (id & kRegGroupMask) >> kRegGroupShift,
                             id & kRegIndexMask);
  }
  return absl::StrFormat("%s (0x%016x)", name, id);
}

}  // namespace vexstate::arm64
