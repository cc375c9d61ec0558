#include "vmm/kvm/vcpu_fd.h"

#include <errno.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cstring>
#include <string_view>
#include <vector>

#include "absl/strings/str_format.h"
#include "vmm/kvm/ioctl.h"

namespace vexstate::kvm {

namespace {
absl::Status Call(int fd, unsigned long request, const void* arg, std::string_view name) {
  return Ioctl(fd, request, const_cast<void*>(arg), name).status();
}
}  // namespace

VcpuFd::VcpuFd(ScopedFd fd, uint32_t index, kvm_run* run, int run_size)
    : fd_(std::move(fd)), index_(index), run_(run), run_size_(run_size) {}

VcpuFd::VcpuFd(VcpuFd&& other) noexcept
    : fd_(std::move(other.fd_)),
      index_(other.index_),
      run_(std::exchange(other.run_, nullptr)),
      run_size_(other.run_size_) {}

VcpuFd::~VcpuFd() {
  if (run_ != nullptr) munmap(run_, run_size_);
}

absl::Status VcpuFd::Run() {
  if (ioctl(fd_.get(), KVM_RUN, 0) == 0) return absl::OkStatus();
  return ErrnoStatus(errno, absl::StrFormat("KVM_RUN(vCPU %u)", index_));
}

absl::Status VcpuFd::GetMpState(kvm_mp_state* state) {
  return Call(fd_.get(), KVM_GET_MP_STATE, state, "KVM_GET_MP_STATE");
}
absl::Status VcpuFd::SetMpState(const kvm_mp_state& state) {
  return Call(fd_.get(), KVM_SET_MP_STATE, &state, "KVM_SET_MP_STATE");
}
absl::Status VcpuFd::GetVcpuEvents(kvm_vcpu_events* events) {
  return Call(fd_.get(), KVM_GET_VCPU_EVENTS, events, "KVM_GET_VCPU_EVENTS");
}
absl::Status VcpuFd::SetVcpuEvents(const kvm_vcpu_events& events) {
  return Call(fd_.get(), KVM_SET_VCPU_EVENTS, &events, "KVM_SET_VCPU_EVENTS");
}

#if defined(__x86_64__)
absl::Status VcpuFd::GetRegs(kvm_regs* regs) { return Call(fd_.get(), KVM_GET_REGS, regs, "KVM_GET_REGS"); }
absl::Status VcpuFd::SetRegs(const kvm_regs& regs) { return Call(fd_.get(), KVM_SET_REGS, &regs, "KVM_SET_REGS"); }
absl::Status VcpuFd::GetSregs(kvm_sregs* sregs) { return Call(fd_.get(), KVM_GET_SREGS, sregs, "KVM_GET_SREGS"); }
absl::Status VcpuFd::SetSregs(const kvm_sregs& sregs) {
  return Call(fd_.get(), KVM_SET_SREGS, &sregs, "KVM_SET_SREGS");
}

absl::Status VcpuFd::GetXsave(std::vector<uint8_t>* area, size_t size) {
  area->assign(std::max(size, sizeof(kvm_xsave)), 0);
  if (area->size() > sizeof(kvm_xsave)) {
#ifdef KVM_GET_XSAVE2
    return Call(fd_.get(), KVM_GET_XSAVE2, area->data(), "KVM_GET_XSAVE2");
#endif
  }
  return Call(fd_.get(), KVM_GET_XSAVE, area->data(), "KVM_GET_XSAVE");
}
absl::Status VcpuFd::SetXsave(const std::vector<uint8_t>& area) {
  if (area.size() < sizeof(kvm_xsave)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("XSAVE area of %u bytes is smaller than kvm_xsave (%u)", area.size(), sizeof(kvm_xsave)));
  }
  return Call(fd_.get(), KVM_SET_XSAVE, area.data(), "KVM_SET_XSAVE");
}
absl::Status VcpuFd::GetXcrs(kvm_xcrs* xcrs) { return Call(fd_.get(), KVM_GET_XCRS, xcrs, "KVM_GET_XCRS"); }
absl::Status VcpuFd::SetXcrs(const kvm_xcrs& xcrs) { return Call(fd_.get(), KVM_SET_XCRS, &xcrs, "KVM_SET_XCRS"); }
absl::Status VcpuFd::GetLapic(kvm_lapic_state* lapic) {
  return Call(fd_.get(), KVM_GET_LAPIC, lapic, "KVM_GET_LAPIC");
}
absl::Status VcpuFd::SetLapic(const kvm_lapic_state& lapic) {
  return Call(fd_.get(), KVM_SET_LAPIC, &lapic, "KVM_SET_LAPIC");
}

namespace {

// The kvm_msrs argument of KVM_GET_MSRS/KVM_SET_MSRS: a header, then one entry per MSR, held in
// the object itself (on the caller's stack; KVM takes at most kMaxMsrsPerCall, 4 KiB). A heap
// buffer per call (2 KiB for 32 MCE banks) cost a malloc + memset + free on every exception-state
// capture and restore, and glibc consolidates its fastbins on every allocation of that size
// (callgrind, bench/exception_state_bench.cc). Every field KVM reads is written: the header's pad
// and each entry's reserved word are zeroed, the rest comes from the caller.
class MsrBuffer {
 public:
  // `indices` must have passed CheckMsrBatch.
  explicit MsrBuffer(absl::Span<const uint32_t> indices) {
    kvm_msrs* const header = msrs();
    header->nmsrs = static_cast<uint32_t>(indices.size());
    header->pad = 0;
    kvm_msr_entry* const entries = header->entries;
    const uint32_t* const index = indices.data();
    const size_t n = indices.size();
    for (size_t i = 0; i < n; ++i) entries[i] = {index[i], 0, 0};
  }
  MsrBuffer(const MsrBuffer&) = delete;
  MsrBuffer& operator=(const MsrBuffer&) = delete;

  kvm_msrs* msrs() { return reinterpret_cast<kvm_msrs*>(bytes_); }

 private:
  // Deliberately left uninitialised: the constructor writes every byte KVM reads.
  alignas(kvm_msrs) unsigned char bytes_[sizeof(kvm_msrs) + VcpuFd::kMaxMsrsPerCall * sizeof(kvm_msr_entry)];
};

// `values` is the number of values given or slots to fill (the count of `indices` when none).
absl::Status CheckMsrBatch(size_t indices, size_t values, std::string_view what) {
  if (indices > VcpuFd::kMaxMsrsPerCall) {
    return absl::ResourceExhaustedError(absl::StrFormat("%s: %u MSRs in one call; KVM takes at most %u", what, indices,
                                                        VcpuFd::kMaxMsrsPerCall));
  }
  if (indices != values) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s: %u MSR indices but %u value slots", what, indices, values));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<int> VcpuFd::GetMsrsPrefix(absl::Span<const uint32_t> indices, std::vector<uint64_t>* values) {
  if (absl::Status s = CheckMsrBatch(indices.size(), indices.size(), "KVM_GET_MSRS"); !s.ok()) return s;
  MsrBuffer buf(indices);
  absl::StatusOr<int> n = Ioctl(fd_.get(), KVM_GET_MSRS, buf.msrs(), "KVM_GET_MSRS");
  if (!n.ok()) return n.status();
  values->resize(*n);
  for (int i = 0; i < *n; ++i) (*values)[i] = buf.msrs()->entries[i].data;
  return *n;
}

absl::Status VcpuFd::GetMsrs(absl::Span<const uint32_t> indices, std::vector<uint64_t>* values) {
  values->resize(indices.size());
  return GetMsrs(indices, absl::MakeSpan(*values));
}

absl::Status VcpuFd::GetMsrs(absl::Span<const uint32_t> indices, absl::Span<uint64_t> values) {
  if (absl::Status s = CheckMsrBatch(indices.size(), values.size(), "KVM_GET_MSRS"); !s.ok()) return s;
  MsrBuffer buf(indices);
  absl::StatusOr<int> n = Ioctl(fd_.get(), KVM_GET_MSRS, buf.msrs(), "KVM_GET_MSRS");
  if (!n.ok()) return n.status();
  if (static_cast<size_t>(*n) != indices.size()) {
    return absl::InternalError(absl::StrFormat("KVM_GET_MSRS: read %d of %u MSRs, MSR 0x%x unreadable", *n,
                                               indices.size(), indices[*n]));
  }
  const kvm_msr_entry* const entries = buf.msrs()->entries;
  for (size_t i = 0; i < indices.size(); ++i) values[i] = entries[i].data;
  return absl::OkStatus();
}

absl::Status VcpuFd::SetMsrs(absl::Span<const uint32_t> indices, absl::Span<const uint64_t> values) {
  if (absl::Status s = CheckMsrBatch(indices.size(), values.size(), "KVM_SET_MSRS"); !s.ok()) return s;
  MsrBuffer buf(indices);
  kvm_msr_entry* const entries = buf.msrs()->entries;
  for (size_t i = 0; i < indices.size(); ++i) entries[i].data = values[i];
  absl::StatusOr<int> n = Ioctl(fd_.get(), KVM_SET_MSRS, buf.msrs(), "KVM_SET_MSRS");
  if (!n.ok()) return n.status();
  if (static_cast<size_t>(*n) != indices.size()) {
    return absl::InvalidArgumentError(absl::StrFormat("KVM_SET_MSRS: wrote %d of %u MSRs, MSR 0x%x = 0x%x refused",
                                                      *n, indices.size(), indices[*n], values[*n]));
  }
  return absl::OkStatus();
}

absl::Status VcpuFd::GetDebugRegs(kvm_debugregs* regs) {
  return Call(fd_.get(), KVM_GET_DEBUGREGS, regs, "KVM_GET_DEBUGREGS");
}
absl::Status VcpuFd::SetDebugRegs(const kvm_debugregs& regs) {
  return Call(fd_.get(), KVM_SET_DEBUGREGS, &regs, "KVM_SET_DEBUGREGS");
}

absl::Status VcpuFd::SetCpuid2(const std::vector<kvm_cpuid_entry2>& entries) {
  std::vector<uint8_t> buf(sizeof(kvm_cpuid2) + entries.size() * sizeof(kvm_cpuid_entry2), 0);
  auto* cpuid = reinterpret_cast<kvm_cpuid2*>(buf.data());
  cpuid->nent = entries.size();
  std::memcpy(cpuid->entries, entries.data(), entries.size() * sizeof(kvm_cpuid_entry2));
  return Call(fd_.get(), KVM_SET_CPUID2, cpuid, "KVM_SET_CPUID2");
}

absl::Status VcpuFd::SetupMce(uint64_t mcg_cap) {
  return Call(fd_.get(), KVM_X86_SETUP_MCE, &mcg_cap,
              absl::StrFormat("KVM_X86_SETUP_MCE(mcg_cap 0x%x)", mcg_cap));
}
absl::Status VcpuFd::SetMce(const kvm_x86_mce& mce) {
  return Call(fd_.get(), KVM_X86_SET_MCE, &mce,
              absl::StrFormat("KVM_X86_SET_MCE(bank %u, status 0x%x)", mce.bank, mce.status));
}
absl::Status VcpuFd::Nmi() { return Ioctl(fd_.get(), KVM_NMI, 0ul, "KVM_NMI").status(); }
absl::StatusOr<uint32_t> VcpuFd::GetTscKhz() {
  absl::StatusOr<int> khz = Ioctl(fd_.get(), KVM_GET_TSC_KHZ, 0ul, "KVM_GET_TSC_KHZ");
  if (!khz.ok()) return khz.status();
  return static_cast<uint32_t>(*khz);
}
absl::Status VcpuFd::SetTscKhz(uint32_t khz) {
  return Ioctl(fd_.get(), KVM_SET_TSC_KHZ, static_cast<unsigned long>(khz), "KVM_SET_TSC_KHZ").status();
}
#endif

#if defined(__aarch64__)
absl::Status VcpuFd::ArmVcpuInit(const kvm_vcpu_init& init) {
  return Call(fd_.get(), KVM_ARM_VCPU_INIT, &init, "KVM_ARM_VCPU_INIT");
}

absl::StatusOr<std::vector<uint64_t>> VcpuFd::GetRegList() {
  kvm_reg_list probe = {};
  // The first call fails with E2BIG and tells the count (api.rst: KVM_GET_REG_LIST).
  if (ioctl(fd_.get(), KVM_GET_REG_LIST, &probe) < 0 && errno != E2BIG) {
    return ErrnoStatus(errno, "KVM_GET_REG_LIST");
  }
  std::vector<uint64_t> buf(1 + probe.n);
  auto* list = reinterpret_cast<kvm_reg_list*>(buf.data());
  list->n = probe.n;
  absl::Status status = Call(fd_.get(), KVM_GET_REG_LIST, list, "KVM_GET_REG_LIST");
  if (!status.ok()) return status;
  return std::vector<uint64_t>(list->reg, list->reg + list->n);
}

absl::Status VcpuFd::GetOneReg(uint64_t id, void* value) {
  kvm_one_reg reg = {id, reinterpret_cast<uint64_t>(value)};
  return Call(fd_.get(), KVM_GET_ONE_REG, &reg, absl::StrFormat("KVM_GET_ONE_REG(0x%016x)", id));
}
absl::Status VcpuFd::SetOneReg(uint64_t id, const void* value) {
  kvm_one_reg reg = {id, reinterpret_cast<uint64_t>(value)};
  return Call(fd_.get(), KVM_SET_ONE_REG, &reg, absl::StrFormat("KVM_SET_ONE_REG(0x%016x)", id));
}
#endif

}  // namespace vexstate::kvm
