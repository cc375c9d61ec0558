// x86 MSR numbers vexstate reads or writes by name (Intel SDM Vol 4, ch. 2).
#ifndef VEXSTATE_VMM_ARCH_X86_64_MSR_INDEX_H_
#define VEXSTATE_VMM_ARCH_X86_64_MSR_INDEX_H_

#include <cstdint>

namespace vexstate::x86 {

inline constexpr uint32_t kMsrIa32Tsc = 0x10;
inline constexpr uint32_t kMsrIa32TscDeadline = 0x6e0;

inline constexpr uint32_t kMsrMcgCap = 0x179;
inline constexpr uint32_t kMsrMcgStatus = 0x17a;
inline constexpr uint32_t kMsrMcgCtl = 0x17b;
inline constexpr uint32_t kMsrMcgExtCtl = 0x4d0;
// Bank i: MCi_CTL = 0x400 + 4i, then STATUS, ADDR, MISC.
inline constexpr uint32_t kMsrMc0Ctl = 0x400;
// The architectural maximum bank count: MCG_CAP[7:0] could say more, but the MCi MSRs end at
// 0x47f (0x480 starts the VMX capability MSRs).
inline constexpr uint32_t kMaxMceBanks = 32;
inline constexpr uint32_t McCtlMsr(uint32_t bank) { return kMsrMc0Ctl + 4 * bank; }
inline constexpr uint32_t McStatusMsr(uint32_t bank) { return kMsrMc0Ctl + 4 * bank + 1; }
inline constexpr uint32_t McAddrMsr(uint32_t bank) { return kMsrMc0Ctl + 4 * bank + 2; }
inline constexpr uint32_t McMiscMsr(uint32_t bank) { return kMsrMc0Ctl + 4 * bank + 3; }
// True for any MSR in the machine-check range vexstate saves explicitly.
inline constexpr bool IsMachineCheckMsr(uint32_t index) {
  return index == kMsrMcgCap || index == kMsrMcgStatus || index == kMsrMcgCtl || index == kMsrMcgExtCtl ||
         (index >= kMsrMc0Ctl && index < kMsrMc0Ctl + 4 * kMaxMceBanks);
}

}  // namespace vexstate::x86

#endif  // VEXSTATE_VMM_ARCH_X86_64_MSR_INDEX_H_
