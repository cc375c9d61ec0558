// Human decoding of the arm64 Exception Syndrome Register (ESR_ELx) and of
// DISR_EL1, plus the SError-syndrome rules KVM applies to
// KVM_SET_VCPU_EVENTS (serror_esr).
//
// Contract: pure functions of their arguments; no KVM, no I/O; safe to call
// from any thread. Every 64-bit value is accepted: unallocated ECs, reserved
// fault codes and RES0 bits are reported, never rejected. Builds for both
// host and aarch64 targets.
//
// Source: Arm Architecture Reference Manual for A-profile (DDI 0487),
// "ESR_ELx, Exception Syndrome Register" (D17.2.37 ESR_EL1 in issue I.a;
// later issues renumber it) and its ISS encodings: "ISS encoding for an
// SError exception", "... for an exception from a Data Abort", "... from an
// Instruction Abort", "... from MSR, MRS, or System instruction execution in
// AArch64 state"; "DISR_EL1, Deferred Interrupt Status Register".
//
// ESR_ELx layout decoded here:
//   63:56 RES0 | 55:32 ISS2 | 31:26 EC | 25 IL | 24:0 ISS
// ISS2 is bits 36:32 in DDI 0487 I.a (FEAT_LS64); later issues widen it to
// 55:32 (FEAT_GCS, FEAT_S1POE, FEAT_THE, ...). Decoding 55:32 loses nothing
// for older values, whose bits 55:37 are RES0.
#ifndef VEXSTATE_VMM_ARCH_ARM64_ESR_DECODE_H_
#define VEXSTATE_VMM_ARCH_ARM64_ESR_DECODE_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace vexstate::arm64 {

// ---------------------------------------------------------------------------
// ESR_ELx fields.
inline constexpr int kEsrEcShift = 26;
inline constexpr uint64_t kEsrEcMask = uint64_t{0x3f} << 26;
inline constexpr uint64_t kEsrIl = uint64_t{1} << 25;
inline constexpr uint64_t kEsrIssMask = 0x1ffffff;  // 24:0
inline constexpr int kEsrIss2Shift = 32;
inline constexpr uint64_t kEsrIss2Mask = uint64_t{0xffffff} << 32;  // 55:32
inline constexpr uint64_t kEsrRes0Mask = uint64_t{0xff} << 56;      // 63:56

// Exception classes referred to by name elsewhere in vexstate.
inline constexpr uint32_t kEcUnknown = 0x00;
inline constexpr uint32_t kEcWfx = 0x01;
inline constexpr uint32_t kEcSvc32 = 0x11;
inline constexpr uint32_t kEcHvc32 = 0x12;
inline constexpr uint32_t kEcSmc32 = 0x13;
inline constexpr uint32_t kEcSvc64 = 0x15;
inline constexpr uint32_t kEcHvc64 = 0x16;
inline constexpr uint32_t kEcSmc64 = 0x17;
inline constexpr uint32_t kEcSys64 = 0x18;
inline constexpr uint32_t kEcIabtLow = 0x20;
inline constexpr uint32_t kEcIabtCur = 0x21;
inline constexpr uint32_t kEcDabtLow = 0x24;
inline constexpr uint32_t kEcDabtCur = 0x25;
inline constexpr uint32_t kEcSerror = 0x2f;
inline constexpr uint32_t kEcBrk64 = 0x3c;

struct EsrFields {
  uint32_t ec = 0;    // 31:26
  bool il = false;    // 25: 32-bit instruction (always 1 for SError, aborts)
  uint32_t iss = 0;   // 24:0
  uint32_t iss2 = 0;  // 55:32
  uint32_t res0 = 0;  // 63:56, shifted down; nonzero only for bad input
};
EsrFields DecodeEsr(uint64_t esr);

// The name of every EC the Arm ARM allocates, for example
// 0x00 "Unknown reason", 0x15 "SVC in AArch64", 0x24 "Data Abort from a
// lower EL", 0x25 "Data Abort, same EL", 0x2f "SError interrupt";
// "unallocated" for the others (0x02, 0x0b, 0x0f, 0x10, 0x23, 0x29-0x2b,
// 0x2e, 0x36, 0x37, 0x39, 0x3b, 0x3e, 0x3f). Bits above 5 are ignored.
std::string_view EcName(uint32_t ec);
bool IsAllocatedEc(uint32_t ec);

// ---------------------------------------------------------------------------
// ISS for an SError exception (EC 0x2f).
//   24 IDS: 1 = ISS[23:0] is an IMPLEMENTATION DEFINED syndrome; the fields
//      below exist only when IDS = 0.
//   17:16 WU (FEAT_RASv2), 13 IESB (FEAT_IESB), 12:10 AET, 9 EA,
//   7 WnRV, 6 WnR (FEAT_RASv2), 5:0 DFSC; 23:18, 15:14 and 8 are RES0.
// AET, EA and IESB are defined only when DFSC == 0x11.
inline constexpr uint32_t kSerrorIssIds = 1u << 24;
inline constexpr uint32_t kSerrorIssRes0Mask = 0x00fcc100;
inline constexpr uint32_t kSerrorDfscUncategorized = 0x00;
inline constexpr uint32_t kSerrorDfscAsync = 0x11;

struct SerrorIss {
  bool ids = false;
  uint32_t impdef_syndrome = 0;  // 23:0, when ids
  uint32_t wu = 0;               // 17:16
  bool iesb = false;             // 13
  uint32_t aet = 0;              // 12:10
  bool ea = false;               // 9
  bool wnrv = false;             // 7
  bool wnr = false;              // 6
  uint32_t dfsc = 0;             // 5:0
  uint32_t res0 = 0;  // ISS & kSerrorIssRes0Mask when !ids (unshifted)
};
SerrorIss DecodeSerrorIss(uint32_t iss);  // bits above 24 ignored

// Asynchronous Error Type: 0 "UC", 1 "UEU", 2 "UEO", 3 "UER", 6 "CE"; ""
// for the reserved values 4, 5, 7.
std::string_view AetName(uint32_t aet);
// 0 "uncontainable", 1 "unrecoverable state", 2 "restartable state",
// 3 "recoverable state", 6 "corrected", otherwise "reserved".
std::string_view AetDescription(uint32_t aet);
// 0x00 "uncategorized", 0x11 "asynchronous SError interrupt", otherwise
// "reserved".
std::string_view SerrorDfscName(uint32_t dfsc);

// ---------------------------------------------------------------------------
// ISS for Data Aborts (EC 0x24/0x25) and Instruction Aborts (EC 0x20/0x21).
//   24 ISV, 23:22 SAS, 21 SSE, 20:16 SRT, 15 SF, 14 AR: data aborts with
//      ISV = 1 only (with ISV = 0 these bits are RES0 or feature specific).
//   13 VNCR (data, FEAT_NV2), 12:11 SET (FEAT_RAS, synchronous external
//   aborts) or LST (FEAT_LS64), 10 FnV, 9 EA, 8 CM (data), 7 S1PTW,
//   6 WnR (data), 5:0 DFSC/IFSC.
struct AbortIss {
  bool isv = false;
  uint32_t sas = 0;  // 0 byte, 1 halfword, 2 word, 3 doubleword
  bool sse = false;
  uint32_t srt = 0;
  bool sf = false;
  bool ar = false;
  bool vncr = false;
  uint32_t set = 0;  // 0 UER, 2 UC, 3 UEO, 1 reserved
  bool fnv = false;
  bool ea = false;
  bool cm = false;
  bool s1ptw = false;
  bool wnr = false;
  uint32_t fsc = 0;
};
AbortIss DecodeAbortIss(uint32_t iss);  // bits above 24 ignored

// The fault status code's meaning, e.g. 0x05 "translation fault, level 1",
// 0x0b "access flag fault, level 3", 0x0f "permission fault, level 3",
// 0x10 "synchronous external abort", 0x21 "alignment fault"; "reserved"
// for unassigned codes. Codes that exist only for data aborts (0x11 tag
// check, 0x21 alignment, 0x35 unsupported exclusive/atomic) read "reserved"
// when data_abort is false.
std::string_view FaultStatusName(uint32_t fsc, bool data_abort);
// True for the synchronous external abort codes (0x10, 0x12-0x17), the
// ones for which ISS[12:11] is SET.
bool IsSynchronousExternalAbort(uint32_t fsc);
// SET: 0 "UER: recoverable state", 2 "UC: uncontainable",
// 3 "UEO: restartable state", 1 "reserved".
std::string_view SetName(uint32_t set);

// ---------------------------------------------------------------------------
// One line for people. Always "EC=0x%02x (<EcName>) IL=<0|1> ISS=0x%06x",
// then per EC:
//   SError, IDS=1: " IDS=1 (IMPLEMENTATION DEFINED syndrome 0x%06x)"
//   SError, IDS=0: " IDS=0[ WU=0b..] IESB=<b> AET=0b<bbb>[ (<name>: <desc>)]
//                  EA=<b>[ WnRV=<b> WnR=<b>] DFSC=0x%02x (<name>)[ RES0=0x..]"
//                  (AET is named only when DFSC == 0x11; the FEAT_RASv2
//                  fields only when one of them is nonzero)
//   Data Abort:    " ISV=<b>[ SAS=0b<bb> (<size>) SSE SRT SF AR][ VNCR=1]
//                  [ SET=0b<bb> (<name>)] FnV EA CM S1PTW WnR
//                  DFSC=0x%02x (<name>)"
//   Instr. Abort:  "[ SET=..] FnV EA S1PTW IFSC=0x%02x (<name>)"
//   SVC/HVC (AArch32 and AArch64), SMC64: " imm16=0x%04x"
//   BRK64: " comment=0x%04x"
//   MSR/MRS (0x18): " sysreg=S<op0>_<op1>_C<crn>_C<crm>_<op2> Rt=<n>
//                   dir=<read|write>"
//   WF*: " TI=<WFI|WFE|WFIT|WFET>"
// and finally " ISS2=0x%x" when ISS2 is nonzero and " RES0[63:56]=0x%02x"
// when those bits are set. Examples:
//   0xbe001234 -> "EC=0x2f (SError interrupt) IL=1 ISS=0x001234 IDS=0 IESB=0
//                  AET=0b100 EA=1 DFSC=0x34 (reserved)"
//   0x96000045 -> "EC=0x25 (Data Abort, same EL) IL=1 ISS=0x000045 ISV=0
//                  FnV=0 EA=0 CM=0 S1PTW=0 WnR=1 DFSC=0x05 (translation
//                  fault, level 1)"
std::string DescribeEsr(uint64_t esr);

// DISR_EL1 (as KVM exposes VDISR_EL2 through ONE_REG):
//   31 A (an SError was deferred by ESB), 24 IDS, then as the SError ISS
//   without IESB. A=0 reads "A=0 (no SError deferred)" (plus " raw=0x%x"
//   when nonzero); A=1 reads "A=1 " followed by the SError fields as in
//   DescribeEsr, e.g. 0x80000c11 -> "A=1 IDS=0 AET=0b011 (UER: recoverable
//   state) EA=0 DFSC=0x11 (asynchronous SError interrupt)".
inline constexpr uint64_t kDisrA = uint64_t{1} << 31;
std::string DescribeDisr(uint64_t disr);

// ---------------------------------------------------------------------------
// KVM_SET_VCPU_EVENTS serror_esr rules (arch/arm64/kvm/guest.c): with
// serror_has_esr = 1 KVM takes ISS bits 24:0 and returns EINVAL when any bit
// above is set (bit 25 and up), although api.rst speaks of 24 bits; it also
// returns EINVAL when the host lacks FEAT_RAS. With serror_has_esr = 0 KVM
// injects ISS kSerrorIssIds (0x1000000: IDS, IMPLEMENTATION DEFINED).
inline constexpr uint64_t kVsesrIssMask = 0x1ffffff;

constexpr bool IsValidSerrorIss(uint64_t iss) {
  return (iss & ~kVsesrIssMask) == 0;
}

// The ESR_EL1 the guest reads when it takes the virtual SError on a FEAT_RAS
// host (VSESR_EL2 supplies the ISS): EC 0x2f, IL 1, and the ISS.
// 0x1234 -> 0xbe001234; 0x1000000 -> 0xbf000000.
// Bits of `iss` outside kVsesrIssMask are dropped (KVM would refuse them;
// validate with IsValidSerrorIss first).
constexpr uint64_t SerrorEsrAsSeenByGuest(uint64_t iss) {
  return (uint64_t{kEcSerror} << kEsrEcShift) | kEsrIl | (iss & kVsesrIssMask);
}

}  // namespace vexstate::arm64

#endif  // VEXSTATE_VMM_ARCH_ARM64_ESR_DECODE_H_
