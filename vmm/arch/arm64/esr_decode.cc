#include "vmm/arch/arm64/esr_decode.h"

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace vexstate::arm64 {
namespace {

uint32_t Bits(uint64_t value, int lsb, int width) {
  return static_cast<uint32_t>((value >> lsb) & ((uint64_t{1} << width) - 1));
}

bool Bit(uint64_t value, int bit) { return ((value >> bit) & 1) != 0; }

// "0b0101" style, `width` digits.
std::string Binary(uint32_t value, int width) {
  std::string out = "0b";
  for (int i = width - 1; i >= 0; --i) out.push_back(Bit(value, i) ? '1' : '0');
  return out;
}

std::string Sv(std::string_view s) { return std::string(s); }

// The SError/DISR syndrome fields after IDS, shared by DescribeEsr and
// DescribeDisr (DISR has no IESB: bit 13 is RES0 there).
void AppendSerrorSyndrome(const SerrorIss& s, bool with_iesb,
                          std::string* out) {
  if (s.ids) {
    absl::StrAppendFormat(out,
                          " IDS=1 (IMPLEMENTATION DEFINED syndrome 0x%06x)",
                          s.impdef_syndrome);
    return;
  }
  const bool rasv2 = s.wu != 0 || s.wnrv || s.wnr;
  absl::StrAppend(out, " IDS=0");
  if (rasv2) absl::StrAppend(out, " WU=", Binary(s.wu, 2));
  if (with_iesb) absl::StrAppend(out, " IESB=", s.iesb ? 1 : 0);
  absl::StrAppend(out, " AET=", Binary(s.aet, 3));
  // AET is defined only for DFSC 0b010001 (asynchronous SError); for other
  // codes the raw bits are shown without a meaning.
  if (s.dfsc == kSerrorDfscAsync) {
    const std::string_view name = AetName(s.aet);
    if (name.empty()) {
      absl::StrAppend(out, " (reserved)");
    } else {
      absl::StrAppend(out, " (", Sv(name), ": ", Sv(AetDescription(s.aet)),
                      ")");
    }
  }
  absl::StrAppend(out, " EA=", s.ea ? 1 : 0);
  if (rasv2) {
    absl::StrAppend(out, " WnRV=", s.wnrv ? 1 : 0, " WnR=", s.wnr ? 1 : 0);
  }
  absl::StrAppendFormat(out, " DFSC=0x%02x (%s)", s.dfsc,
                        SerrorDfscName(s.dfsc));
}

void AppendAbort(uint32_t iss, bool data_abort, std::string* out) {
  const AbortIss a = DecodeAbortIss(iss);
  if (data_abort) {
    absl::StrAppend(out, " ISV=", a.isv ? 1 : 0);
    if (a.isv) {
      static constexpr const char* kSizes[] = {"byte", "halfword", "word",
                                               "doubleword"};
      absl::StrAppendFormat(out, " SAS=%s (%s) SSE=%d SRT=%u SF=%d AR=%d",
                            Binary(a.sas, 2), kSizes[a.sas], a.sse ? 1 : 0,
                            a.srt, a.sf ? 1 : 0, a.ar ? 1 : 0);
    }
    if (a.vncr) absl::StrAppend(out, " VNCR=1");
  }
  if (IsSynchronousExternalAbort(a.fsc)) {
    absl::StrAppendFormat(out, " SET=%s (%s)", Binary(a.set, 2),
                          SetName(a.set));
  }
  absl::StrAppend(out, " FnV=", a.fnv ? 1 : 0, " EA=", a.ea ? 1 : 0);
  if (data_abort) absl::StrAppend(out, " CM=", a.cm ? 1 : 0);
  absl::StrAppend(out, " S1PTW=", a.s1ptw ? 1 : 0);
  if (data_abort) absl::StrAppend(out, " WnR=", a.wnr ? 1 : 0);
  absl::StrAppendFormat(out, " %s=0x%02x (%s)", data_abort ? "DFSC" : "IFSC",
                        a.fsc, FaultStatusName(a.fsc, data_abort));
}

}  // namespace

EsrFields DecodeEsr(uint64_t esr) {
  EsrFields f;
  f.ec = Bits(esr, kEsrEcShift, 6);
  f.il = (esr & kEsrIl) != 0;
  f.iss = Bits(esr, 0, 25);
  f.iss2 = Bits(esr, kEsrIss2Shift, 24);
  f.res0 = Bits(esr, 56, 8);
  return f;
}

std::string_view EcName(uint32_t ec) {
  switch (ec & 0x3f) {
    case 0x00:
      return "Unknown reason";
    case 0x01:
      return "Trapped WF* instruction";
    case 0x03:
      return "Trapped MCR or MRC (coproc 0b1111)";
    case 0x04:
      return "Trapped MCRR or MRRC (coproc 0b1111)";
    case 0x05:
      return "Trapped MCR or MRC (coproc 0b1110)";
    case 0x06:
      return "Trapped LDC or STC";
    case 0x07:
      return "Trapped SME, SVE, Advanced SIMD or floating-point access";
    case 0x08:
      return "Trapped VMRS (ID group)";
    case 0x09:
      return "Trapped pointer authentication instruction";
    case 0x0a:
      return "Trapped LD64B, ST64B* or other instruction";
    case 0x0c:
      return "Trapped MRRC (coproc 0b1110)";
    case 0x0d:
      return "Branch Target Exception";
    case 0x0e:
      return "Illegal Execution state";
    case 0x11:
      return "SVC in AArch32";
    case 0x12:
      return "HVC in AArch32";
    case 0x13:
      return "SMC in AArch32";
    case 0x14:
      return "Trapped MSRR, MRRS or 128-bit System instruction";
    case 0x15:
      return "SVC in AArch64";
    case 0x16:
      return "HVC in AArch64";
    case 0x17:
      return "SMC in AArch64";
    case 0x18:
      return "Trapped MSR, MRS or System instruction";
    case 0x19:
      return "Trapped SVE access";
    case 0x1a:
      return "Trapped ERET, ERETAA or ERETAB";
    case 0x1b:
      return "Trapped TSTART";
    case 0x1c:
      return "Pointer authentication failure";
    case 0x1d:
      return "Trapped SME access";
    case 0x1e:
      return "Granule Protection Check";
    case 0x1f:
      return "IMPLEMENTATION DEFINED exception to EL3";
    case 0x20:
      return "Instruction Abort from a lower EL";
    case 0x21:
      return "Instruction Abort, same EL";
    case 0x22:
      return "PC alignment fault";
    case 0x24:
      return "Data Abort from a lower EL";
    case 0x25:
      return "Data Abort, same EL";
    case 0x26:
      return "SP alignment fault";
    case 0x27:
      return "Memory Operation exception";
    case 0x28:
      return "Trapped floating-point exception (AArch32)";
    case 0x2c:
      return "Trapped floating-point exception (AArch64)";
    case 0x2d:
      return "GCS exception";
    case 0x2f:
      return "SError interrupt";
    case 0x30:
      return "Breakpoint from a lower EL";
    case 0x31:
      return "Breakpoint, same EL";
    case 0x32:
      return "Software Step from a lower EL";
    case 0x33:
      return "Software Step, same EL";
    case 0x34:
      return "Watchpoint from a lower EL";
    case 0x35:
      return "Watchpoint, same EL";
    case 0x38:
      return "BKPT in AArch32";
    case 0x3a:
      return "Vector Catch in AArch32";
    case 0x3c:
      return "BRK in AArch64";
    case 0x3d:
      return "PMU exception";
    default:
      return "unallocated";
  }
}

bool IsAllocatedEc(uint32_t ec) { return EcName(ec) != "unallocated"; }

// ---------------------------------------------------------------------------
// SError

SerrorIss DecodeSerrorIss(uint32_t iss) {
  SerrorIss s;
  s.ids = Bit(iss, 24);
  if (s.ids) {
    s.impdef_syndrome = Bits(iss, 0, 24);
    return s;
  }
  s.wu = Bits(iss, 16, 2);
  s.iesb = Bit(iss, 13);
  s.aet = Bits(iss, 10, 3);
  s.ea = Bit(iss, 9);
  s.wnrv = Bit(iss, 7);
  s.wnr = Bit(iss, 6);
  s.dfsc = Bits(iss, 0, 6);
  s.res0 = iss & kSerrorIssRes0Mask;
  return s;
}

std::string_view AetName(uint32_t aet) {
  switch (aet) {
    case 0:
      return "UC";
    case 1:
      return "UEU";
    case 2:
      return "UEO";
    case 3:
      return "UER";
    case 6:
      return "CE";
    default:
      return "";
  }
}

std::string_view AetDescription(uint32_t aet) {
  switch (aet) {
    case 0:
      return "uncontainable";
    case 1:
      return "unrecoverable state";
    case 2:
      return "restartable state";
    case 3:
      return "recoverable state";
    case 6:
      return "corrected";
    default:
      return "reserved";
  }
}

std::string_view SerrorDfscName(uint32_t dfsc) {
  switch (dfsc) {
    case kSerrorDfscUncategorized:
      return "uncategorized";
    case kSerrorDfscAsync:
      return "asynchronous SError interrupt";
    default:
      return "reserved";
  }
}

// ---------------------------------------------------------------------------
// Aborts

AbortIss DecodeAbortIss(uint32_t iss) {
  AbortIss a;
  a.isv = Bit(iss, 24);
  a.sas = Bits(iss, 22, 2);
  a.sse = Bit(iss, 21);
  a.srt = Bits(iss, 16, 5);
  a.sf = Bit(iss, 15);
  a.ar = Bit(iss, 14);
  a.vncr = Bit(iss, 13);
  a.set = Bits(iss, 11, 2);
  a.fnv = Bit(iss, 10);
  a.ea = Bit(iss, 9);
  a.cm = Bit(iss, 8);
  a.s1ptw = Bit(iss, 7);
  a.wnr = Bit(iss, 6);
  a.fsc = Bits(iss, 0, 6);
  return a;
}

std::string_view FaultStatusName(uint32_t fsc, bool data_abort) {
  switch (fsc) {
    case 0x00:
      return "address size fault, level 0 or translation table base register";
    case 0x01:
      return "address size fault, level 1";
    case 0x02:
      return "address size fault, level 2";
    case 0x03:
      return "address size fault, level 3";
    case 0x04:
      return "translation fault, level 0";
    case 0x05:
      return "translation fault, level 1";
    case 0x06:
      return "translation fault, level 2";
    case 0x07:
      return "translation fault, level 3";
    case 0x08:
      return "access flag fault, level 0";
    case 0x09:
      return "access flag fault, level 1";
    case 0x0a:
      return "access flag fault, level 2";
    case 0x0b:
      return "access flag fault, level 3";
    case 0x0c:
      return "permission fault, level 0";
    case 0x0d:
      return "permission fault, level 1";
    case 0x0e:
      return "permission fault, level 2";
    case 0x0f:
      return "permission fault, level 3";
    case 0x10:
      return "synchronous external abort";
    case 0x11:
      return data_abort ? "synchronous tag check fault" : "reserved";
    case 0x12:
      return "synchronous external abort on translation table walk, level -2";
    case 0x13:
      return "synchronous external abort on translation table walk, level -1";
    case 0x14:
      return "synchronous external abort on translation table walk, level 0";
    case 0x15:
      return "synchronous external abort on translation table walk, level 1";
    case 0x16:
      return "synchronous external abort on translation table walk, level 2";
    case 0x17:
      return "synchronous external abort on translation table walk, level 3";
    case 0x18:
      return "synchronous parity or ECC error";
    case 0x1b:
      return "synchronous parity or ECC error on translation table walk, "
             "level -1";
    case 0x1c:
      return "synchronous parity or ECC error on translation table walk, "
             "level 0";
    case 0x1d:
      return "synchronous parity or ECC error on translation table walk, "
             "level 1";
    case 0x1e:
      return "synchronous parity or ECC error on translation table walk, "
             "level 2";
    case 0x1f:
      return "synchronous parity or ECC error on translation table walk, "
             "level 3";
    case 0x21:
      return data_abort ? "alignment fault" : "reserved";
    case 0x22:
      return "granule protection fault on translation table walk, level -2";
    case 0x23:
      return "granule protection fault on translation table walk, level -1";
    case 0x24:
      return "granule protection fault on translation table walk, level 0";
    case 0x25:
      return "granule protection fault on translation table walk, level 1";
    case 0x26:
      return "granule protection fault on translation table walk, level 2";
    case 0x27:
      return "granule protection fault on translation table walk, level 3";
    case 0x28:
      return "granule protection fault";
    case 0x29:
      return "address size fault, level -1";
    case 0x2a:
      return "translation fault, level -2";
    case 0x2b:
      return "translation fault, level -1";
    case 0x2c:
      return "address size fault, level -2";
    case 0x30:
      return "TLB conflict abort";
    case 0x31:
      return "unsupported atomic hardware update fault";
    case 0x34:
      return "IMPLEMENTATION DEFINED fault (lockdown)";
    case 0x35:
      return data_abort ? "IMPLEMENTATION DEFINED fault (unsupported exclusive "
                          "or atomic access)"
                        : "reserved";
    case 0x3d:
      return "section domain fault";
    case 0x3e:
      return "page domain fault";
    default:
      return "reserved";
  }
}

bool IsSynchronousExternalAbort(uint32_t fsc) {
  return fsc == 0x10 || (fsc >= 0x12 && fsc <= 0x17);
}

std::string_view SetName(uint32_t set) {
  switch (set) {
    case 0:
      return "UER: recoverable state";
    case 2:
      return "UC: uncontainable";
    case 3:
      return "UEO: restartable state";
    default:
      return "reserved";
  }
}

// ---------------------------------------------------------------------------
// Describe

std::string DescribeEsr(uint64_t esr) {
  const EsrFields e = DecodeEsr(esr);
  std::string out = absl::StrFormat("EC=0x%02x (%s) IL=%d ISS=0x%06x", e.ec,
                                    EcName(e.ec), e.il ? 1 : 0, e.iss);
  switch (e.ec) {
    case kEcSerror: {
      const SerrorIss s = DecodeSerrorIss(e.iss);
      AppendSerrorSyndrome(s, /*with_iesb=*/true, &out);
      if (s.res0 != 0) absl::StrAppendFormat(&out, " RES0=0x%x", s.res0);
      break;
    }
    case kEcDabtLow:
    case kEcDabtCur:
      AppendAbort(e.iss, /*data_abort=*/true, &out);
      break;
    case kEcIabtLow:
    case kEcIabtCur:
      AppendAbort(e.iss, /*data_abort=*/false, &out);
      break;
    case kEcSvc32:
    case kEcHvc32:
    case kEcSvc64:
    case kEcHvc64:
    case kEcSmc64:
      // SMC from AArch32 has a condition-code ISS instead of an immediate.
      absl::StrAppendFormat(&out, " imm16=0x%04x", Bits(e.iss, 0, 16));
      break;
    case kEcBrk64:
      absl::StrAppendFormat(&out, " comment=0x%04x", Bits(e.iss, 0, 16));
      break;
    case kEcSys64:
      absl::StrAppendFormat(&out, " sysreg=S%u_%u_C%u_C%u_%u Rt=%u dir=%s",
                            Bits(e.iss, 20, 2), Bits(e.iss, 14, 3),
                            Bits(e.iss, 10, 4), Bits(e.iss, 1, 4),
                            Bits(e.iss, 17, 3), Bits(e.iss, 5, 5),
                            Bit(e.iss, 0) ? "read" : "write");
      break;
    case kEcWfx: {
      static constexpr const char* kTi[] = {"WFI", "WFE", "WFIT", "WFET"};
      absl::StrAppend(&out, " TI=", kTi[Bits(e.iss, 0, 2)]);
      break;
    }
    default:
      break;
  }
  if (e.iss2 != 0) absl::StrAppendFormat(&out, " ISS2=0x%x", e.iss2);
  if (e.res0 != 0) absl::StrAppendFormat(&out, " RES0[63:56]=0x%02x", e.res0);
  return out;
}

std::string DescribeDisr(uint64_t disr) {
  if ((disr & kDisrA) == 0) {
    std::string out = "A=0 (no SError deferred)";
    if (disr != 0) absl::StrAppendFormat(&out, " raw=0x%x", disr);
    return out;
  }
  // DISR_EL1 reuses the SError ISS layout in bits 24:0, minus IESB.
  const SerrorIss s = DecodeSerrorIss(Bits(disr, 0, 25));
  std::string out = "A=1";
  AppendSerrorSyndrome(s, /*with_iesb=*/false, &out);
  // RES0: 63:32, 30:25 and, when IDS=0, the SError RES0 bits plus bit 13.
  uint64_t res0 = disr & ~((uint64_t{1} << 32) - 1);
  res0 |= disr & (uint64_t{0x3f} << 25);
  if (!s.ids) res0 |= disr & (kSerrorIssRes0Mask | (uint64_t{1} << 13));
  if (res0 != 0) absl::StrAppendFormat(&out, " RES0=0x%x", res0);
  return out;
}

}  // namespace vexstate::arm64
