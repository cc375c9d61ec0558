#include "vmm/arch/x86_64/state_codec.h"

#include <algorithm>
#include <cstring>
#include <set>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "vmm/arch/x86_64/msr_index.h"

namespace vexstate::x86 {

namespace {

// kvm_sregs.interrupt_bitmap: one bit per vector (asm/kvm.h).
constexpr int kInterruptBitmapWords = (KVM_NR_INTERRUPTS + 63) / 64;
// KVM_SET_MP_STATE's x86 values (api.rst "KVM_GET_MP_STATE";
// arch/x86/kvm/x86.c).
constexpr uint32_t kValidMpStates[] = {
    KVM_MP_STATE_RUNNABLE,      KVM_MP_STATE_UNINITIALIZED,
    KVM_MP_STATE_INIT_RECEIVED, KVM_MP_STATE_HALTED,
    KVM_MP_STATE_SIPI_RECEIVED, KVM_MP_STATE_AP_RESET_HOLD};
// XSAVE area layout (Intel SDM Vol 1 13.4): MXCSR in the legacy region, then
// the XSAVE header.
constexpr size_t kXsaveMxcsrOffset = 24;
constexpr size_t kXsaveXcompBvOffset = 520;
constexpr size_t kXsaveHeaderReservedOffset = 528;
constexpr size_t kXsaveHeaderEnd = 576;
// XCR0 bits (Intel SDM Vol 1 13.3).
constexpr uint32_t kXcr0Index = 0;
constexpr uint64_t kXcr0X87 = 1ull << 0;
constexpr uint64_t kXcr0Sse = 1ull << 1;
constexpr uint64_t kXcr0Avx = 1ull << 2;
constexpr int kDebugAddressRegisters = 4;
constexpr uint64_t kMcgExtCtlLmceEn = 1ull << 0;
constexpr uint32_t kMaxExceptionVector = 31;
constexpr uint32_t kNmiVector = 2;
constexpr uint32_t kShadowMask =
    KVM_X86_SHADOW_INT_MOV_SS | KVM_X86_SHADOW_INT_STI;

absl::Status OutOfRange(absl::string_view field, uint64_t value, uint64_t max) {
  return absl::InvalidArgumentError(
      absl::StrFormat("%s: %u is out of range [0, %u]", field, value, max));
}

// ---------- registers

void EncodeSegment(const kvm_segment& in, v1::X86Segment* out) {
  out->set_base(in.base);
  out->set_limit(in.limit);
  out->set_selector(in.selector);
  out->set_type(in.type);
  out->set_present(in.present != 0);
  out->set_dpl(in.dpl);
  out->set_db(in.db != 0);
  out->set_s(in.s != 0);
  out->set_l(in.l != 0);
  out->set_g(in.g != 0);
  out->set_avl(in.avl != 0);
  out->set_unusable(in.unusable != 0);
}

absl::Status DecodeSegment(const v1::X86Segment& in, absl::string_view field,
                           kvm_segment* out) {
  if (in.selector() > 0xffff)
    return OutOfRange(absl::StrFormat("%s.selector", field), in.selector(),
                      0xffff);
  if (in.type() > 0xf)
    return OutOfRange(absl::StrFormat("%s.type", field), in.type(), 0xf);
  if (in.dpl() > 3)
    return OutOfRange(absl::StrFormat("%s.dpl", field), in.dpl(), 3);
  *out = {};
  out->base = in.base();
  out->limit = in.limit();
  out->selector = in.selector();
  out->type = in.type();
  out->present = in.present();
  out->dpl = in.dpl();
  out->db = in.db();
  out->s = in.s();
  out->l = in.l();
  out->g = in.g();
  out->avl = in.avl();
  out->unusable = in.unusable();
  return absl::OkStatus();
}

absl::Status DecodeDtable(const v1::X86DescriptorTable& in,
                          absl::string_view field, kvm_dtable* out) {
  if (in.limit() > 0xffff)
    return OutOfRange(absl::StrFormat("%s.limit", field), in.limit(), 0xffff);
  *out = {};
  out->base = in.base();
  out->limit = in.limit();
  return absl::OkStatus();
}

struct SegmentField {
  const char* name;
  kvm_segment kvm_sregs::*kvm;
  const v1::X86Segment& (v1::X86VcpuState::*get)() const;
  v1::X86Segment* (v1::X86VcpuState::*mutable_get)();
};

const SegmentField kSegments[] = {
    {"cs", &kvm_sregs::cs, &v1::X86VcpuState::cs,
     &v1::X86VcpuState::mutable_cs},
    {"ds", &kvm_sregs::ds, &v1::X86VcpuState::ds,
     &v1::X86VcpuState::mutable_ds},
    {"es", &kvm_sregs::es, &v1::X86VcpuState::es,
     &v1::X86VcpuState::mutable_es},
    {"fs", &kvm_sregs::fs, &v1::X86VcpuState::fs,
     &v1::X86VcpuState::mutable_fs},
    {"gs", &kvm_sregs::gs, &v1::X86VcpuState::gs,
     &v1::X86VcpuState::mutable_gs},
    {"ss", &kvm_sregs::ss, &v1::X86VcpuState::ss,
     &v1::X86VcpuState::mutable_ss},
    {"tr", &kvm_sregs::tr, &v1::X86VcpuState::tr,
     &v1::X86VcpuState::mutable_tr},
    {"ldt", &kvm_sregs::ldt, &v1::X86VcpuState::ldt,
     &v1::X86VcpuState::mutable_ldt},
};

void EncodeRegs(const kvm_regs& r, v1::X86VcpuState* out) {
  out->set_rax(r.rax);
  out->set_rbx(r.rbx);
  out->set_rcx(r.rcx);
  out->set_rdx(r.rdx);
  out->set_rsi(r.rsi);
  out->set_rdi(r.rdi);
  out->set_rsp(r.rsp);
  out->set_rbp(r.rbp);
  out->set_r8(r.r8);
  out->set_r9(r.r9);
  out->set_r10(r.r10);
  out->set_r11(r.r11);
  out->set_r12(r.r12);
  out->set_r13(r.r13);
  out->set_r14(r.r14);
  out->set_r15(r.r15);
  out->set_rip(r.rip);
  out->set_rflags(r.rflags);
}

kvm_regs DecodeRegs(const v1::X86VcpuState& in) {
  kvm_regs r = {};
  r.rax = in.rax();
  r.rbx = in.rbx();
  r.rcx = in.rcx();
  r.rdx = in.rdx();
  r.rsi = in.rsi();
  r.rdi = in.rdi();
  r.rsp = in.rsp();
  r.rbp = in.rbp();
  r.r8 = in.r8();
  r.r9 = in.r9();
  r.r10 = in.r10();
  r.r11 = in.r11();
  r.r12 = in.r12();
  r.r13 = in.r13();
  r.r14 = in.r14();
  r.r15 = in.r15();
  r.rip = in.rip();
  r.rflags = in.rflags();
  return r;
}

void EncodeSregs(const kvm_sregs& s, v1::X86VcpuState* out) {
  for (const SegmentField& f : kSegments)
    EncodeSegment(s.*(f.kvm), (out->*(f.mutable_get))());
  out->mutable_gdt()->set_base(s.gdt.base);
  out->mutable_gdt()->set_limit(s.gdt.limit);
  out->mutable_idt()->set_base(s.idt.base);
  out->mutable_idt()->set_limit(s.idt.limit);
  out->set_cr0(s.cr0);
  out->set_cr2(s.cr2);
  out->set_cr3(s.cr3);
  out->set_cr4(s.cr4);
  out->set_cr8(s.cr8);
  out->set_efer(s.efer);
  out->set_apic_base(s.apic_base);
  out->clear_interrupt_bitmap();
  for (int i = 0; i < kInterruptBitmapWords; ++i)
    out->add_interrupt_bitmap(s.interrupt_bitmap[i]);
}

absl::Status DecodeSregs(const v1::X86VcpuState& in, kvm_sregs* s) {
  *s = {};
  for (const SegmentField& f : kSegments) {
    if (absl::Status st =
            DecodeSegment((in.*(f.get))(), absl::StrFormat("x86_64.%s", f.name),
                          &(s->*(f.kvm)));
        !st.ok()) {
      return st;
    }
  }
  if (absl::Status st = DecodeDtable(in.gdt(), "x86_64.gdt", &s->gdt); !st.ok())
    return st;
  if (absl::Status st = DecodeDtable(in.idt(), "x86_64.idt", &s->idt); !st.ok())
    return st;
  // CR8 is the 4-bit task priority (Intel SDM Vol 3A 2.5); KVM_SET_SREGS
  // refuses more.
  if (in.cr8() > 0xf) return OutOfRange("x86_64.cr8", in.cr8(), 0xf);
  if (in.interrupt_bitmap_size() != 0 &&
      in.interrupt_bitmap_size() != kInterruptBitmapWords) {
    return absl::InvalidArgumentError(
        absl::StrFormat("x86_64.interrupt_bitmap: %d words, expected 0 or %d "
                        "(one bit per vector, kvm_sregs)",
                        in.interrupt_bitmap_size(), kInterruptBitmapWords));
  }
  s->cr0 = in.cr0();
  s->cr2 = in.cr2();
  s->cr3 = in.cr3();
  s->cr4 = in.cr4();
  s->cr8 = in.cr8();
  s->efer = in.efer();
  s->apic_base = in.apic_base();
  for (int i = 0; i < in.interrupt_bitmap_size(); ++i)
    s->interrupt_bitmap[i] = in.interrupt_bitmap(i);
  return absl::OkStatus();
}

uint64_t Load64(const std::string& bytes, size_t offset) {
  uint64_t v;
  std::memcpy(&v, bytes.data() + offset, sizeof(v));
  return v;
}

absl::Status DecodeXsave(const std::string& in, size_t xsave_size,
                         std::vector<uint8_t>* out) {
  if (in.size() != xsave_size) {
    return absl::InvalidArgumentError(
        absl::StrFormat("x86_64.xsave: %u bytes, but this VM's XSAVE area is "
                        "%u bytes (KVM_CAP_XSAVE2)",
                        in.size(), xsave_size));
  }
  if (in.size() < kXsaveHeaderEnd) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "x86_64.xsave: %u bytes cannot hold the XSAVE header (%u)", in.size(),
        kXsaveHeaderEnd));
  }
  // KVM_SET_XSAVE takes the standard (non-compacted) format and refuses a
  // non-zero XCOMP_BV or reserved header bytes (the kernel's
  // validate_user_xstate_header).
  if (uint64_t xcomp_bv = Load64(in, kXsaveXcompBvOffset); xcomp_bv != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("x86_64.xsave: XCOMP_BV 0x%x is not zero (KVM takes "
                        "the standard, non-compacted format)",
                        xcomp_bv));
  }
  for (size_t off = kXsaveHeaderReservedOffset; off < kXsaveHeaderEnd;
       off += 8) {
    if (Load64(in, off) != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "x86_64.xsave: reserved XSAVE header bytes at offset %u are not zero",
          off));
    }
  }
  uint32_t mxcsr;
  std::memcpy(&mxcsr, in.data() + kXsaveMxcsrOffset, sizeof(mxcsr));
  if (mxcsr >> 16 != 0) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "x86_64.xsave: MXCSR 0x%x sets reserved bits 31:16 (#GP on the CPU)",
        mxcsr));
  }
  out->assign(in.begin(), in.end());
  return absl::OkStatus();
}

absl::Status DecodeXcrs(const v1::X86VcpuState& in, kvm_xcrs* out) {
  *out = {};
  if (in.xcrs_size() > 1) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "x86_64.xcrs: %d entries; KVM keeps XCR0 only, at most once",
        in.xcrs_size()));
  }
  for (int i = 0; i < in.xcrs_size(); ++i) {
    const v1::X86Xcr& xcr = in.xcrs(i);
    if (xcr.index() != kXcr0Index) {
      return absl::InvalidArgumentError(
          absl::StrFormat("x86_64.xcrs[%d].index: XCR%u; KVM_SET_XCRS sets "
                          "XCR0 only and ignores the others",
                          i, xcr.index()));
    }
    // Intel SDM Vol 1 13.3: XCR0[0] is always 1; AVX state needs SSE state. KVM
    // refuses both.
    if ((xcr.value() & kXcr0X87) == 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("x86_64.xcrs[%d].value: XCR0 0x%x lacks bit 0 (x87), "
                          "which is always set",
                          i, xcr.value()));
    }
    if ((xcr.value() & kXcr0Avx) != 0 && (xcr.value() & kXcr0Sse) == 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "x86_64.xcrs[%d].value: XCR0 0x%x enables AVX without SSE", i,
          xcr.value()));
    }
    out->xcrs[out->nr_xcrs].xcr = xcr.index();
    out->xcrs[out->nr_xcrs].value = xcr.value();
    ++out->nr_xcrs;
  }
  return absl::OkStatus();
}

absl::Status DecodeMsrs(const v1::X86VcpuState& in,
                        absl::Span<const uint32_t> known_msrs,
                        std::vector<uint32_t>* indices,
                        std::vector<uint64_t>* values) {
  std::vector<uint32_t> known(known_msrs.begin(), known_msrs.end());
  std::sort(known.begin(), known.end());
  std::set<uint32_t> seen;
  bool has_deadline = false;
  uint64_t deadline = 0;
  indices->clear();
  values->clear();
  for (int i = 0; i < in.msrs_size(); ++i) {
    const v1::X86Msr& msr = in.msrs(i);
    if (IsMachineCheckMsr(msr.index())) {
      return absl::InvalidArgumentError(
          absl::StrFormat("x86_64.msrs[%d].index: MSR 0x%x is a machine-check "
                          "MSR; it belongs in exception.machine_check",
                          i, msr.index()));
    }
    if (!seen.insert(msr.index()).second) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "x86_64.msrs[%d].index: MSR 0x%x appears more than once", i,
          msr.index()));
    }
    if (!std::binary_search(known.begin(), known.end(), msr.index())) {
      return absl::FailedPreconditionError(
          absl::StrFormat("x86_64.msrs[%d].index: MSR 0x%x is not one this "
                          "host's KVM saves and restores for this vCPU "
                          "(KVM_GET_MSR_INDEX_LIST, readable)",
                          i, msr.index()));
    }
    if (msr.index() == kMsrIa32TscDeadline) {
      has_deadline = true;
      deadline = msr.value();
      continue;
    }
    indices->push_back(msr.index());
    values->push_back(msr.value());
  }
  // Last: see DecodeVcpuRegisters in the header (LAPIC timer mode and IA32_TSC
  // first).
  if (has_deadline) {
    indices->push_back(kMsrIa32TscDeadline);
    values->push_back(deadline);
  }
  return absl::OkStatus();
}

absl::Status DecodeDebugRegs(const v1::X86VcpuState& in, kvm_debugregs* out) {
  *out = {};
  if (in.db_size() != kDebugAddressRegisters) {
    return absl::InvalidArgumentError(
        absl::StrFormat("x86_64.db: %d entries, expected %d (DR0..DR3)",
                        in.db_size(), kDebugAddressRegisters));
  }
  // KVM_SET_DEBUGREGS refuses DR6/DR7 with bits 63:32 set (Intel SDM Vol
  // 3B 18.2: reserved, #GP).
  if (in.dr6() >> 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("x86_64.dr6: 0x%x sets reserved bits 63:32", in.dr6()));
  }
  if (in.dr7() >> 32 != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("x86_64.dr7: 0x%x sets reserved bits 63:32", in.dr7()));
  }
  for (int i = 0; i < kDebugAddressRegisters; ++i) out->db[i] = in.db(i);
  out->dr6 = in.dr6();
  out->dr7 = in.dr7();
  return absl::OkStatus();
}

// ---------- exception state

// One pass over the (index, value) pairs; any order, any subset. Runs on every
// capture: presence is a bit per MSR and the bank values are only written, never
// zero-filled (a zeroed table of 128 {present, value} pairs cost more than the
// pass itself).
void EncodeMachineCheck(const KvmExceptionState& in,
                        v1::X86ExceptionState* out) {
  struct Field {
    bool present = false;
    uint64_t value = 0;
  };
  Field cap, status, ctl, ext_ctl;
  uint64_t bank_values[kMaxMceBanks][4];  // CTL, STATUS, ADDR, MISC
  uint8_t bank_present[kMaxMceBanks] = {};  // bit r: bank_values[b][r] is set
  const size_t n = std::min(in.mce_indices.size(), in.mce_values.size());
  const uint32_t* const msrs = in.mce_indices.data();
  const uint64_t* const values = in.mce_values.data();
  for (size_t i = 0; i < n; ++i) {
    const uint32_t msr = msrs[i];
    const uint64_t value = values[i];
    if (msr >= kMsrMc0Ctl && msr < kMsrMc0Ctl + 4 * kMaxMceBanks) {
      const uint32_t bank = (msr - kMsrMc0Ctl) / 4, reg = (msr - kMsrMc0Ctl) % 4;
      bank_values[bank][reg] = value;
      bank_present[bank] |= 1u << reg;
    } else if (msr == kMsrMcgCap) {
      cap = {true, value};
    } else if (msr == kMsrMcgStatus) {
      status = {true, value};
    } else if (msr == kMsrMcgCtl) {
      ctl = {true, value};
    } else if (msr == kMsrMcgExtCtl) {
      ext_ctl = {true, value};
    }
  }
  if (!cap.present) return;
  v1::X86MachineCheckState* mc = out->mutable_machine_check();
  mc->set_mcg_cap(cap.value);
  if (status.present) mc->set_mcg_status(status.value);
  if (ctl.present) mc->set_mcg_ctl(ctl.value);
  if (ext_ctl.present) mc->set_mcg_ext_ctl(ext_ctl.value);
  const uint32_t count =
      std::min<uint32_t>(cap.value & kMcgCapCountMask, kMaxMceBanks);
  mc->mutable_banks()->Reserve(count);  // not 6 regrowths for 32 banks
  for (uint32_t b = 0; b < count; ++b) {
    if (bank_present[b] != 0xf) continue;  // a bank needs all four MSRs
    const uint64_t* f = bank_values[b];
    v1::X86MachineCheckBank* bank = mc->add_banks();
    bank->set_index(b);
    bank->set_ctl(f[0]);
    bank->set_status(f[1]);
    bank->set_addr(f[2]);
    bank->set_misc(f[3]);
  }
}

absl::Status DecodeMachineCheck(const v1::X86MachineCheckState& mc,
                                const ExceptionTarget& target,
                                decltype(KvmExceptionState::mce_indices)* indices,
                                decltype(KvmExceptionState::mce_values)* values) {
  if (mc.mcg_cap() != target.mcg_cap) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "machine_check.mcg_cap: the state has MCG_CAP 0x%x (%u banks), this "
        "vCPU has MCG_CAP 0x%x (%u banks); "
        "MCG_CAP is fixed by KVM_X86_SETUP_MCE and cannot be restored",
        mc.mcg_cap(), mc.mcg_cap() & kMcgCapCountMask, target.mcg_cap,
        target.mcg_cap & kMcgCapCountMask));
  }
  const uint64_t cap = target.mcg_cap;
  const uint32_t bank_count =
      std::min<uint32_t>(cap & kMcgCapCountMask, kMaxMceBanks);
  // Sized for the most MSRs there can be, trimmed at the end: at most
  // kMaxMceBanks banks get past the index and duplicate checks, so `n` never
  // exceeds kMaxMachineCheckMsrs - 1 (MCG_CAP is never written).
  indices->resize(kMaxMachineCheckMsrs);
  values->resize(kMaxMachineCheckMsrs);
  uint32_t* const msr_out = indices->data();
  uint64_t* const value_out = values->data();
  size_t n = 0;
  auto add = [&](uint32_t msr, uint64_t value) {
    msr_out[n] = msr;
    value_out[n] = value;
    ++n;
  };
  add(kMsrMcgStatus, mc.mcg_status());
  // KVM (set_msr_mce): MCG_CTL exists only with MCG_CAP.CTL_P and holds 0 or
  // all-ones.
  if (cap & kMcgCapCtlP) {
    if (mc.mcg_ctl() != 0 && mc.mcg_ctl() != ~0ull) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "machine_check.mcg_ctl: 0x%x; KVM accepts only 0 or all-ones",
          mc.mcg_ctl()));
    }
    add(kMsrMcgCtl, mc.mcg_ctl());
  } else if (mc.mcg_ctl() != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("machine_check.mcg_ctl: 0x%x, but MCG_CAP 0x%x has no "
                        "CTL_P (bit 8): there is no MCG_CTL",
                        mc.mcg_ctl(), cap));
  }
  // MCG_EXT_CTL exists only with MCG_CAP.LMCE_P; only LMCE_EN (bit 0) is
  // defined.
  if (cap & kMcgCapLmceP) {
    if ((mc.mcg_ext_ctl() & ~kMcgExtCtlLmceEn) != 0) {
      return absl::InvalidArgumentError(
          absl::StrFormat("machine_check.mcg_ext_ctl: 0x%x sets bits other "
                          "than LMCE_EN (bit 0)",
                          mc.mcg_ext_ctl()));
    }
    add(kMsrMcgExtCtl, mc.mcg_ext_ctl());
  } else if (mc.mcg_ext_ctl() != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("machine_check.mcg_ext_ctl: 0x%x, but MCG_CAP 0x%x has "
                        "no LMCE_P (bit 27): there is no MCG_EXT_CTL",
                        mc.mcg_ext_ctl(), cap));
  }
  // Bit i: bank i seen. A bitmask, not a std::set: this runs on every
  // restore (bench/exception_state_bench.cc measures it), and bank indices
  // are below kMaxMceBanks (32) once the range check below has passed.
  static_assert(kMaxMceBanks <= 64);
  uint64_t seen = 0;
  for (int i = 0; i < mc.banks_size(); ++i) {
    const v1::X86MachineCheckBank& bank = mc.banks(i);
    if (bank.index() >= bank_count) {
      return absl::InvalidArgumentError(
          absl::StrFormat("machine_check.banks[%d].index: bank %u, but MCG_CAP "
                          "0x%x has %u banks (0..%u)",
                          i, bank.index(), cap, bank_count,
                          bank_count == 0 ? 0 : bank_count - 1));
    }
    const uint64_t bit = uint64_t{1} << bank.index();
    if ((seen & bit) != 0) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "machine_check.banks[%d].index: bank %u appears more than once", i,
          bank.index()));
    }
    seen |= bit;
    // KVM (set_msr_mce): MCi_CTL is 0 or all-ones; bits 0 and 10 may be clear
    // (AMD quirks).
    if (bank.ctl() != 0 && (bank.ctl() | (1ull << 10) | 1ull) != ~0ull) {
      return absl::InvalidArgumentError(
          absl::StrFormat("machine_check.banks[%d].ctl: 0x%x; KVM accepts only "
                          "0 or all-ones (bits 0 and 10 excepted)",
                          i, bank.ctl()));
    }
    add(McCtlMsr(bank.index()), bank.ctl());
    add(McStatusMsr(bank.index()), bank.status());
    add(McAddrMsr(bank.index()), bank.addr());
    add(McMiscMsr(bank.index()), bank.misc());
  }
  indices->resize(n);
  values->resize(n);
  return absl::OkStatus();
}

absl::Status DecodeEvents(const v1::X86ExceptionState& in,
                          const ExceptionTarget& target, kvm_vcpu_events* e) {
  *e = {};
  const v1::X86Exception& ex = in.exception();
  if (ex.vector() > kMaxExceptionVector) {
    return OutOfRange("exception.vector", ex.vector(), kMaxExceptionVector);
  }
  if (ex.injected() && ex.pending()) {
    return absl::InvalidArgumentError(
        "exception: injected and pending are both set; an exception is either "
        "being delivered or waiting");
  }
  if ((ex.injected() || ex.pending()) && ex.vector() == kNmiVector) {
    return absl::InvalidArgumentError(
        "exception.vector: 2 is the NMI, which is not an exception event; use "
        "nmi.pending or nmi.injected");
  }
  if (ex.has_payload() && !ex.pending()) {
    return absl::InvalidArgumentError(
        "exception.has_payload: a payload (CR2/DR6) belongs to a pending "
        "exception only; KVM applies it when "
        "the exception is injected and would drop this one");
  }
  const v1::X86Interrupt& irq = in.interrupt();
  if (irq.vector() > 0xff)
    return OutOfRange("interrupt.vector", irq.vector(), 0xff);
  if ((irq.shadow() & ~kShadowMask) != 0) {
    return absl::InvalidArgumentError(
        absl::StrFormat("interrupt.shadow: 0x%x has bits other than "
                        "KVM_X86_SHADOW_INT_MOV_SS|_STI (0x%x)",
                        irq.shadow(), kShadowMask));
  }
  if (in.sipi_vector() > 0xff)
    return OutOfRange("sipi_vector", in.sipi_vector(), 0xff);
  const v1::X86Smi& smi = in.smi();
  if (smi.latched_init() > 1)
    return OutOfRange("smi.latched_init", smi.latched_init(), 1);
  const bool smm_state = smi.smm() || smi.pending() || smi.smm_inside_nmi();
  if (smm_state && !target.smm_supported) {
    return absl::FailedPreconditionError(
        absl::StrFormat("smi: the state has SMM state (smm=%d pending=%d "
                        "smm_inside_nmi=%d), this host has no SMM "
                        "(KVM_CAP_X86_SMM=0)",
                        smi.smm(), smi.pending(), smi.smm_inside_nmi()));
  }
  if (in.triple_fault_pending()) {
    return absl::FailedPreconditionError(
        "triple_fault_pending: vexstate VMs do not enable "
        "KVM_CAP_X86_TRIPLE_FAULT_EVENT, so a pending triple "
        "fault cannot be restored");
  }

  e->flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW |
             KVM_VCPUEVENT_VALID_PAYLOAD;
  e->exception.injected = ex.injected();
  e->exception.pending = ex.pending();
  e->exception.nr = ex.vector();
  e->exception.has_error_code = ex.has_error_code();
  e->exception.error_code = ex.error_code();
  e->exception_has_payload = ex.has_payload();
  e->exception_payload = ex.payload();
  e->interrupt.injected = irq.injected();
  e->interrupt.nr = irq.vector();
  e->interrupt.soft = irq.soft();
  e->interrupt.shadow = irq.shadow();
  e->nmi.injected = in.nmi().injected();
  e->nmi.pending = in.nmi().pending();
  e->nmi.masked = in.nmi().masked();
  if (in.has_sipi_vector()) {
    e->flags |= KVM_VCPUEVENT_VALID_SIPI_VECTOR;
    e->sipi_vector = in.sipi_vector();
  }
  if (target.smm_supported || smm_state || smi.latched_init() != 0) {
    e->flags |= KVM_VCPUEVENT_VALID_SMM;
    e->smi.smm = smi.smm();
    e->smi.pending = smi.pending();
    e->smi.smm_inside_nmi = smi.smm_inside_nmi();
    e->smi.latched_init = smi.latched_init();
  }
  return absl::OkStatus();
}

absl::Status DecodeBlob(const std::string& in, absl::string_view field,
                        void* out, size_t size) {
  if (in.size() != size) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "%s: %u bytes, expected %u (the KVM struct)", field, in.size(), size));
  }
  std::memcpy(out, in.data(), size);
  return absl::OkStatus();
}

template <typename T>
std::string Blob(const T& value) {
  return std::string(reinterpret_cast<const char*>(&value), sizeof(T));
}

}  // namespace

// ---------- public

void EncodeVcpuRegisters(const KvmVcpuRegisters& in, v1::X86VcpuState* out) {
  EncodeRegs(in.regs, out);
  EncodeSregs(in.sregs, out);
  out->set_xsave(std::string(in.xsave.begin(), in.xsave.end()));
  out->clear_xcrs();
  for (uint32_t i = 0; i < in.xcrs.nr_xcrs && i < KVM_MAX_XCRS; ++i) {
    v1::X86Xcr* xcr = out->add_xcrs();
    xcr->set_index(in.xcrs.xcrs[i].xcr);
    xcr->set_value(in.xcrs.xcrs[i].value);
  }
  out->set_lapic(std::string(in.lapic.regs, KVM_APIC_REG_SIZE));
  out->clear_msrs();
  for (size_t i = 0; i < in.msr_indices.size() && i < in.msr_values.size();
       ++i) {
    v1::X86Msr* msr = out->add_msrs();
    msr->set_index(in.msr_indices[i]);
    msr->set_value(in.msr_values[i]);
  }
  out->clear_db();
  for (int i = 0; i < kDebugAddressRegisters; ++i)
    out->add_db(in.debugregs.db[i]);
  out->set_dr6(in.debugregs.dr6);
  out->set_dr7(in.debugregs.dr7);
  out->set_tsc_khz(in.tsc_khz);
}

absl::StatusOr<KvmVcpuRegisters> DecodeVcpuRegisters(
    const v1::X86VcpuState& in, size_t xsave_size,
    absl::Span<const uint32_t> known_msrs) {
  KvmVcpuRegisters out;
  out.regs = DecodeRegs(in);
  if (absl::Status s = DecodeSregs(in, &out.sregs); !s.ok()) return s;
  if (absl::Status s = DecodeXsave(in.xsave(), xsave_size, &out.xsave); !s.ok())
    return s;
  if (absl::Status s = DecodeXcrs(in, &out.xcrs); !s.ok()) return s;
  if (absl::Status s = DecodeBlob(in.lapic(), "x86_64.lapic", out.lapic.regs,
                                  KVM_APIC_REG_SIZE);
      !s.ok()) {
    return s;
  }
  if (absl::Status s =
          DecodeMsrs(in, known_msrs, &out.msr_indices, &out.msr_values);
      !s.ok())
    return s;
  if (absl::Status s = DecodeDebugRegs(in, &out.debugregs); !s.ok()) return s;
  out.tsc_khz = in.tsc_khz();
  return out;
}

absl::Status ValidateMpState(uint32_t mp_state) {
  for (uint32_t valid : kValidMpStates) {
    if (mp_state == valid) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(
      absl::StrFormat("mp_state: %u is not an x86 KVM_MP_STATE (RUNNABLE 0, "
                      "UNINITIALIZED 1, INIT_RECEIVED 2, HALTED 3, "
                      "SIPI_RECEIVED 4, AP_RESET_HOLD 9)",
                      mp_state));
}

std::vector<uint32_t> MachineCheckMsrIndices(uint64_t mcg_cap) {
  const uint32_t banks =
      std::min<uint32_t>(mcg_cap & kMcgCapCountMask, kMaxMceBanks);
  std::vector<uint32_t> out;
  out.reserve(4 + 4 * banks);  // called on every capture: one allocation
  out.push_back(kMsrMcgCap);
  out.push_back(kMsrMcgStatus);
  if (mcg_cap & kMcgCapCtlP) out.push_back(kMsrMcgCtl);
  if (mcg_cap & kMcgCapLmceP) out.push_back(kMsrMcgExtCtl);
  for (uint32_t b = 0; b < banks; ++b) {
    out.push_back(McCtlMsr(b));
    out.push_back(McStatusMsr(b));
    out.push_back(McAddrMsr(b));
    out.push_back(McMiscMsr(b));
  }
  return out;
}

v1::X86ExceptionState EncodeExceptionState(const KvmExceptionState& in) {
  v1::X86ExceptionState out;
  const kvm_vcpu_events& e = in.events;
  const bool active = e.exception.injected || e.exception.pending;
  if (active) {
    v1::X86Exception* ex = out.mutable_exception();
    ex->set_injected(e.exception.injected != 0);
    ex->set_pending(e.exception.pending != 0);
    ex->set_vector(e.exception.nr);
    ex->set_has_error_code(e.exception.has_error_code != 0);
    ex->set_error_code(e.exception.error_code);
    if ((e.flags & KVM_VCPUEVENT_VALID_PAYLOAD) && e.exception.pending &&
        e.exception_has_payload) {
      ex->set_has_payload(true);
      ex->set_payload(e.exception_payload);
    }
  }
  if (e.interrupt.injected) {
    out.mutable_interrupt()->set_injected(true);
    out.mutable_interrupt()->set_vector(e.interrupt.nr);
    out.mutable_interrupt()->set_soft(e.interrupt.soft != 0);
  }
  if ((e.flags & KVM_VCPUEVENT_VALID_SHADOW) && e.interrupt.shadow != 0) {
    out.mutable_interrupt()->set_shadow(e.interrupt.shadow);
  }
  if (e.nmi.injected || e.nmi.masked ||
      ((e.flags & KVM_VCPUEVENT_VALID_NMI_PENDING) && e.nmi.pending)) {
    v1::X86Nmi* nmi = out.mutable_nmi();
    nmi->set_injected(e.nmi.injected != 0);
    nmi->set_pending((e.flags & KVM_VCPUEVENT_VALID_NMI_PENDING) &&
                     e.nmi.pending);
    nmi->set_masked(e.nmi.masked != 0);
  }
  if ((e.flags & KVM_VCPUEVENT_VALID_SIPI_VECTOR) || e.sipi_vector != 0) {
    out.set_has_sipi_vector(true);
    out.set_sipi_vector(e.sipi_vector);
  }
  if ((e.flags & KVM_VCPUEVENT_VALID_SMM) &&
      (e.smi.smm || e.smi.pending || e.smi.smm_inside_nmi ||
       e.smi.latched_init)) {
    v1::X86Smi* smi = out.mutable_smi();
    smi->set_smm(e.smi.smm != 0);
    smi->set_pending(e.smi.pending != 0);
    smi->set_smm_inside_nmi(e.smi.smm_inside_nmi != 0);
    smi->set_latched_init(e.smi.latched_init);
  }
  if (e.flags & KVM_VCPUEVENT_VALID_TRIPLE_FAULT)
    out.set_triple_fault_pending(e.triple_fault.pending != 0);
  out.set_kvm_flags(e.flags);
  EncodeMachineCheck(in, &out);
  return out;
}

absl::StatusOr<KvmExceptionState> DecodeExceptionState(
    const v1::X86ExceptionState& in, const ExceptionTarget& target) {
  KvmExceptionState out;
  if (absl::Status s = DecodeEvents(in, target, &out.events); !s.ok()) return s;
  if (in.has_machine_check()) {
    if (absl::Status s = DecodeMachineCheck(in.machine_check(), target,
                                            &out.mce_indices, &out.mce_values);
        !s.ok()) {
      return s;
    }
  }
  return out;
}

void EncodeVmState(const KvmVmState& in, v1::X86VmState* out) {
  out->Clear();
  if (in.has_irqchip) {
    out->set_pic_master(Blob(in.pic_master));
    out->set_pic_slave(Blob(in.pic_slave));
    out->set_ioapic(Blob(in.ioapic));
  }
  if (in.has_pit) out->set_pit(Blob(in.pit));
  out->set_kvmclock_ns(in.clock_ns);
}

absl::StatusOr<KvmVmState> DecodeVmState(const v1::X86VmState& in) {
  KvmVmState out;
  const bool any_chip = !in.pic_master().empty() || !in.pic_slave().empty() ||
                        !in.ioapic().empty();
  if (any_chip) {
    if (absl::Status s = DecodeBlob(in.pic_master(), "pic_master",
                                    &out.pic_master, sizeof(kvm_pic_state));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = DecodeBlob(in.pic_slave(), "pic_slave", &out.pic_slave,
                                    sizeof(kvm_pic_state));
        !s.ok()) {
      return s;
    }
    if (absl::Status s = DecodeBlob(in.ioapic(), "ioapic", &out.ioapic,
                                    sizeof(kvm_ioapic_state));
        !s.ok()) {
      return s;
    }
    out.has_irqchip = true;
  }
  if (!in.pit().empty()) {
    if (absl::Status s =
            DecodeBlob(in.pit(), "pit", &out.pit, sizeof(kvm_pit_state2));
        !s.ok())
      return s;
    out.has_pit = true;
  }
  out.clock_ns = in.kvmclock_ns();
  return out;
}

}  // namespace vexstate::x86
