#include "vmm/arch/x86_64/mce_decode.h"

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"

namespace vexstate::x86 {
namespace {

bool Bit(uint64_t value, uint64_t mask) { return (value & mask) != 0; }

uint32_t Field(uint64_t value, int shift, uint64_t width_mask) {
  return static_cast<uint32_t>((value >> shift) & width_mask);
}

// Sub-field mnemonics, SDM Vol. 3B tables following Table 16-8.
std::string Tt(uint32_t tt) {
  static constexpr std::string_view kNames[] = {"I", "D", "G"};
  if (tt < 3) return std::string(kNames[tt]);
  return absl::StrFormat("reserved(%u)", tt);
}

std::string Ll(uint32_t ll) {
  static constexpr std::string_view kNames[] = {"L0", "L1", "L2", "LG"};
  return std::string(kNames[ll & 3]);
}

std::string Rrrr(uint32_t rrrr) {
  static constexpr std::string_view kNames[] = {
      "ERR", "RD", "WR", "DRD", "DWR", "IRD", "PREFETCH", "EVICT", "SNOOP"};
  if (rrrr < 9) return std::string(kNames[rrrr]);
  return absl::StrFormat("reserved(%u)", rrrr);
}

std::string Pp(uint32_t pp) {
  static constexpr std::string_view kNames[] = {"SRC", "RES", "OBS", "GEN"};
  return std::string(kNames[pp & 3]);
}

std::string T(uint32_t t) { return t != 0 ? "TIMEOUT" : "NOTIMEOUT"; }

std::string Ii(uint32_t ii) {
  static constexpr std::string_view kNames[] = {"M", "reserved(1)", "IO",
                                                "OTHER"};
  return std::string(kNames[ii & 3]);
}

std::string Mmm(uint32_t mmm) {
  static constexpr std::string_view kNames[] = {"GEN", "RD", "WR", "AC", "MS"};
  if (mmm < 5) return std::string(kNames[mmm]);
  return absl::StrFormat("reserved(%u)", mmm);
}

std::string Cccc(uint32_t cccc) {
  if (cccc == 0xf) return "unspecified";
  return absl::StrFormat("%u", cccc);
}

}  // namespace

// ---------------------------------------------------------------------------
// IA32_MCi_STATUS

McStatusFields DecodeMcStatus(uint64_t status) {
  McStatusFields f;
  f.val = Bit(status, kMciStatusVal);
  f.over = Bit(status, kMciStatusOver);
  f.uc = Bit(status, kMciStatusUc);
  f.en = Bit(status, kMciStatusEn);
  f.miscv = Bit(status, kMciStatusMiscv);
  f.addrv = Bit(status, kMciStatusAddrv);
  f.pcc = Bit(status, kMciStatusPcc);
  f.s = Bit(status, kMciStatusS);
  f.ar = Bit(status, kMciStatusAr);
  f.threshold_status = Field(status, kMciStatusThresholdShift, 0x3);
  f.corrected_error_count = Field(status, kMciStatusCecShift, 0x7fff);
  f.other_info = Field(status, kMciStatusOtherInfoShift, 0x1ffffff);
  f.model_specific_code = Field(status, 16, 0xffff);
  f.mca_error_code = Field(status, 0, 0xffff);
  return f;
}

bool IsUncorrected(uint64_t status) {
  return Bit(status, kMciStatusVal) && Bit(status, kMciStatusUc);
}

McSeverity ClassifyMcStatus(uint64_t status, uint64_t mcg_cap) {
  if (!Bit(status, kMciStatusVal)) return McSeverity::kNoError;
  if (!Bit(status, kMciStatusUc)) return McSeverity::kCorrected;
  if (Bit(status, kMciStatusPcc)) return McSeverity::kFatal;
  // UCR classes exist only on SER_P hosts (SDM §16.6.2, Table 16-6).
  if (!Bit(mcg_cap, kMcgCapSerP)) return McSeverity::kUncorrected;
  const bool s = Bit(status, kMciStatusS);
  const bool ar = Bit(status, kMciStatusAr);
  if (s && ar) return McSeverity::kSrar;
  if (s) return McSeverity::kSrao;
  if (!ar) return McSeverity::kUcna;
  return McSeverity::kInvalid;  // AR without S is not a defined UCR class.
}

std::string_view McSeverityName(McSeverity severity) {
  switch (severity) {
    case McSeverity::kNoError:
      return "none";
    case McSeverity::kCorrected:
      return "CE";
    case McSeverity::kUcna:
      return "UCNA";
    case McSeverity::kSrao:
      return "SRAO";
    case McSeverity::kSrar:
      return "SRAR";
    case McSeverity::kUncorrected:
      return "UC";
    case McSeverity::kFatal:
      return "UC/PCC";
    case McSeverity::kInvalid:
      return "invalid";
  }
  return "invalid";
}

std::string DescribeMcStatus(uint64_t status, uint64_t mcg_cap) {
  if (!Bit(status, kMciStatusVal)) {
    // SDM §16.3.2.2: with VAL clear the other fields carry no error.
    std::string out = "VAL=0 (no valid error)";
    if (status != 0) absl::StrAppendFormat(&out, " raw=0x%016x", status);
    return out;
  }
  const bool ser_p = Bit(mcg_cap, kMcgCapSerP);
  const bool cmci_p = Bit(mcg_cap, kMcgCapCmciP);
  const bool tes_p = Bit(mcg_cap, kMcgCapTesP);

  std::vector<const char*> flags = {"VAL"};
  if (Bit(status, kMciStatusOver)) flags.push_back("OVER");
  if (Bit(status, kMciStatusUc)) flags.push_back("UC");
  if (Bit(status, kMciStatusEn)) flags.push_back("EN");
  if (Bit(status, kMciStatusMiscv)) flags.push_back("MISCV");
  if (Bit(status, kMciStatusAddrv)) flags.push_back("ADDRV");
  if (Bit(status, kMciStatusPcc)) flags.push_back("PCC");
  // S and AR follow SER_P (SDM §16.6.2, and Linux's severity code). The
  // §16.3.2.2 text nests them under TES_P as well, but SER_P hosts without
  // TES_P (KVM's MCG_CAP among them) report UCR errors with S and AR.
  if (ser_p && Bit(status, kMciStatusS)) flags.push_back("S");
  if (ser_p && Bit(status, kMciStatusAr)) flags.push_back("AR");

  const uint32_t mca = Field(status, 0, 0xffff);
  std::string out =
      absl::StrFormat("%s mca=0x%04x (%s)", absl::StrJoin(flags, "|"), mca,
                      DescribeMcaErrorCode(mca));

  const uint32_t mscod = Field(status, 16, 0xffff);
  if (mscod != 0) absl::StrAppendFormat(&out, " mscod=0x%04x", mscod);

  uint64_t undecoded = kMciStatusOtherInfoMask;
  if (cmci_p) {
    undecoded &= ~kMciStatusCecMask;
    // A 15-bit counter whose top bit (52) is a sticky overflow flag.
    const uint32_t count = Field(status, kMciStatusCecShift, 0x3fff);
    const bool overflow = Bit(status, kMciStatusCecOverflow);
    if (count != 0 || overflow) {
      absl::StrAppendFormat(&out, " cec=%u%s", count,
                            overflow ? " (overflow)" : "");
    }
  }
  if (tes_p) {
    // Bits 54:53 are defined only for UC=0; with UC=1 they are undefined and
    // deliberately not shown.
    undecoded &= ~kMciStatusThresholdMask;
    const uint32_t threshold = Field(status, kMciStatusThresholdShift, 0x3);
    if (!Bit(status, kMciStatusUc) && threshold != 0) {
      static constexpr const char* kNames[] = {"none", "green", "yellow",
                                               "reserved"};
      absl::StrAppend(&out, " threshold=", kNames[threshold]);
    }
  }
  if (ser_p) undecoded &= ~(kMciStatusS | kMciStatusAr);
  const uint64_t other = (status & undecoded) >> kMciStatusOtherInfoShift;
  if (other != 0) absl::StrAppendFormat(&out, " other=0x%x", other);
  return out;
}

// ---------------------------------------------------------------------------
// MCA error code

McaErrorCode DecodeMcaErrorCode(uint32_t code) {
  McaErrorCode r;
  const uint32_t c = code & 0xffff;
  r.raw = c;

  // Simple codes (Table 16-7) first: 0x0e0b (I/O error) also fits the bus
  // form, and the SDM lists it as a simple code.
  switch (c) {
    case 0x0000:
      r.error_class = McaErrorClass::kNoError;
      return r;
    case 0x0001:
      r.error_class = McaErrorClass::kUnclassified;
      return r;
    case 0x0002:
      r.error_class = McaErrorClass::kMicrocodeRomParity;
      return r;
    case 0x0003:
      r.error_class = McaErrorClass::kExternal;
      return r;
    case 0x0004:
      r.error_class = McaErrorClass::kFrc;
      return r;
    case 0x0005:
      r.error_class = McaErrorClass::kInternalParity;
      return r;
    case 0x0006:
      r.error_class = McaErrorClass::kSmmHandlerCodeAccessViolation;
      return r;
    case 0x0400:
      r.error_class = McaErrorClass::kInternalTimer;
      return r;
    case 0x0e0b:
      r.error_class = McaErrorClass::kIo;
      return r;
    default:
      break;
  }
  if ((c & 0xfc00) == 0x0400) {  // 0000 01xx xxxx xxxx, not all x zero
    r.error_class = McaErrorClass::kInternalUnclassified;
    return r;
  }
  if ((c & 0xe000) != 0) return r;  // compound codes are 000F ....

  const uint32_t b = c & 0x0fff;
  r.compound = true;
  r.filtered = (c & 0x1000) != 0;
  if ((b & 0x800) != 0) {  // 1PPT RRRR IILL
    r.error_class = McaErrorClass::kBusInterconnect;
    r.pp = (b >> 9) & 0x3;
    r.t = (b >> 8) & 0x1;
    r.rrrr = (b >> 4) & 0xf;
    r.ii = (b >> 2) & 0x3;
    r.ll = b & 0x3;
  } else if ((b & 0xf80) == 0x280) {  // 0010 1MMM CCCC
    r.error_class = McaErrorClass::kExtendedMemory;
    r.mmm = (b >> 4) & 0x7;
    r.cccc = b & 0xf;
  } else if ((b & 0xf00) == 0x100) {  // 0001 RRRR TTLL
    r.error_class = McaErrorClass::kCacheHierarchy;
    r.rrrr = (b >> 4) & 0xf;
    r.tt = (b >> 2) & 0x3;
    r.ll = b & 0x3;
  } else if ((b & 0xf80) == 0x080) {  // 0000 1MMM CCCC
    r.error_class = McaErrorClass::kMemoryController;
    r.mmm = (b >> 4) & 0x7;
    r.cccc = b & 0xf;
  } else if ((b & 0xff0) == 0x010) {  // 0000 0001 TTLL
    r.error_class = McaErrorClass::kTlb;
    r.tt = (b >> 2) & 0x3;
    r.ll = b & 0x3;
  } else if ((b & 0xffc) == 0x00c) {  // 0000 0000 11LL
    r.error_class = McaErrorClass::kGenericCacheHierarchy;
    r.ll = b & 0x3;
  } else {
    r.compound = false;
    r.filtered = false;
  }
  return r;
}

std::string_view McaErrorClassName(McaErrorClass error_class) {
  switch (error_class) {
    case McaErrorClass::kNoError:
      return "no error";
    case McaErrorClass::kUnclassified:
      return "unclassified";
    case McaErrorClass::kMicrocodeRomParity:
      return "microcode ROM parity error";
    case McaErrorClass::kExternal:
      return "external error";
    case McaErrorClass::kFrc:
      return "FRC error";
    case McaErrorClass::kInternalParity:
      return "internal parity error";
    case McaErrorClass::kSmmHandlerCodeAccessViolation:
      return "SMM handler code access violation";
    case McaErrorClass::kInternalTimer:
      return "internal timer error";
    case McaErrorClass::kIo:
      return "I/O error";
    case McaErrorClass::kInternalUnclassified:
      return "internal unclassified error";
    case McaErrorClass::kGenericCacheHierarchy:
      return "generic cache hierarchy error";
    case McaErrorClass::kTlb:
      return "TLB error";
    case McaErrorClass::kMemoryController:
      return "memory controller error";
    case McaErrorClass::kCacheHierarchy:
      return "cache hierarchy error";
    case McaErrorClass::kExtendedMemory:
      return "extended memory error";
    case McaErrorClass::kBusInterconnect:
      return "bus/interconnect error";
    case McaErrorClass::kUnknown:
      return "unknown error code";
  }
  return "unknown error code";
}

std::string DescribeMcaErrorCode(uint32_t code) {
  const McaErrorCode r = DecodeMcaErrorCode(code);
  std::string out(McaErrorClassName(r.error_class));
  switch (r.error_class) {
    case McaErrorClass::kGenericCacheHierarchy:
      absl::StrAppend(&out, " LL=", Ll(r.ll));
      break;
    case McaErrorClass::kTlb:
      absl::StrAppend(&out, " TT=", Tt(r.tt), " LL=", Ll(r.ll));
      break;
    case McaErrorClass::kMemoryController:
    case McaErrorClass::kExtendedMemory:
      absl::StrAppend(&out, " MMM=", Mmm(r.mmm), " CCCC=", Cccc(r.cccc));
      break;
    case McaErrorClass::kCacheHierarchy:
      absl::StrAppend(&out, " TT=", Tt(r.tt), " LL=", Ll(r.ll),
                      " RRRR=", Rrrr(r.rrrr));
      break;
    case McaErrorClass::kBusInterconnect:
      absl::StrAppend(&out, " PP=", Pp(r.pp), " T=", T(r.t),
                      " RRRR=", Rrrr(r.rrrr), " II=", Ii(r.ii),
                      " LL=", Ll(r.ll));
      break;
    default:
      break;
  }
  if (r.filtered) absl::StrAppend(&out, " F=1");
  return out;
}

// ---------------------------------------------------------------------------
// IA32_MCG_STATUS

McgStatusFields DecodeMcgStatus(uint64_t mcg_status) {
  McgStatusFields f;
  f.ripv = Bit(mcg_status, kMcgStatusRipv);
  f.eipv = Bit(mcg_status, kMcgStatusEipv);
  f.mcip = Bit(mcg_status, kMcgStatusMcip);
  f.lmce_s = Bit(mcg_status, kMcgStatusLmceS);
  f.reserved = mcg_status & ~kMcgStatusDefinedMask;
  return f;
}

std::string DescribeMcgStatus(uint64_t mcg_status) {
  std::vector<const char*> flags;
  if (Bit(mcg_status, kMcgStatusRipv)) flags.push_back("RIPV");
  if (Bit(mcg_status, kMcgStatusEipv)) flags.push_back("EIPV");
  if (Bit(mcg_status, kMcgStatusMcip)) flags.push_back("MCIP");
  if (Bit(mcg_status, kMcgStatusLmceS)) flags.push_back("LMCE_S");
  std::string out = flags.empty() ? "none" : absl::StrJoin(flags, "|");
  const uint64_t reserved = mcg_status & ~kMcgStatusDefinedMask;
  if (reserved != 0) absl::StrAppendFormat(&out, " reserved=0x%x", reserved);
  return out;
}

// ---------------------------------------------------------------------------
// IA32_MCG_CAP

McgCapFields DecodeMcgCap(uint64_t mcg_cap) {
  McgCapFields f;
  f.count = Field(mcg_cap, 0, 0xff);
  f.ctl_p = Bit(mcg_cap, kMcgCapCtlP);
  f.ext_p = Bit(mcg_cap, kMcgCapExtP);
  f.cmci_p = Bit(mcg_cap, kMcgCapCmciP);
  f.tes_p = Bit(mcg_cap, kMcgCapTesP);
  f.ext_cnt = Field(mcg_cap, kMcgCapExtCntShift, 0xff);
  f.ser_p = Bit(mcg_cap, kMcgCapSerP);
  f.emc_p = Bit(mcg_cap, kMcgCapEmcP);
  f.elog_p = Bit(mcg_cap, kMcgCapElogP);
  f.lmce_p = Bit(mcg_cap, kMcgCapLmceP);
  f.reserved = mcg_cap & ~kMcgCapDefinedMask;
  return f;
}

std::string DescribeMcgCap(uint64_t mcg_cap) {
  std::vector<const char*> flags;
  if (Bit(mcg_cap, kMcgCapCtlP)) flags.push_back("CTL_P");
  if (Bit(mcg_cap, kMcgCapExtP)) flags.push_back("EXT_P");
  if (Bit(mcg_cap, kMcgCapCmciP)) flags.push_back("CMCI_P");
  if (Bit(mcg_cap, kMcgCapTesP)) flags.push_back("TES_P");
  if (Bit(mcg_cap, kMcgCapSerP)) flags.push_back("SER_P");
  if (Bit(mcg_cap, kMcgCapEmcP)) flags.push_back("EMC_P");
  if (Bit(mcg_cap, kMcgCapElogP)) flags.push_back("ELOG_P");
  if (Bit(mcg_cap, kMcgCapLmceP)) flags.push_back("LMCE_P");
  std::string out = absl::StrFormat("count=%u", Field(mcg_cap, 0, 0xff));
  if (!flags.empty()) absl::StrAppend(&out, " ", absl::StrJoin(flags, "|"));
  if (Bit(mcg_cap, kMcgCapExtP)) {
    absl::StrAppendFormat(&out, " ext_cnt=%u",
                          Field(mcg_cap, kMcgCapExtCntShift, 0xff));
  }
  const uint64_t reserved = mcg_cap & ~kMcgCapDefinedMask;
  if (reserved != 0) absl::StrAppendFormat(&out, " reserved=0x%x", reserved);
  return out;
}

}  // namespace vexstate::x86
