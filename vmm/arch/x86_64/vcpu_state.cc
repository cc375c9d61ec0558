#include "vmm/arch/x86_64/vcpu_state.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "vmm/arch/x86_64/msr_index.h"
#include "vmm/arch/x86_64/state_codec.h"

namespace vexstate::x86 {

namespace {

absl::Status Annotate(const absl::Status& status, absl::string_view what) {
  return absl::Status(status.code(),
                      absl::StrCat(what, ": ", status.message()));
}

// Reads everything RestoreVcpuRegisters writes, except the MP state.
absl::Status ReadRegisters(kvm::VcpuFd& vcpu, const VcpuStateContext& context,
                           KvmVcpuRegisters* out) {
  if (absl::Status s = vcpu.GetRegs(&out->regs); !s.ok()) return s;
  if (absl::Status s = vcpu.GetSregs(&out->sregs); !s.ok()) return s;
  if (absl::Status s = vcpu.GetXsave(&out->xsave, context.xsave_size); !s.ok())
    return s;
  if (absl::Status s = vcpu.GetXcrs(&out->xcrs); !s.ok()) return s;
  if (absl::Status s = vcpu.GetLapic(&out->lapic); !s.ok()) return s;
  out->msr_indices = context.msr_indices;
  out->msr_values.clear();
  if (!out->msr_indices.empty()) {
    if (absl::Status s = vcpu.GetMsrs(out->msr_indices, &out->msr_values);
        !s.ok())
      return s;
  }
  if (absl::Status s = vcpu.GetDebugRegs(&out->debugregs); !s.ok()) return s;
  absl::StatusOr<uint32_t> khz = vcpu.GetTscKhz();
  if (!khz.ok()) return khz.status();
  out->tsc_khz = *khz;
  return absl::OkStatus();
}

// The restore order. Every step is one ioctl; a failure names its step.
//  1. KVM_SET_TSC_KHZ, only if the rate differs: first, because KVM interprets
//     the IA32_TSC value written in step 7 at the vCPU's TSC rate.
//  2. KVM_SET_REGS. (It discards a pending exception: the exception state
//     comes after all of this, in RestoreExceptionState.)
//  3. KVM_SET_XSAVE, 4. KVM_SET_XCRS: they depend only on the CPUID set at
//     vCPU creation (QEMU's order: regs, xsave, xcrs, sregs).
//  5. KVM_SET_SREGS: CR0/CR3/CR4/EFER, segments, and APIC_BASE. It must
//     precede the LAPIC: changing APIC_BASE's xAPIC/x2APIC mode rewrites the
//     APIC ID register, and KVM_SET_LAPIC interprets the page in that mode.
//  6. KVM_SET_LAPIC.
//  7. KVM_SET_MSRS, IA32_TSC_DEADLINE last (state_codec.h): after the LAPIC,
//     because KVM ignores a deadline unless the LVT timer is in TSC-deadline
//     mode (seen on this host: the write succeeds and reads back 0); after
//     IA32_TSC, because the deadline is an absolute TSC value. After SREGS and
//     the LAPIC for the KVM PV MSRs too (they address guest memory and the
//     LAPIC).
//  8. KVM_SET_DEBUGREGS.
//  9. KVM_SET_MP_STATE, last: KVM_SET_SREGS sets the BSP's MP state to
//     RUNNABLE when its registers sit at the reset vector, so an earlier MP
//     state could be overwritten.
// Then, separately and after all of this, RestoreExceptionState (events last).
absl::Status WriteRegisters(kvm::VcpuFd& vcpu, const KvmVcpuRegisters& r,
                            uint32_t mp_state, uint32_t current_tsc_khz) {
  if (r.tsc_khz != 0 && r.tsc_khz != current_tsc_khz) {
    if (absl::Status s = vcpu.SetTscKhz(r.tsc_khz); !s.ok()) {
      return absl::FailedPreconditionError(
          absl::StrFormat("step 1/9: the state was captured at a TSC rate of "
                          "%u kHz, this vCPU runs at %u kHz, and %s",
                          r.tsc_khz, current_tsc_khz, s.message()));
    }
  }
  if (absl::Status s = vcpu.SetRegs(r.regs); !s.ok())
    return Annotate(s, "step 2/9");
  if (absl::Status s = vcpu.SetXsave(r.xsave); !s.ok())
    return Annotate(s, "step 3/9");
  if (r.xcrs.nr_xcrs != 0) {
    if (absl::Status s = vcpu.SetXcrs(r.xcrs); !s.ok())
      return Annotate(s, "step 4/9");
  }
  if (absl::Status s = vcpu.SetSregs(r.sregs); !s.ok())
    return Annotate(s, "step 5/9");
  if (absl::Status s = vcpu.SetLapic(r.lapic); !s.ok())
    return Annotate(s, "step 6/9");
  if (!r.msr_indices.empty()) {
    if (absl::Status s = vcpu.SetMsrs(r.msr_indices, r.msr_values); !s.ok())
      return Annotate(s, "step 7/9");
  }
  if (absl::Status s = vcpu.SetDebugRegs(r.debugregs); !s.ok())
    return Annotate(s, "step 8/9");
  kvm_mp_state mp = {};
  mp.mp_state = mp_state;
  if (absl::Status s = vcpu.SetMpState(mp); !s.ok())
    return Annotate(s, "step 9/9");
  return absl::OkStatus();
}

absl::Status ReadVm(kvm::VmFd& vm, KvmVmState* out) {
  kvm_irqchip chip = {};
  chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
  absl::Status s = vm.GetIrqchip(&chip);
  if (s.ok()) {
    out->has_irqchip = true;
    out->pic_master = chip.chip.pic;
    chip = {};
    chip.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    if (s = vm.GetIrqchip(&chip); !s.ok()) return s;
    out->pic_slave = chip.chip.pic;
    chip = {};
    chip.chip_id = KVM_IRQCHIP_IOAPIC;
    if (s = vm.GetIrqchip(&chip); !s.ok()) return s;
    out->ioapic = chip.chip.ioapic;
  } else if (absl::IsNotFound(s)) {  // ENXIO: no in-kernel irqchip
    out->has_irqchip = false;
  } else {
    return s;
  }
  s = vm.GetPit2(&out->pit);
  if (s.ok()) {
    out->has_pit = true;
  } else if (absl::IsNotFound(s)) {  // ENXIO: no in-kernel PIT
    out->has_pit = false;
    out->pit = {};
  } else {
    return s;
  }
  kvm_clock_data clock = {};
  if (s = vm.GetClock(&clock); !s.ok()) return s;
  out->clock_ns = clock.clock;
  return absl::OkStatus();
}

// The interrupt controllers before the PIT: a restored PIT channel may raise
// IRQ0 at once, which must land in the restored PIC/IOAPIC. kvmclock is
// independent of both.
absl::Status WriteVm(kvm::VmFd& vm, const KvmVmState& state) {
  if (state.has_irqchip) {
    kvm_irqchip chip = {};
    chip.chip_id = KVM_IRQCHIP_PIC_MASTER;
    chip.chip.pic = state.pic_master;
    if (absl::Status s = vm.SetIrqchip(chip); !s.ok()) return s;
    chip = {};
    chip.chip_id = KVM_IRQCHIP_PIC_SLAVE;
    chip.chip.pic = state.pic_slave;
    if (absl::Status s = vm.SetIrqchip(chip); !s.ok()) return s;
    chip = {};
    chip.chip_id = KVM_IRQCHIP_IOAPIC;
    chip.chip.ioapic = state.ioapic;
    if (absl::Status s = vm.SetIrqchip(chip); !s.ok()) return s;
  }
  if (state.has_pit) {
    if (absl::Status s = vm.SetPit2(state.pit); !s.ok()) return s;
  }
  kvm_clock_data clock = {};
  clock.clock = state.clock_ns;
  return vm.SetClock(clock);
}

absl::Status WithRollbackResult(const absl::Status& failure,
                                const absl::Status& rollback) {
  if (rollback.ok())
    return Annotate(failure,
                    "refused by KVM; the previous state was written back");
  return Annotate(
      failure,
      absl::StrCat(
          "refused by KVM, and writing the previous state back failed too (",
          rollback.message(), "): the state is now partly restored"));
}

}  // namespace

absl::StatusOr<std::vector<uint32_t>> FilterReadableMsrs(
    kvm::VcpuFd& vcpu, const std::vector<uint32_t>& candidates) {
  std::vector<uint32_t> readable;
  size_t pos = 0;
  while (pos < candidates.size()) {
    std::vector<uint32_t> rest(candidates.begin() + pos, candidates.end());
    std::vector<uint64_t> values;
    absl::StatusOr<int> n = vcpu.GetMsrsPrefix(rest, &values);
    if (!n.ok()) return n.status();
    readable.insert(readable.end(), rest.begin(), rest.begin() + *n);
    pos += *n;
    // KVM stopped at candidates[pos]: it is unreadable, skip it.
    if (pos < candidates.size()) ++pos;
  }
  return readable;
}

absl::StatusOr<VcpuStateContext> ProbeVcpuStateContext(
    const kvm::KvmSystem& kvm, kvm::VmFd& vm, kvm::VcpuFd& vcpu,
    uint32_t mce_bank_count) {
  VcpuStateContext context;
  absl::StatusOr<std::vector<uint32_t>> listed = kvm.GetMsrIndexList();
  if (!listed.ok()) return listed.status();
  std::vector<uint32_t> candidates;
  for (uint32_t index : *listed) {
    if (!IsMachineCheckMsr(index)) candidates.push_back(index);
  }
  absl::StatusOr<std::vector<uint32_t>> readable =
      FilterReadableMsrs(vcpu, candidates);
  if (!readable.ok()) return readable.status();
  context.msr_indices = std::move(*readable);

  context.xsave_size =
      std::max<size_t>(vm.CheckExtension(KVM_CAP_XSAVE2), sizeof(kvm_xsave));

  std::vector<uint64_t> mcg_cap;
  if (absl::Status s = vcpu.GetMsrs({kMsrMcgCap}, &mcg_cap); !s.ok())
    return Annotate(s, "reading MCG_CAP");
  if ((mcg_cap[0] & kMcgCapCountMask) != mce_bank_count) {
    return absl::FailedPreconditionError(
        absl::StrFormat("vCPU %u has MCG_CAP 0x%x (%u banks), expected %u "
                        "banks: KVM_X86_SETUP_MCE must come before the probe",
                        vcpu.index(), mcg_cap[0], mcg_cap[0] & kMcgCapCountMask,
                        mce_bank_count));
  }
  context.mce_bank_count = mce_bank_count;
  context.mcg_cap = mcg_cap[0];
  context.mce_msr_indices = MachineCheckMsrIndices(context.mcg_cap);

  kvm_vcpu_events events = {};
  if (absl::Status s = vcpu.GetVcpuEvents(&events); !s.ok()) return s;
  if ((events.flags & KVM_VCPUEVENT_VALID_PAYLOAD) == 0) {
    return absl::FailedPreconditionError(
        "KVM_CAP_EXCEPTION_PAYLOAD is not enabled on this VM: KVM would fold a "
        "pending exception into an "
        "injected one and apply its CR2/DR6 payload early, so exception state "
        "could not be captured faithfully");
  }
  context.smm_supported = vm.CheckExtension(KVM_CAP_X86_SMM) > 0;
  return context;
}

absl::StatusOr<v1::X86ExceptionState> CaptureExceptionState(
    kvm::VcpuFd& vcpu, const VcpuStateContext& context) {
  KvmExceptionState state;
  if (absl::Status s = vcpu.GetVcpuEvents(&state.events); !s.ok()) return s;
  state.mce_indices.assign(context.mce_msr_indices.begin(),
                           context.mce_msr_indices.end());
  state.mce_values.resize(state.mce_indices.size());
  if (absl::Status s =
          vcpu.GetMsrs(state.mce_indices, absl::MakeSpan(state.mce_values));
      !s.ok()) {
    return Annotate(s, "reading the machine-check MSRs");
  }
  if (state.mce_values[0] != context.mcg_cap) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "vCPU %u has MCG_CAP 0x%x, but the VM was probed with MCG_CAP 0x%x",
        vcpu.index(), state.mce_values[0], context.mcg_cap));
  }
  return EncodeExceptionState(state);
}

absl::StatusOr<v1::VcpuState> CaptureVcpu(kvm::VcpuFd& vcpu,
                                          const VcpuStateContext& context) {
  // First: KVM_GET_MP_STATE accepts a pending INIT/SIPI, which may reset the
  // registers.
  kvm_mp_state mp = {};
  if (absl::Status s = vcpu.GetMpState(&mp); !s.ok()) return s;
  KvmVcpuRegisters registers;
  if (absl::Status s = ReadRegisters(vcpu, context, &registers); !s.ok())
    return s;
  absl::StatusOr<v1::X86ExceptionState> exception =
      CaptureExceptionState(vcpu, context);
  if (!exception.ok()) return exception.status();

  v1::VcpuState out;
  out.set_index(vcpu.index());
  EncodeVcpuRegisters(registers, out.mutable_x86_64());
  out.mutable_exception()->set_vcpu_index(vcpu.index());
  *out.mutable_exception()->mutable_x86_64() = std::move(*exception);
  out.set_mp_state(mp.mp_state);
  return out;
}

absl::Status RestoreVcpuRegisters(kvm::VcpuFd& vcpu, const v1::VcpuState& state,
                                  const VcpuStateContext& context) {
  // All validation and conversion first: nothing below this block can fail on
  // bad input.
  if (!state.has_x86_64()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("vCPU %u: the state is not x86_64", vcpu.index()));
  }
  if (state.index() != vcpu.index()) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "index: the state of vCPU %u cannot be restored into vCPU %u (the APIC "
        "ID and CPUID topology follow the index)",
        state.index(), vcpu.index()));
  }
  if (absl::Status s = ValidateMpState(state.mp_state()); !s.ok()) return s;
  absl::StatusOr<KvmVcpuRegisters> target = DecodeVcpuRegisters(
      state.x86_64(), context.xsave_size, context.msr_indices);
  if (!target.ok()) return target.status();

  // The current state, to write back should KVM refuse something the codec
  // cannot judge.
  kvm_mp_state before_mp = {};
  if (absl::Status s = vcpu.GetMpState(&before_mp); !s.ok()) return s;
  KvmVcpuRegisters before;
  if (absl::Status s = ReadRegisters(vcpu, context, &before); !s.ok()) return s;
  // KVM_SET_REGS discards a pending exception: a rollback must put the events
  // back too (with the flags KVM reported, which it accepts on SET).
  kvm_vcpu_events before_events = {};
  if (absl::Status s = vcpu.GetVcpuEvents(&before_events); !s.ok()) return s;

  absl::Status status =
      WriteRegisters(vcpu, *target, state.mp_state(), before.tsc_khz);
  if (status.ok()) return status;
  absl::StatusOr<uint32_t> khz_now = vcpu.GetTscKhz();
  absl::Status rollback =
      khz_now.ok() ? WriteRegisters(vcpu, before, before_mp.mp_state, *khz_now)
                   : khz_now.status();
  if (rollback.ok()) rollback = vcpu.SetVcpuEvents(before_events);
  return WithRollbackResult(
      Annotate(status,
               absl::StrFormat("restoring vCPU %u registers", vcpu.index())),
      rollback);
}

absl::Status RestoreExceptionState(kvm::VcpuFd& vcpu,
                                   const v1::X86ExceptionState& state,
                                   const VcpuStateContext& context) {
  ExceptionTarget target;
  target.mcg_cap = context.mcg_cap;
  target.smm_supported = context.smm_supported;
  absl::StatusOr<KvmExceptionState> decoded =
      DecodeExceptionState(state, target);
  if (!decoded.ok()) return decoded.status();

  // Machine-check MSRs first, events last. The bank MSRs exist only after
  // KVM_X86_SETUP_MCE (done at vCPU creation; the MCG_CAP check in the codec
  // proves it matched).
  if (!decoded->mce_indices.empty()) {
    if (absl::Status s =
            vcpu.SetMsrs(decoded->mce_indices, decoded->mce_values);
        !s.ok()) {
      return Annotate(s, absl::StrFormat("restoring vCPU %u machine-check MSRs",
                                         vcpu.index()));
    }
  }
  if (absl::Status s = vcpu.SetVcpuEvents(decoded->events); !s.ok()) {
    if (absl::IsInvalidArgument(s)) {
      return Annotate(
          s,
          absl::StrFormat(
              "restoring vCPU %u events (KVM refuses "
              "KVM_VCPUEVENT_VALID_PAYLOAD with "
              "EINVAL when KVM_CAP_EXCEPTION_PAYLOAD is not enabled on the VM)",
              vcpu.index()));
    }
    return Annotate(s,
                    absl::StrFormat("restoring vCPU %u events", vcpu.index()));
  }
  return absl::OkStatus();
}

absl::StatusOr<v1::X86VmState> CaptureVm(kvm::VmFd& vm) {
  KvmVmState state;
  if (absl::Status s = ReadVm(vm, &state); !s.ok()) return s;
  v1::X86VmState out;
  EncodeVmState(state, &out);
  return out;
}

absl::Status RestoreVm(kvm::VmFd& vm, const v1::X86VmState& state) {
  absl::StatusOr<KvmVmState> target = DecodeVmState(state);
  if (!target.ok()) return target.status();
  KvmVmState before;
  if (absl::Status s = ReadVm(vm, &before); !s.ok()) return s;
  if (target->has_irqchip != before.has_irqchip) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the state %s an in-kernel irqchip (PIC/IOAPIC), this VM %s one",
        target->has_irqchip ? "has" : "has no",
        before.has_irqchip ? "has" : "has no"));
  }
  if (target->has_pit != before.has_pit) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "the state %s an in-kernel PIT, this VM %s one",
        target->has_pit ? "has" : "has no", before.has_pit ? "has" : "has no"));
  }
  absl::Status status = WriteVm(vm, *target);
  if (status.ok()) return status;
  return WithRollbackResult(Annotate(status, "restoring the VM state"),
                            WriteVm(vm, before));
}

}  // namespace vexstate::x86
