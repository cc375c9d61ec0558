// Unit tests of the pure KVM <-> proto codec (no /dev/kvm): every struct
// round-trips, and every validation rule refuses with the right code and a
// message naming the field.
#include "vmm/arch/x86_64/state_codec.h"

#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "vmm/arch/x86_64/msr_index.h"

namespace vexstate::x86 {
namespace {

using ::google::protobuf::util::MessageDifferencer;

constexpr size_t kXsaveSize = 4096;
constexpr uint64_t kMcgCap =
    0x1000120;  // 32 banks | CTL_P | SER_P (this host's KVM)

std::mt19937_64 rng(20261123);
uint64_t R64() { return rng(); }
uint32_t R32() { return static_cast<uint32_t>(rng()); }
uint8_t Bit() { return rng() & 1; }

kvm_segment RandomSegment() {
  kvm_segment s = {};
  s.base = R64();
  s.limit = R32();
  s.selector = R32() & 0xffff;
  s.type = R32() & 0xf;
  s.present = Bit();
  s.dpl = R32() & 3;
  s.db = Bit();
  s.s = Bit();
  s.l = Bit();
  s.g = Bit();
  s.avl = Bit();
  s.unusable = Bit();
  return s;
}

const std::vector<uint32_t> kKnownMsrs = {0x174, 0xc0000081, 0x10,      0x277,
                                          0x6e0, 0x1a0,      0x4b564d01};

KvmVcpuRegisters RandomRegisters() {
  KvmVcpuRegisters r;
  __u64* regs = &r.regs.rax;
  for (size_t i = 0; i < sizeof(kvm_regs) / sizeof(uint64_t); ++i)
    regs[i] = R64();
  r.sregs.cs = RandomSegment();
  r.sregs.ds = RandomSegment();
  r.sregs.es = RandomSegment();
  r.sregs.fs = RandomSegment();
  r.sregs.gs = RandomSegment();
  r.sregs.ss = RandomSegment();
  r.sregs.tr = RandomSegment();
  r.sregs.ldt = RandomSegment();
  r.sregs.gdt.base = R64();
  r.sregs.gdt.limit = R32() & 0xffff;
  r.sregs.idt.base = R64();
  r.sregs.idt.limit = R32() & 0xffff;
  r.sregs.cr0 = R64();
  r.sregs.cr2 = R64();
  r.sregs.cr3 = R64();
  r.sregs.cr4 = R64();
  r.sregs.cr8 = R64() & 0xf;
  r.sregs.efer = R64();
  r.sregs.apic_base = R64();
  for (auto& w : r.sregs.interrupt_bitmap) w = R64();
  r.xsave.resize(kXsaveSize);
  for (auto& b : r.xsave) b = static_cast<uint8_t>(R32());
  const uint32_t mxcsr = 0x1f80;
  std::memcpy(r.xsave.data() + 24, &mxcsr, 4);
  std::memset(r.xsave.data() + 520, 0,
              576 - 520);  // XCOMP_BV and the reserved header bytes
  r.xcrs.nr_xcrs = 1;
  r.xcrs.xcrs[0].xcr = 0;
  r.xcrs.xcrs[0].value = 0x7;
  for (auto& c : r.lapic.regs) c = static_cast<char>(R32());
  // The TSC deadline sits last, where the decoder puts it.
  r.msr_indices = {0x174,      0xc0000081,         0x10, 0x277, 0x1a0,
                   0x4b564d01, kMsrIa32TscDeadline};
  for (size_t i = 0; i < r.msr_indices.size(); ++i)
    r.msr_values.push_back(R64());
  for (auto& d : r.debugregs.db) d = R64();
  r.debugregs.dr6 = R32();
  r.debugregs.dr7 = R32();
  r.tsc_khz = 2445406;
  return r;
}

void ExpectSameRegisters(const KvmVcpuRegisters& a, const KvmVcpuRegisters& b) {
  EXPECT_EQ(std::memcmp(&a.regs, &b.regs, sizeof(a.regs)), 0);
  EXPECT_EQ(std::memcmp(&a.sregs, &b.sregs, sizeof(a.sregs)), 0);
  EXPECT_EQ(a.xsave, b.xsave);
  EXPECT_EQ(std::memcmp(&a.xcrs, &b.xcrs, sizeof(a.xcrs)), 0);
  EXPECT_EQ(std::memcmp(&a.lapic, &b.lapic, sizeof(a.lapic)), 0);
  EXPECT_EQ(a.msr_indices, b.msr_indices);
  EXPECT_EQ(a.msr_values, b.msr_values);
  EXPECT_EQ(std::memcmp(&a.debugregs, &b.debugregs, sizeof(a.debugregs)), 0);
  EXPECT_EQ(a.tsc_khz, b.tsc_khz);
}

TEST(StateCodecTest, RegistersRoundTrip) {
  for (int round = 0; round < 20; ++round) {
    KvmVcpuRegisters in = RandomRegisters();
    v1::X86VcpuState proto;
    EncodeVcpuRegisters(in, &proto);
    absl::StatusOr<KvmVcpuRegisters> out =
        DecodeVcpuRegisters(proto, kXsaveSize, kKnownMsrs);
    ASSERT_TRUE(out.ok()) << out.status();
    ExpectSameRegisters(in, *out);
    // And proto -> KVM -> proto.
    v1::X86VcpuState again;
    EncodeVcpuRegisters(*out, &again);
    EXPECT_TRUE(MessageDifferencer::Equals(proto, again))
        << proto.DebugString() << again.DebugString();
  }
}

TEST(StateCodecTest, TscDeadlineIsWrittenLast) {
  KvmVcpuRegisters in = RandomRegisters();
  v1::X86VcpuState proto;
  EncodeVcpuRegisters(in, &proto);
  // Put the deadline first, as KVM's index list might.
  proto.mutable_msrs()->SwapElements(0, proto.msrs_size() - 1);
  ASSERT_EQ(proto.msrs(0).index(), kMsrIa32TscDeadline);
  absl::StatusOr<KvmVcpuRegisters> out =
      DecodeVcpuRegisters(proto, kXsaveSize, kKnownMsrs);
  ASSERT_TRUE(out.ok()) << out.status();
  ASSERT_EQ(out->msr_indices.size(), in.msr_indices.size());
  EXPECT_EQ(out->msr_indices.back(), kMsrIa32TscDeadline);
  EXPECT_EQ(out->msr_values.back(), in.msr_values.back());
}

TEST(StateCodecTest, EmptyOptionalRegisterParts) {
  KvmVcpuRegisters in = RandomRegisters();
  v1::X86VcpuState proto;
  EncodeVcpuRegisters(in, &proto);
  proto.clear_interrupt_bitmap();
  proto.clear_xcrs();
  proto.clear_msrs();
  absl::StatusOr<KvmVcpuRegisters> out =
      DecodeVcpuRegisters(proto, kXsaveSize, kKnownMsrs);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->xcrs.nr_xcrs, 0u);
  EXPECT_TRUE(out->msr_indices.empty());
  for (uint64_t w : out->sregs.interrupt_bitmap) EXPECT_EQ(w, 0u);
}

struct BadCase {
  const char* name;
  std::function<void(v1::X86VcpuState*)> mutate;
  absl::StatusCode code;
  const char* field;  // must appear in the message
};

TEST(StateCodecTest, RegisterValidationNamesTheField) {
  const std::vector<BadCase> cases = {
      {"dpl", [](v1::X86VcpuState* s) { s->mutable_cs()->set_dpl(4); },
       absl::StatusCode::kInvalidArgument,
       "x86_64.cs.dpl: 4 is out of range [0, 3]"},
      {"selector",
       [](v1::X86VcpuState* s) { s->mutable_ss()->set_selector(0x10000); },
       absl::StatusCode::kInvalidArgument, "x86_64.ss.selector"},
      {"type", [](v1::X86VcpuState* s) { s->mutable_tr()->set_type(16); },
       absl::StatusCode::kInvalidArgument, "x86_64.tr.type"},
      {"ldt", [](v1::X86VcpuState* s) { s->mutable_ldt()->set_dpl(7); },
       absl::StatusCode::kInvalidArgument, "x86_64.ldt.dpl"},
      {"gdt", [](v1::X86VcpuState* s) { s->mutable_gdt()->set_limit(0x10000); },
       absl::StatusCode::kInvalidArgument, "x86_64.gdt.limit"},
      {"idt", [](v1::X86VcpuState* s) { s->mutable_idt()->set_limit(0x1ffff); },
       absl::StatusCode::kInvalidArgument, "x86_64.idt.limit"},
      {"cr8", [](v1::X86VcpuState* s) { s->set_cr8(16); },
       absl::StatusCode::kInvalidArgument, "x86_64.cr8"},
      {"bitmap",
       [](v1::X86VcpuState* s) { s->mutable_interrupt_bitmap()->RemoveLast(); },
       absl::StatusCode::kInvalidArgument, "x86_64.interrupt_bitmap"},
      {"xsave size",
       [](v1::X86VcpuState* s) { s->mutable_xsave()->resize(4000); },
       absl::StatusCode::kInvalidArgument, "x86_64.xsave: 4000 bytes"},
      {"xcomp_bv",
       [](v1::X86VcpuState* s) { (*s->mutable_xsave())[527] = 0x80; },
       absl::StatusCode::kInvalidArgument, "x86_64.xsave: XCOMP_BV"},
      {"xsave reserved",
       [](v1::X86VcpuState* s) { (*s->mutable_xsave())[560] = 1; },
       absl::StatusCode::kInvalidArgument, "x86_64.xsave: reserved"},
      {"mxcsr", [](v1::X86VcpuState* s) { (*s->mutable_xsave())[26] = 1; },
       absl::StatusCode::kInvalidArgument, "x86_64.xsave: MXCSR"},
      {"xcr index",
       [](v1::X86VcpuState* s) { s->mutable_xcrs(0)->set_index(1); },
       absl::StatusCode::kInvalidArgument, "x86_64.xcrs[0].index"},
      {"xcr0 x87",
       [](v1::X86VcpuState* s) { s->mutable_xcrs(0)->set_value(0x6); },
       absl::StatusCode::kInvalidArgument, "x86_64.xcrs[0].value"},
      {"xcr0 avx",
       [](v1::X86VcpuState* s) { s->mutable_xcrs(0)->set_value(0x5); },
       absl::StatusCode::kInvalidArgument, "AVX without SSE"},
      {"two xcrs", [](v1::X86VcpuState* s) { *s->add_xcrs() = s->xcrs(0); },
       absl::StatusCode::kInvalidArgument, "x86_64.xcrs: 2 entries"},
      {"lapic", [](v1::X86VcpuState* s) { s->mutable_lapic()->resize(1000); },
       absl::StatusCode::kInvalidArgument,
       "x86_64.lapic: 1000 bytes, expected 1024"},
      {"mce msr",
       [](v1::X86VcpuState* s) {
         s->mutable_msrs(0)->set_index(kMsrMcgStatus);
       },
       absl::StatusCode::kInvalidArgument,
       "x86_64.msrs[0].index: MSR 0x17a is a machine-check MSR"},
      {"bank msr",
       [](v1::X86VcpuState* s) {
         s->mutable_msrs(1)->set_index(McStatusMsr(3));
       },
       absl::StatusCode::kInvalidArgument, "x86_64.msrs[1].index: MSR 0x40d"},
      {"dup msr",
       [](v1::X86VcpuState* s) {
         s->mutable_msrs(1)->set_index(s->msrs(0).index());
       },
       absl::StatusCode::kInvalidArgument,
       "x86_64.msrs[1].index: MSR 0x174 appears more than once"},
      {"unknown msr",
       [](v1::X86VcpuState* s) { s->mutable_msrs(2)->set_index(0xc0000103); },
       absl::StatusCode::kFailedPrecondition,
       "x86_64.msrs[2].index: MSR 0xc0000103 is not one"},
      {"db count", [](v1::X86VcpuState* s) { s->mutable_db()->RemoveLast(); },
       absl::StatusCode::kInvalidArgument, "x86_64.db: 3 entries"},
      {"dr6", [](v1::X86VcpuState* s) { s->set_dr6(1ull << 32); },
       absl::StatusCode::kInvalidArgument, "x86_64.dr6"},
      {"dr7", [](v1::X86VcpuState* s) { s->set_dr7(1ull << 40); },
       absl::StatusCode::kInvalidArgument, "x86_64.dr7"},
  };
  KvmVcpuRegisters in = RandomRegisters();
  v1::X86VcpuState good;
  EncodeVcpuRegisters(in, &good);
  ASSERT_TRUE(DecodeVcpuRegisters(good, kXsaveSize, kKnownMsrs).ok());
  for (const BadCase& c : cases) {
    v1::X86VcpuState bad = good;
    c.mutate(&bad);
    absl::StatusOr<KvmVcpuRegisters> out =
        DecodeVcpuRegisters(bad, kXsaveSize, kKnownMsrs);
    ASSERT_FALSE(out.ok()) << c.name;
    EXPECT_EQ(out.status().code(), c.code) << c.name << ": " << out.status();
    EXPECT_NE(out.status().message().find(c.field), absl::string_view::npos)
        << c.name << ": " << out.status();
  }
}

TEST(StateCodecTest, MpStateValidation) {
  for (uint32_t ok : {0u, 1u, 2u, 3u, 4u, 9u})
    EXPECT_TRUE(ValidateMpState(ok).ok()) << ok;
  for (uint32_t bad : {5u, 6u, 7u, 8u, 10u, 1000u}) {
    absl::Status s = ValidateMpState(bad);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(s.message().find("mp_state"), absl::string_view::npos);
  }
}

// ---------- events

kvm_vcpu_events GetLikeEvents() {
  kvm_vcpu_events e = {};
  // What KVM_GET_VCPU_EVENTS reports with KVM_CAP_EXCEPTION_PAYLOAD on a host
  // without SMM.
  e.flags = KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SHADOW |
            KVM_VCPUEVENT_VALID_SMM | KVM_VCPUEVENT_VALID_PAYLOAD;
  return e;
}

// kvm_flags records what GET reported; SET uses its own flags
// (DecodeExceptionState).
v1::X86ExceptionState WithoutFlags(v1::X86ExceptionState state) {
  state.clear_kvm_flags();
  return state;
}

void ExpectSameEvents(const kvm_vcpu_events& a, const kvm_vcpu_events& b) {
  EXPECT_EQ(a.exception.injected, b.exception.injected);
  EXPECT_EQ(a.exception.pending, b.exception.pending);
  EXPECT_EQ(a.exception.nr, b.exception.nr);
  EXPECT_EQ(a.exception.has_error_code, b.exception.has_error_code);
  EXPECT_EQ(a.exception.error_code, b.exception.error_code);
  EXPECT_EQ(a.exception_has_payload, b.exception_has_payload);
  EXPECT_EQ(a.exception_payload, b.exception_payload);
  EXPECT_EQ(a.interrupt.injected, b.interrupt.injected);
  EXPECT_EQ(a.interrupt.nr, b.interrupt.nr);
  EXPECT_EQ(a.interrupt.soft, b.interrupt.soft);
  EXPECT_EQ(a.interrupt.shadow, b.interrupt.shadow);
  EXPECT_EQ(a.nmi.injected, b.nmi.injected);
  EXPECT_EQ(a.nmi.pending, b.nmi.pending);
  EXPECT_EQ(a.nmi.masked, b.nmi.masked);
  EXPECT_EQ(a.sipi_vector, b.sipi_vector);
  EXPECT_EQ(a.smi.smm, b.smi.smm);
  EXPECT_EQ(a.smi.pending, b.smi.pending);
  EXPECT_EQ(a.smi.smm_inside_nmi, b.smi.smm_inside_nmi);
  EXPECT_EQ(a.smi.latched_init, b.smi.latched_init);
}

TEST(StateCodecTest, EventsRoundTrip) {
  std::vector<kvm_vcpu_events> variants;
  kvm_vcpu_events e = GetLikeEvents();
  e.exception.pending = 1;  // pending #PF with its CR2 payload
  e.exception.nr = 14;
  e.exception.has_error_code = 1;
  e.exception.error_code = 2;
  e.exception_has_payload = 1;
  e.exception_payload = 0xdead000;
  variants.push_back(e);
  e = GetLikeEvents();
  e.exception.injected = 1;  // #GP being delivered
  e.exception.nr = 13;
  e.exception.has_error_code = 1;
  e.exception.error_code = 0x18;
  e.nmi.injected = 1;
  e.nmi.pending = 1;
  e.nmi.masked = 1;
  variants.push_back(e);
  e = GetLikeEvents();
  e.exception.pending = 1;  // pending #MC, as KVM_X86_SET_MCE leaves it
  e.exception.nr = 18;
  e.interrupt.injected = 1;
  e.interrupt.nr = 0x30;
  e.interrupt.soft = 1;
  e.interrupt.shadow = KVM_X86_SHADOW_INT_MOV_SS;
  e.sipi_vector = 0x9a;
  e.smi.latched_init = 1;
  variants.push_back(e);
  e = GetLikeEvents();  // nothing at all
  variants.push_back(e);

  const ExceptionTarget target{kMcgCap, /*smm_supported=*/false};
  for (const kvm_vcpu_events& in : variants) {
    KvmExceptionState kvm;
    kvm.events = in;
    v1::X86ExceptionState proto = EncodeExceptionState(kvm);
    EXPECT_EQ(proto.kvm_flags(), in.flags);
    EXPECT_FALSE(proto.has_machine_check());
    absl::StatusOr<KvmExceptionState> out = DecodeExceptionState(proto, target);
    ASSERT_TRUE(out.ok()) << out.status() << proto.DebugString();
    ExpectSameEvents(in, out->events);
    EXPECT_TRUE(out->mce_indices.empty());
    EXPECT_TRUE(MessageDifferencer::Equals(
        WithoutFlags(proto), WithoutFlags(EncodeExceptionState(*out))));
  }
}

TEST(StateCodecTest, SmmRoundTripWhenTheHostHasSmm) {
  KvmExceptionState kvm;
  kvm.events = GetLikeEvents();
  kvm.events.smi.smm = 1;
  kvm.events.smi.pending = 1;
  kvm.events.smi.smm_inside_nmi = 1;
  v1::X86ExceptionState proto = EncodeExceptionState(kvm);
  absl::StatusOr<KvmExceptionState> out =
      DecodeExceptionState(proto, {kMcgCap, /*smm_supported=*/true});
  ASSERT_TRUE(out.ok()) << out.status();
  ExpectSameEvents(kvm.events, out->events);
  EXPECT_TRUE(out->events.flags & KVM_VCPUEVENT_VALID_SMM);
}

TEST(StateCodecTest, EventFlagsOnSet) {
  KvmExceptionState kvm;
  kvm.events = GetLikeEvents();
  v1::X86ExceptionState proto = EncodeExceptionState(kvm);
  const uint32_t always = KVM_VCPUEVENT_VALID_NMI_PENDING |
                          KVM_VCPUEVENT_VALID_SHADOW |
                          KVM_VCPUEVENT_VALID_PAYLOAD;

  absl::StatusOr<KvmExceptionState> out =
      DecodeExceptionState(proto, {kMcgCap, false});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->events.flags, always);  // no SIPI, no SMM, never TRIPLE_FAULT

  out = DecodeExceptionState(proto, {kMcgCap, true});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(
      out->events.flags,
      always | KVM_VCPUEVENT_VALID_SMM);  // SMM host: SMM state is restored

  proto.set_has_sipi_vector(true);
  proto.set_sipi_vector(0);
  proto.mutable_smi()->set_latched_init(1);
  out = DecodeExceptionState(proto, {kMcgCap, false});
  ASSERT_TRUE(out.ok());
  EXPECT_EQ(out->events.flags,
            always | KVM_VCPUEVENT_VALID_SIPI_VECTOR | KVM_VCPUEVENT_VALID_SMM);
}

TEST(StateCodecTest, StaleEventFieldsAreNotState) {
  // After delivery (or after KVM_SET_REGS cleared it) KVM still reports the
  // last vector and payload with pending = injected = 0: nothing is pending,
  // and the proto says so.
  KvmExceptionState kvm;
  kvm.events = GetLikeEvents();
  kvm.events.exception.nr = 14;
  kvm.events.exception.has_error_code = 1;
  kvm.events.exception.error_code = 2;
  kvm.events.exception_has_payload = 1;
  kvm.events.exception_payload = 0xdead000;
  kvm.events.interrupt.nr = 0x41;
  v1::X86ExceptionState proto = EncodeExceptionState(kvm);
  EXPECT_FALSE(proto.has_exception());
  EXPECT_FALSE(proto.has_interrupt());
  // Payload of an injected exception: KVM applied it already.
  kvm.events.exception.injected = 1;
  proto = EncodeExceptionState(kvm);
  EXPECT_TRUE(proto.exception().injected());
  EXPECT_EQ(proto.exception().vector(), 14u);
  EXPECT_FALSE(proto.exception().has_payload());
}

struct BadEventCase {
  const char* name;
  std::function<void(v1::X86ExceptionState*)> mutate;
  absl::StatusCode code;
  const char* field;
};

TEST(StateCodecTest, EventValidationNamesTheField) {
  const std::vector<BadEventCase> cases = {
      {"vector",
       [](v1::X86ExceptionState* s) { s->mutable_exception()->set_vector(32); },
       absl::StatusCode::kInvalidArgument,
       "exception.vector: 32 is out of range [0, 31]"},
      {"nmi vector",
       [](v1::X86ExceptionState* s) { s->mutable_exception()->set_vector(2); },
       absl::StatusCode::kInvalidArgument, "exception.vector: 2 is the NMI"},
      {"both",
       [](v1::X86ExceptionState* s) {
         s->mutable_exception()->set_injected(true);
       },
       absl::StatusCode::kInvalidArgument, "injected and pending are both set"},
      {"payload",
       [](v1::X86ExceptionState* s) {
         s->mutable_exception()->set_pending(false);
       },
       absl::StatusCode::kInvalidArgument, "exception.has_payload"},
      {"irq vector",
       [](v1::X86ExceptionState* s) {
         s->mutable_interrupt()->set_vector(256);
       },
       absl::StatusCode::kInvalidArgument, "interrupt.vector"},
      {"shadow",
       [](v1::X86ExceptionState* s) { s->mutable_interrupt()->set_shadow(4); },
       absl::StatusCode::kInvalidArgument, "interrupt.shadow"},
      {"sipi", [](v1::X86ExceptionState* s) { s->set_sipi_vector(0x100); },
       absl::StatusCode::kInvalidArgument, "sipi_vector"},
      {"latched_init",
       [](v1::X86ExceptionState* s) { s->mutable_smi()->set_latched_init(2); },
       absl::StatusCode::kInvalidArgument, "smi.latched_init"},
      {"smm", [](v1::X86ExceptionState* s) { s->mutable_smi()->set_smm(true); },
       absl::StatusCode::kFailedPrecondition, "this host has no SMM"},
      {"triple",
       [](v1::X86ExceptionState* s) { s->set_triple_fault_pending(true); },
       absl::StatusCode::kFailedPrecondition, "triple_fault_pending"},
  };
  v1::X86ExceptionState good;
  good.mutable_exception()->set_pending(true);
  good.mutable_exception()->set_vector(14);
  good.mutable_exception()->set_has_payload(true);
  good.mutable_exception()->set_payload(0xdead000);
  ASSERT_TRUE(DecodeExceptionState(good, {kMcgCap, false}).ok());
  for (const BadEventCase& c : cases) {
    v1::X86ExceptionState bad = good;
    c.mutate(&bad);
    absl::StatusOr<KvmExceptionState> out =
        DecodeExceptionState(bad, {kMcgCap, false});
    ASSERT_FALSE(out.ok()) << c.name;
    EXPECT_EQ(out.status().code(), c.code) << c.name << ": " << out.status();
    EXPECT_NE(out.status().message().find(c.field), absl::string_view::npos)
        << c.name << ": " << out.status();
  }
}

// ---------- machine check

TEST(StateCodecTest, MachineCheckMsrIndices) {
  std::vector<uint32_t> idx = MachineCheckMsrIndices(kMcgCap);
  ASSERT_EQ(idx.size(), 3u + 4 * 32);
  EXPECT_EQ(idx[0], kMsrMcgCap);
  EXPECT_EQ(idx[1], kMsrMcgStatus);
  EXPECT_EQ(idx[2], kMsrMcgCtl);
  EXPECT_EQ(idx[3], 0x400u);
  EXPECT_EQ(idx.back(), 0x47fu);
  // No CTL_P: no MCG_CTL. LMCE_P: MCG_EXT_CTL.
  idx = MachineCheckMsrIndices(10 | kMcgCapLmceP);
  ASSERT_EQ(idx.size(), 3u + 4 * 10);
  EXPECT_EQ(idx[2], kMsrMcgExtCtl);
  // Never past bank 31 (0x480 is IA32_VMX_BASIC).
  idx = MachineCheckMsrIndices(0xff);
  ASSERT_EQ(idx.size(), 2u + 4 * 32);
  EXPECT_EQ(idx.back(), 0x47fu);
}

KvmExceptionState WithBanks(uint64_t mcg_cap) {
  KvmExceptionState kvm;
  kvm.events = GetLikeEvents();
  const std::vector<uint32_t> indices = MachineCheckMsrIndices(mcg_cap);
  kvm.mce_indices.assign(indices.begin(), indices.end());
  for (uint32_t msr : kvm.mce_indices) {
    uint64_t v = 0;
    if (msr == kMsrMcgCap) v = mcg_cap;
    if (msr == kMsrMcgStatus) v = 0x5;
    if (msr == kMsrMcgCtl) v = ~0ull;
    if (msr >= kMsrMc0Ctl) {
      switch ((msr - kMsrMc0Ctl) % 4) {
        case 0:
          v = ~0ull;
          break;  // CTL
        case 1:
          v = 0xbc00000000000000ull | (msr - kMsrMc0Ctl);
          break;  // STATUS
        case 2:
          v = 0x12345000 + msr;
          break;  // ADDR
        case 3:
          v = 0x86 + msr;
          break;  // MISC
      }
    }
    kvm.mce_values.push_back(v);
  }
  return kvm;
}

TEST(StateCodecTest, MachineCheckRoundTrip) {
  KvmExceptionState kvm = WithBanks(kMcgCap);
  v1::X86ExceptionState proto = EncodeExceptionState(kvm);
  ASSERT_TRUE(proto.has_machine_check());
  const v1::X86MachineCheckState& mc = proto.machine_check();
  EXPECT_EQ(mc.mcg_cap(), kMcgCap);
  EXPECT_EQ(mc.mcg_status(), 0x5u);
  EXPECT_EQ(mc.mcg_ctl(), ~0ull);
  ASSERT_EQ(mc.banks_size(), 32);
  EXPECT_EQ(mc.banks(3).index(), 3u);
  EXPECT_EQ(mc.banks(3).status(), 0xbc0000000000000dull);
  EXPECT_EQ(mc.banks(3).addr(), 0x12345000u + McAddrMsr(3));

  absl::StatusOr<KvmExceptionState> out =
      DecodeExceptionState(proto, {kMcgCap, false});
  ASSERT_TRUE(out.ok()) << out.status();
  // Everything but MCG_CAP, in capture order.
  decltype(kvm.mce_indices) expected_idx(kvm.mce_indices.begin() + 1,
                                         kvm.mce_indices.end());
  decltype(kvm.mce_values) expected_val(kvm.mce_values.begin() + 1,
                                        kvm.mce_values.end());
  EXPECT_EQ(out->mce_indices, expected_idx);
  EXPECT_EQ(out->mce_values, expected_val);
  KvmExceptionState back = *out;
  back.mce_indices.insert(back.mce_indices.begin(), kMsrMcgCap);
  back.mce_values.insert(back.mce_values.begin(), kMcgCap);
  EXPECT_TRUE(MessageDifferencer::Equals(
      WithoutFlags(proto), WithoutFlags(EncodeExceptionState(back))));
}

TEST(StateCodecTest, LmceRoundTrip) {
  const uint64_t cap = 4 | kMcgCapLmceP;
  KvmExceptionState kvm = WithBanks(cap);
  kvm.mce_values[2] = 1;  // MCG_EXT_CTL.LMCE_EN
  v1::X86ExceptionState proto = EncodeExceptionState(kvm);
  EXPECT_EQ(proto.machine_check().mcg_ext_ctl(), 1u);
  absl::StatusOr<KvmExceptionState> out =
      DecodeExceptionState(proto, {cap, false});
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_EQ(out->mce_indices[1], kMsrMcgExtCtl);
  EXPECT_EQ(out->mce_values[1], 1u);
}

TEST(StateCodecTest, NoMachineCheckWritesNothing) {
  v1::X86ExceptionState proto;
  absl::StatusOr<KvmExceptionState> out =
      DecodeExceptionState(proto, {kMcgCap, false});
  ASSERT_TRUE(out.ok());
  EXPECT_TRUE(out->mce_indices.empty());
}

struct BadMceCase {
  const char* name;
  std::function<void(v1::X86MachineCheckState*)> mutate;
  absl::StatusCode code;
  const char* field;
};

TEST(StateCodecTest, MachineCheckValidationNamesTheField) {
  const std::vector<BadMceCase> cases = {
      {"cap", [](v1::X86MachineCheckState* m) { m->set_mcg_cap(0x100010a); },
       absl::StatusCode::kFailedPrecondition,
       "the state has MCG_CAP 0x100010a (10 banks), this vCPU has MCG_CAP "
       "0x1000120 (32 banks)"},
      {"bank index",
       [](v1::X86MachineCheckState* m) { m->mutable_banks(5)->set_index(32); },
       absl::StatusCode::kInvalidArgument,
       "machine_check.banks[5].index: bank 32"},
      {"bank dup",
       [](v1::X86MachineCheckState* m) { m->mutable_banks(5)->set_index(4); },
       absl::StatusCode::kInvalidArgument,
       "machine_check.banks[5].index: bank 4 appears more than once"},
      {"bank ctl",
       [](v1::X86MachineCheckState* m) { m->mutable_banks(1)->set_ctl(0x5); },
       absl::StatusCode::kInvalidArgument, "machine_check.banks[1].ctl"},
      {"mcg_ctl", [](v1::X86MachineCheckState* m) { m->set_mcg_ctl(0x5); },
       absl::StatusCode::kInvalidArgument, "machine_check.mcg_ctl: 0x5"},
      {"ext_ctl", [](v1::X86MachineCheckState* m) { m->set_mcg_ext_ctl(1); },
       absl::StatusCode::kInvalidArgument,
       "machine_check.mcg_ext_ctl: 0x1, but MCG_CAP 0x1000120 has no LMCE_P"},
  };
  v1::X86ExceptionState good = EncodeExceptionState(WithBanks(kMcgCap));
  for (const BadMceCase& c : cases) {
    v1::X86ExceptionState bad = good;
    c.mutate(bad.mutable_machine_check());
    absl::StatusOr<KvmExceptionState> out =
        DecodeExceptionState(bad, {kMcgCap, false});
    ASSERT_FALSE(out.ok()) << c.name;
    EXPECT_EQ(out.status().code(), c.code) << c.name << ": " << out.status();
    EXPECT_NE(out.status().message().find(c.field), absl::string_view::npos)
        << c.name << ": " << out.status();
  }
  // KVM's tolerated MCi_CTL forms: all-ones with bit 0 or bit 10 clear.
  v1::X86ExceptionState ok = good;
  ok.mutable_machine_check()->mutable_banks(0)->set_ctl(~0ull & ~(1ull << 10));
  ok.mutable_machine_check()->mutable_banks(1)->set_ctl(~1ull);
  ok.mutable_machine_check()->mutable_banks(2)->set_ctl(0);
  EXPECT_TRUE(DecodeExceptionState(ok, {kMcgCap, false}).ok());
  // Without CTL_P there is no MCG_CTL.
  const uint64_t no_ctl = 32;
  v1::X86ExceptionState no_ctl_state = EncodeExceptionState(WithBanks(no_ctl));
  no_ctl_state.mutable_machine_check()->set_mcg_ctl(~0ull);
  absl::StatusOr<KvmExceptionState> out =
      DecodeExceptionState(no_ctl_state, {no_ctl, false});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("has no CTL_P"),
            absl::string_view::npos)
      << out.status();
  // LMCE_P with bits other than LMCE_EN.
  const uint64_t lmce = 4 | kMcgCapLmceP;
  v1::X86ExceptionState lmce_state = EncodeExceptionState(WithBanks(lmce));
  lmce_state.mutable_machine_check()->set_mcg_ext_ctl(2);
  out = DecodeExceptionState(lmce_state, {lmce, false});
  ASSERT_FALSE(out.ok());
  EXPECT_NE(
      out.status().message().find("machine_check.mcg_ext_ctl: 0x2 sets bits"),
      absl::string_view::npos);
}

// ---------- VM

template <typename T>
void FillRandom(T* value) {
  auto* bytes = reinterpret_cast<uint8_t*>(value);
  for (size_t i = 0; i < sizeof(T); ++i) bytes[i] = static_cast<uint8_t>(R32());
}

TEST(StateCodecTest, VmStateRoundTrip) {
  KvmVmState in;
  in.has_irqchip = true;
  FillRandom(&in.pic_master);
  FillRandom(&in.pic_slave);
  FillRandom(&in.ioapic);
  in.has_pit = true;
  FillRandom(&in.pit);
  in.clock_ns = 0x123456789;
  v1::X86VmState proto;
  EncodeVmState(in, &proto);
  absl::StatusOr<KvmVmState> out = DecodeVmState(proto);
  ASSERT_TRUE(out.ok()) << out.status();
  EXPECT_TRUE(out->has_irqchip);
  EXPECT_TRUE(out->has_pit);
  EXPECT_EQ(
      std::memcmp(&in.pic_master, &out->pic_master, sizeof(in.pic_master)), 0);
  EXPECT_EQ(std::memcmp(&in.pic_slave, &out->pic_slave, sizeof(in.pic_slave)),
            0);
  EXPECT_EQ(std::memcmp(&in.ioapic, &out->ioapic, sizeof(in.ioapic)), 0);
  EXPECT_EQ(std::memcmp(&in.pit, &out->pit, sizeof(in.pit)), 0);
  EXPECT_EQ(out->clock_ns, in.clock_ns);

  // No irqchip, no PIT: empty blobs.
  KvmVmState bare;
  bare.clock_ns = 7;
  EncodeVmState(bare, &proto);
  EXPECT_TRUE(proto.pic_master().empty());
  EXPECT_TRUE(proto.pit().empty());
  out = DecodeVmState(proto);
  ASSERT_TRUE(out.ok());
  EXPECT_FALSE(out->has_irqchip);
  EXPECT_FALSE(out->has_pit);
  EXPECT_EQ(out->clock_ns, 7u);
}

TEST(StateCodecTest, VmStateValidationNamesTheField) {
  KvmVmState in;
  in.has_irqchip = true;
  in.has_pit = true;
  v1::X86VmState good;
  EncodeVmState(in, &good);

  v1::X86VmState bad = good;
  bad.mutable_pic_master()->resize(10);
  absl::StatusOr<KvmVmState> out = DecodeVmState(bad);
  ASSERT_FALSE(out.ok());
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(out.status().message().find("pic_master: 10 bytes"),
            absl::string_view::npos)
      << out.status();

  bad = good;
  bad.clear_pic_slave();  // a partial irqchip
  out = DecodeVmState(bad);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("pic_slave: 0 bytes"),
            absl::string_view::npos)
      << out.status();

  bad = good;
  bad.mutable_ioapic()->append("x");
  out = DecodeVmState(bad);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("ioapic"), absl::string_view::npos)
      << out.status();

  bad = good;
  bad.mutable_pit()->resize(8);
  out = DecodeVmState(bad);
  ASSERT_FALSE(out.ok());
  EXPECT_NE(out.status().message().find("pit: 8 bytes"),
            absl::string_view::npos)
      << out.status();
}

}  // namespace
}  // namespace vexstate::x86
