// Pure conversions between KVM's x86_64 state structs and the vexstate.v1
// protos, with the validation a restore needs before its first SET ioctl.
//
// Contract:
//  - No ioctls and no global state: every function is a pure function of its
//    arguments and may be called from any thread. vcpu_state.h issues the
//    ioctls.
//  - Encode* cannot fail: it records what KVM returned. Where KVM reports stale
//    values that are not state (the vector of an exception delivered long ago,
//    a payload KVM already applied) the encoder normalises them to the proto3
//    zero value, which the schema defines as "nothing pending" (documented at
//    each encoder).
//  - Decode* checks everything that can be checked without KVM, and returns
//    either a complete KVM-side value or an error, never half of one:
//      INVALID_ARGUMENT     the input is malformed or violates a rule KVM or
//                           the architecture enforces; the message names the
//                           proto field ("x86_64.cs.dpl: 4 is out of range
//                           [0, 3]");
//      FAILED_PRECONDITION  the input is well formed but this destination
//                           cannot hold it (an MSR it does not save, another
//                           MCG_CAP, SMM without SMM support).
//    Callers decode everything first and issue SET ioctls only when all
//    decodes succeeded.
//  - Blobs are used only where the proto says so: the XSAVE area and the LAPIC
//    page (architectural layouts) and the PIC/IOAPIC/PIT structs (KVM's stable
//    ABI, host-endian, i.e. little-endian on x86_64).
#ifndef VEXSTATE_VMM_ARCH_X86_64_STATE_CODEC_H_
#define VEXSTATE_VMM_ARCH_X86_64_STATE_CODEC_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/container/inlined_vector.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "vexstate/v1/exception_state.pb.h"
#include "vexstate/v1/vcpu_state.pb.h"
#include "vmm/arch/x86_64/mce_decode.h"
#include "vmm/arch/x86_64/msr_index.h"
#include "vmm/kvm/linux_kvm.h"

namespace vexstate::x86 {

// ---------- registers

// One vCPU's register state (everything but the exception state and the MP
// state) in the structs the KVM GET/SET ioctls take.
struct KvmVcpuRegisters {
  kvm_regs regs{};
  kvm_sregs sregs{};
  // KVM_GET_XSAVE / KVM_GET_XSAVE2 area (standard, non-compacted format).
  std::vector<uint8_t> xsave;
  kvm_xcrs xcrs{};
  kvm_lapic_state lapic{};
  // Parallel vectors. On decode, in the order KVM_SET_MSRS must write them (see
  // DecodeVcpuRegisters).
  std::vector<uint32_t> msr_indices;
  std::vector<uint64_t> msr_values;
  kvm_debugregs debugregs{};
  // KVM_GET_TSC_KHZ; 0 = unknown.
  uint32_t tsc_khz = 0;
};

void EncodeVcpuRegisters(const KvmVcpuRegisters& in, v1::X86VcpuState* out);

// Validates `in` for a vCPU whose XSAVE area is `xsave_size` bytes and whose
// KVM saves the MSRs `known_msrs` (VcpuStateContext), and converts it. Checks:
// segment fields in range (selector 16 bits, type 4 bits, dpl 2 bits),
// descriptor-table limits 16 bits, CR8 4 bits, interrupt_bitmap empty or 4
// words, xsave exactly `xsave_size` bytes with a standard-format header
// (XCOMP_BV and reserved header bytes zero, MXCSR[31:16] zero), XCRs: XCR0
// only, at most once, x87 bit set, AVX only with SSE; LAPIC exactly
// KVM_APIC_REG_SIZE (1024) bytes; MSRs: no duplicates, no machine-check MSR
// (INVALID_ARGUMENT: they belong in the exception state), each one in
// `known_msrs` (FAILED_PRECONDITION otherwise); debug registers: four DRs, DR6
// and DR7 bits 63:32 zero.
// MSR write order: as given, except IA32_TSC_DEADLINE, which goes last: KVM
// ignores (without an error) a deadline written while the LAPIC timer is not in
// TSC-deadline mode, and the deadline is an absolute TSC value, so it must
// follow both KVM_SET_LAPIC and IA32_TSC.
absl::StatusOr<KvmVcpuRegisters> DecodeVcpuRegisters(
    const v1::X86VcpuState& in, size_t xsave_size,
    absl::Span<const uint32_t> known_msrs);

// KVM_SET_MP_STATE accepts RUNNABLE, UNINITIALIZED, INIT_RECEIVED, HALTED,
// SIPI_RECEIVED and AP_RESET_HOLD on x86; anything else is INVALID_ARGUMENT.
absl::Status ValidateMpState(uint32_t mp_state);

// ---------- exception state

// IA32_MCG_CAP fields: kMcgCapCountMask, kMcgCapCtlP, kMcgCapLmceP in mce_decode.h.

// The machine-check MSRs of a vCPU whose MCG_CAP is `mcg_cap`, in the order
// capture reads them (one KVM_GET_MSRS): MCG_CAP, MCG_STATUS, MCG_CTL (if
// CTL_P), MCG_EXT_CTL (if LMCE_P), then MCi_CTL, MCi_STATUS, MCi_ADDR, MCi_MISC
// for every bank i < MCG_CAP[7:0], at most 32 (the MCi MSRs end at 0x47f; 0x480
// starts the VMX capability MSRs).
std::vector<uint32_t> MachineCheckMsrIndices(uint64_t mcg_cap);

// The most machine-check MSRs a vCPU can have: MCG_CAP, MCG_STATUS, MCG_CTL,
// MCG_EXT_CTL and four per bank.
inline constexpr size_t kMaxMachineCheckMsrs = 4 + 4 * kMaxMceBanks;

// One vCPU's exception state in KVM's terms.
struct KvmExceptionState {
  kvm_vcpu_events events{};
  // Parallel vectors: on encode, any subset of MachineCheckMsrIndices(); on
  // decode, the machine-check MSRs to write with KVM_SET_MSRS, in order (never
  // MCG_CAP, which only KVM_X86_SETUP_MCE sets). Empty when the proto has no
  // machine_check. Inline storage for all of them: capture and restore fill
  // these on every call, and two heap vectors of this size cost more than the
  // conversion itself (bench/exception_state_bench.cc, callgrind).
  absl::InlinedVector<uint32_t, kMaxMachineCheckMsrs> mce_indices;
  absl::InlinedVector<uint64_t, kMaxMachineCheckMsrs> mce_values;
};

// Builds the proto from KVM_GET_VCPU_EVENTS and the values of the machine-check
// MSRs. Normalisation: exception vector/error code only while the exception is
// injected or pending; payload only while it is pending (KVM applies it to
// CR2/DR6 when the exception is injected and keeps a stale copy); interrupt
// vector/soft only while injected; fields whose KVM_VCPUEVENT_VALID_* flag is
// clear are zero. has_sipi_vector is set only if KVM reports a SIPI vector
// (KVM_VCPUEVENT_VALID_SIPI_VECTOR or non-zero): KVM_GET_VCPU_EVENTS never does
// (x86.c zeroes it, "never valid when reporting to user space"), and needs not,
// because KVM_GET_MP_STATE, read first by CaptureVcpu, delivers a latched SIPI.
// The field exists for exception states built by hand. A machine_check message
// is present iff `mce_indices` holds MCG_CAP; it has one bank entry per bank of
// MCG_CAP[7:0] whose four MSRs were given.
v1::X86ExceptionState EncodeExceptionState(const KvmExceptionState& in);

// What the destination vCPU can hold.
struct ExceptionTarget {
  // The vCPU's MCG_CAP (set by KVM_X86_SETUP_MCE).
  uint64_t mcg_cap = 0;
  // KVM_CAP_X86_SMM.
  bool smm_supported = false;
};

// Validates and converts for KVM_SET_VCPU_EVENTS + KVM_SET_MSRS. The flags it
// sets:
//   NMI_PENDING, SHADOW  always (the proto carries both fields in full);
//   PAYLOAD              always: vexstate VMs enable KVM_CAP_EXCEPTION_PAYLOAD
//                        (a precondition ProbeVcpuStateContext checks), without
//                        which KVM cannot hold a pending exception apart from
//                        an injected one;
//   SIPI_VECTOR          only when has_sipi_vector;
//   SMM                  when the host supports SMM, or when latched_init is
//                        set (which needs no SMM);
//   TRIPLE_FAULT         never: vexstate does not enable
//                        KVM_CAP_X86_TRIPLE_FAULT_EVENT.
// INVALID_ARGUMENT: exception vector > 31, vector 2 (NMI) injected or pending,
// injected and pending both set, a payload without a pending exception (KVM
// would drop it), interrupt or SIPI vector > 255, shadow bits other than
// MOV_SS|STI, latched_init > 1, a bank index >= the bank count or repeated,
// MCi_CTL other than 0 or all-ones (bits 0 and 10 excepted, as KVM allows),
// MCG_CTL other than 0 or all-ones or without MCG_CAP.CTL_P, MCG_EXT_CTL other
// than 0/1 or without MCG_CAP.LMCE_P.
// FAILED_PRECONDITION: machine_check.mcg_cap differs from target.mcg_cap (both
// named), SMM state on a host without SMM, a pending triple fault.
absl::StatusOr<KvmExceptionState> DecodeExceptionState(
    const v1::X86ExceptionState& in, const ExceptionTarget& target);

// ---------- VM

// VM-wide state: in-kernel irqchip (PIC master/slave, IOAPIC), PIT, kvmclock.
struct KvmVmState {
  bool has_irqchip = false;
  kvm_pic_state pic_master{};
  kvm_pic_state pic_slave{};
  kvm_ioapic_state ioapic{};
  bool has_pit = false;
  kvm_pit_state2 pit{};
  uint64_t clock_ns = 0;
};

void EncodeVmState(const KvmVmState& in, v1::X86VmState* out);

// INVALID_ARGUMENT unless pic_master, pic_slave and ioapic are all empty (no
// in-kernel irqchip) or all exactly the size of their KVM struct, and pit is
// empty or exactly sizeof(kvm_pit_state2).
absl::StatusOr<KvmVmState> DecodeVmState(const v1::X86VmState& in);

}  // namespace vexstate::x86

#endif  // VEXSTATE_VMM_ARCH_X86_64_STATE_CODEC_H_
