// Human decoding of the x86 machine-check registers: IA32_MCi_STATUS (with the
// architectural MCA error code in bits 15:0), IA32_MCG_STATUS and IA32_MCG_CAP.
//
// Contract: pure functions of their arguments. No KVM, no I/O, no allocation
// beyond the returned strings; safe to call from any thread. Every input value
// is accepted: reserved or model-specific bits are reported, never rejected
// (validation belongs to the callers that inject these values).
//
// Source: Intel SDM Vol. 3B, Chapter 16 "Machine-Check Architecture":
//   §16.3.1.1 IA32_MCG_CAP, §16.3.1.2 IA32_MCG_STATUS,
//   §16.3.2.2 IA32_MCi_STATUS, §16.6.2 UCR error classification (S/AR),
//   §16.9 Table 16-7 (simple error codes), Table 16-8 (compound error codes)
//   and the sub-field tables that follow it (TT, LL, RRRR, PP/T/II, MMM/CCCC).
//
// AMD (APM Vol. 2 §9.3) shares MCi_STATUS bits 63:57, bits 31:0 and the TLB,
// cache and bus compound forms of the error code; its bits 56:32 differ (for
// example TCC at 55, Deferred at 44, Poison at 43). Those are not decoded
// here: read McStatusFields::other_info for AMD banks.
#ifndef VEXSTATE_VMM_ARCH_X86_64_MCE_DECODE_H_
#define VEXSTATE_VMM_ARCH_X86_64_MCE_DECODE_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace vexstate::x86 {

// ---------------------------------------------------------------------------
// IA32_MCi_STATUS bits (SDM Vol. 3B §16.3.2.2, Figure 16-6).
inline constexpr uint64_t kMciStatusVal = uint64_t{1} << 63;    // valid
inline constexpr uint64_t kMciStatusOver = uint64_t{1} << 62;   // overflow
inline constexpr uint64_t kMciStatusUc = uint64_t{1} << 61;     // uncorrected
inline constexpr uint64_t kMciStatusEn = uint64_t{1} << 60;     // enabled
inline constexpr uint64_t kMciStatusMiscv = uint64_t{1} << 59;  // MCi_MISC ok
inline constexpr uint64_t kMciStatusAddrv = uint64_t{1} << 58;  // MCi_ADDR ok
inline constexpr uint64_t kMciStatusPcc = uint64_t{1} << 57;    // ctx corrupt
// Bits 56 and 55 are S (signaling) and AR (action required) when
// MCG_CAP.SER_P is set (§16.6.2); otherwise they are part of "other info".
inline constexpr uint64_t kMciStatusS = uint64_t{1} << 56;
inline constexpr uint64_t kMciStatusAr = uint64_t{1} << 55;
// Bits 54:53: threshold-based error status when MCG_CAP.TES_P and UC=0.
inline constexpr int kMciStatusThresholdShift = 53;
inline constexpr uint64_t kMciStatusThresholdMask = uint64_t{0x3} << 53;
// Bits 52:38: corrected error count when MCG_CAP.CMCI_P; bit 52, the most
// significant bit of the 15-bit counter, is a sticky overflow bit.
inline constexpr int kMciStatusCecShift = 38;
inline constexpr uint64_t kMciStatusCecMask = uint64_t{0x7fff} << 38;
inline constexpr uint64_t kMciStatusCecOverflow = uint64_t{1} << 52;
// Bits 56:32: the SDM's "other information" field. Bits 37:32 are always
// model specific; 52:38, 54:53 and 56:55 become architectural as above.
inline constexpr int kMciStatusOtherInfoShift = 32;
inline constexpr uint64_t kMciStatusOtherInfoMask = uint64_t{0x1ffffff} << 32;
// Bits 31:16: model-specific error code (MSCOD). Bits 15:0: MCA error code.
inline constexpr uint64_t kMciStatusMscodMask = uint64_t{0xffff} << 16;
inline constexpr uint64_t kMciStatusMcaCodeMask = 0xffff;

// ---------------------------------------------------------------------------
// IA32_MCG_STATUS bits (§16.3.1.2). Bits 63:4 are reserved.
inline constexpr uint64_t kMcgStatusRipv = uint64_t{1} << 0;   // restart IP ok
inline constexpr uint64_t kMcgStatusEipv = uint64_t{1} << 1;   // error IP ok
inline constexpr uint64_t kMcgStatusMcip = uint64_t{1} << 2;   // MC in progress
inline constexpr uint64_t kMcgStatusLmceS = uint64_t{1} << 3;  // local MCE
inline constexpr uint64_t kMcgStatusDefinedMask = 0xf;

// ---------------------------------------------------------------------------
// IA32_MCG_CAP bits (§16.3.1.1). Bits 15:12 and 63:28 are reserved.
inline constexpr uint64_t kMcgCapCountMask = 0xff;           // number of banks
inline constexpr uint64_t kMcgCapCtlP = uint64_t{1} << 8;    // MCG_CTL exists
inline constexpr uint64_t kMcgCapExtP = uint64_t{1} << 9;    // ext. registers
inline constexpr uint64_t kMcgCapCmciP = uint64_t{1} << 10;  // CMCI
inline constexpr uint64_t kMcgCapTesP = uint64_t{1} << 11;   // threshold status
inline constexpr int kMcgCapExtCntShift = 16;                // 23:16
inline constexpr uint64_t kMcgCapExtCntMask = uint64_t{0xff} << 16;
inline constexpr uint64_t kMcgCapSerP = uint64_t{1} << 24;   // UCR recovery
inline constexpr uint64_t kMcgCapEmcP = uint64_t{1} << 25;   // enhanced MC
inline constexpr uint64_t kMcgCapElogP = uint64_t{1} << 26;  // ext. error log
inline constexpr uint64_t kMcgCapLmceP = uint64_t{1} << 27;  // local MCE
inline constexpr uint64_t kMcgCapDefinedMask = 0x0fff0fff;

// The MCG_CAP that the one-argument DescribeMcStatus/ClassifyMcStatus assume:
// SER_P and CMCI_P, as KVM offers them (KVM_X86_GET_MCE_CAP_SUPPORTED), so S,
// AR and the corrected error count are decoded and TES bits are not.
inline constexpr uint64_t kDefaultDescribeMcgCap = kMcgCapSerP | kMcgCapCmciP;

// ---------------------------------------------------------------------------
// IA32_MCi_STATUS, split into fields. DecodeMcStatus fills every field from
// the raw bits whatever MCG_CAP says; which of bits 56:38 are architectural
// depends on MCG_CAP (see the constants above), so callers that know MCG_CAP
// should use DescribeMcStatus(status, mcg_cap) for human output.
struct McStatusFields {
  bool val = false;    // 63: the register holds a valid error
  bool over = false;   // 62: an error was lost
  bool uc = false;     // 61: uncorrected
  bool en = false;     // 60: error reporting was enabled (MCi_CTL)
  bool miscv = false;  // 59: MCi_MISC holds information
  bool addrv = false;  // 58: MCi_ADDR holds the address
  bool pcc = false;    // 57: processor context corrupt
  bool s = false;      // 56: signaled (#MC), when MCG_CAP.SER_P
  bool ar = false;     // 55: action required, when MCG_CAP.SER_P
  // 54:53, when MCG_CAP.TES_P and UC=0: 0 no tracking, 1 green, 2 yellow.
  uint32_t threshold_status = 0;
  // 52:38 as a 15-bit value, when MCG_CAP.CMCI_P. Bit 14 of this value (bit
  // 52 of the register) is the sticky overflow bit.
  uint32_t corrected_error_count = 0;
  uint32_t other_info = 0;           // 56:32 raw (25 bits), all sub-fields in
  uint32_t model_specific_code = 0;  // 31:16 MSCOD
  uint32_t mca_error_code = 0;       // 15:0
};

McStatusFields DecodeMcStatus(uint64_t status);

// True when the register reports a valid uncorrected error (VAL=1 and UC=1).
// A VAL=0 register reports nothing, whatever its other bits say.
bool IsUncorrected(uint64_t status);

// Severity of an MCi_STATUS value, per SDM §16.6.2 (Table 16-6) when
// MCG_CAP.SER_P is set, and per UC/PCC alone otherwise.
enum class McSeverity {
  kNoError,      // VAL=0
  kCorrected,    // CE: UC=0
  kUcna,         // UC=1 PCC=0 S=0 AR=0: uncorrected, no action required
  kSrao,         // UC=1 PCC=0 S=1 AR=0: software recoverable, action optional
  kSrar,         // UC=1 PCC=0 S=1 AR=1: software recoverable, action required
  kUncorrected,  // UC=1 PCC=0 without SER_P: uncorrected, context intact
  kFatal,        // UC=1 PCC=1: processor context corrupt, restart unreliable
  kInvalid,      // UC=1 PCC=0 S=0 AR=1 (SER_P): not a defined combination
};
McSeverity ClassifyMcStatus(uint64_t status,
                            uint64_t mcg_cap = kDefaultDescribeMcgCap);
// "none", "CE", "UCNA", "SRAO", "SRAR", "UC", "UC/PCC" or "invalid".
std::string_view McSeverityName(McSeverity severity);

// One line for people, for example
//   DescribeMcStatus(0xbc0000000000009f) ==
//   "VAL|UC|EN|MISCV|ADDRV mca=0x009f (memory controller error MMM=RD "
//   "CCCC=unspecified)"
// Layout: the set flags of bits 63:55 joined with '|', highest first (S and
// AR only when mcg_cap has SER_P); "mca=0x%04x (<DescribeMcaErrorCode>)";
// then, each only when nonzero: "mscod=0x%04x"; "cec=<n>" (CMCI_P; with
// " (overflow)" when bit 52 is set); "threshold=<none|green|yellow|reserved>"
// (TES_P and UC=0); "other=0x%x" = the bits of 56:32 not decoded under this
// mcg_cap, shifted down by 32. A value with VAL=0 reads
// "VAL=0 (no valid error)", followed by " raw=0x%016x" when nonzero.
std::string DescribeMcStatus(uint64_t status,
                             uint64_t mcg_cap = kDefaultDescribeMcgCap);

// ---------------------------------------------------------------------------
// The architectural MCA error code (MCi_STATUS[15:0]), SDM Tables 16-7/16-8.
enum class McaErrorClass {
  // Simple error codes (Table 16-7).
  kNoError,                        // 0x0000
  kUnclassified,                   // 0x0001
  kMicrocodeRomParity,             // 0x0002
  kExternal,                       // 0x0003 (BINIT# from another processor)
  kFrc,                            // 0x0004 functional redundancy check
  kInternalParity,                 // 0x0005
  kSmmHandlerCodeAccessViolation,  // 0x0006
  kInternalTimer,                  // 0x0400
  kIo,                             // 0x0e0b
  kInternalUnclassified,           // 0000 01xx xxxx xxxx, some x = 1
  // Compound error codes (Table 16-8); bit 12 is F (filtering) in all.
  kGenericCacheHierarchy,  // 000F 0000 0000 11LL
  kTlb,                    // 000F 0000 0001 TTLL
  kMemoryController,       // 000F 0000 1MMM CCCC
  kCacheHierarchy,         // 000F 0001 RRRR TTLL
  kExtendedMemory,         // 000F 0010 1MMM CCCC
  kBusInterconnect,        // 000F 1PPT RRRR IILL
  kUnknown,                // no architectural encoding matches
};

// Sub-field mnemonics (SDM tables after Table 16-8):
//   TT   0 I (instruction), 1 D (data), 2 G (generic), 3 reserved
//   LL   0 L0, 1 L1, 2 L2, 3 LG (generic)
//   RRRR 0 ERR, 1 RD, 2 WR, 3 DRD (data read), 4 DWR (data write),
//        5 IRD (instruction fetch), 6 PREFETCH, 7 EVICT, 8 SNOOP, 9-15 reserved
//   PP   0 SRC (local processor originated), 1 RES (responded),
//        2 OBS (observed as third party), 3 GEN (generic)
//   T    1 TIMEOUT, 0 NOTIMEOUT
//   II   0 M (memory), 1 reserved, 2 IO, 3 OTHER
//   MMM  0 GEN, 1 RD, 2 WR, 3 AC (address/command), 4 MS (scrubbing),
//        5-7 reserved
//   CCCC 0-14 channel number, 15 channel not specified
struct McaErrorCode {
  uint32_t raw = 0;
  McaErrorClass error_class = McaErrorClass::kUnknown;
  bool compound = false;
  bool filtered = false;  // F, bit 12 (compound codes only)
  // Sub-fields; each meaningful only for the classes whose form has it.
  uint32_t tt = 0;
  uint32_t ll = 0;
  uint32_t rrrr = 0;
  uint32_t pp = 0;
  uint32_t t = 0;
  uint32_t ii = 0;
  uint32_t mmm = 0;
  uint32_t cccc = 0;
};

McaErrorCode DecodeMcaErrorCode(uint32_t code);  // bits above 15 ignored
// "memory controller error", "TLB error", "unclassified", ...
std::string_view McaErrorClassName(McaErrorClass error_class);
// The class name, then the sub-fields by mnemonic, then " F=1" when filtered:
//   0x0135 -> "cache hierarchy error TT=D LL=L1 RRRR=DRD"
//   0x009f -> "memory controller error MMM=RD CCCC=unspecified"
//   0x0e0f -> "bus/interconnect error PP=GEN T=NOTIMEOUT RRRR=ERR II=OTHER
//   LL=LG" 0x0005 -> "internal parity error"
// Reserved sub-field values read "reserved(<n>)".
std::string DescribeMcaErrorCode(uint32_t code);

// ---------------------------------------------------------------------------
// IA32_MCG_STATUS.
struct McgStatusFields {
  bool ripv = false;
  bool eipv = false;
  bool mcip = false;
  bool lmce_s = false;
  uint64_t reserved = 0;  // bits 63:4 as they are in the value (unshifted)
};
McgStatusFields DecodeMcgStatus(uint64_t mcg_status);
// "RIPV|MCIP" for 0x5; "none" for 0; " reserved=0x%x" appended when any
// reserved bit is set (unshifted).
std::string DescribeMcgStatus(uint64_t mcg_status);

// ---------------------------------------------------------------------------
// IA32_MCG_CAP.
struct McgCapFields {
  uint32_t count = 0;  // 7:0 number of reporting banks
  bool ctl_p = false;
  bool ext_p = false;
  bool cmci_p = false;
  bool tes_p = false;
  uint32_t ext_cnt = 0;  // 23:16, meaningful when ext_p
  bool ser_p = false;
  bool emc_p = false;
  bool elog_p = false;
  bool lmce_p = false;
  uint64_t reserved = 0;  // bits 15:12 and 63:28 (unshifted)
};
McgCapFields DecodeMcgCap(uint64_t mcg_cap);
// "count=32 CTL_P" for 0x120; "count=0 CTL_P|SER_P" for 0x1000100;
// " ext_cnt=<n>" after the flags when EXT_P; " reserved=0x%x" when set.
std::string DescribeMcgCap(uint64_t mcg_cap);

}  // namespace vexstate::x86

#endif  // VEXSTATE_VMM_ARCH_X86_64_MCE_DECODE_H_
