// Injection requests: what a caller asks vexstate to make pending on a vCPU.
// Plain values; each arch's validator decides what is acceptable (vmm/arch/*/inject.h).
#ifndef VEXSTATE_VMM_INJECTION_H_
#define VEXSTATE_VMM_INJECTION_H_

#include <cstdint>
#include <optional>
#include <string>

namespace vexstate {

// x86: a pending exception (KVM_SET_VCPU_EVENTS with exception.pending=1).
struct ExceptionRequest {
  uint32_t vcpu = 0;
  uint32_t vector = 0;
  std::optional<uint32_t> error_code;
  // #PF: the faulting address, delivered into CR2; #DB: DR6 bits. Deferred until delivery
  // (KVM_CAP_EXCEPTION_PAYLOAD).
  std::optional<uint64_t> payload;
};

// x86: an NMI (KVM_NMI).
struct NmiRequest {
  uint32_t vcpu = 0;
};

// x86: a machine check (KVM_X86_SET_MCE).
struct MachineCheckRequest {
  uint32_t vcpu = 0;
  uint32_t bank = 0;
  uint64_t status = 0;  // IA32_MCi_STATUS; VAL (bit 63) must be set
  uint64_t addr = 0;
  uint64_t misc = 0;
  uint64_t mcg_status = 0;  // IA32_MCG_STATUS for an uncorrected error (RIPV|MCIP = 0x5 typical)
};

// What to do when an SError is already pending and the request carries another syndrome.
// The Arm RAS rule (Arm ARM, "RAS: multiple errors"): a PE holds at most one pending virtual
// SError; a second one is not queued, and if the syndromes differ, the architecture would
// report the combined event as an uncontainable/"multiple errors" condition. vexstate never
// silently replaces the first syndrome.
enum class SErrorOverwrite {
  kRefuse,         // default: FAILED_PRECONDITION naming both syndromes
  kKeepPending,    // leave the pending SError (and its syndrome) as is; OK, result kKeptPending
  kReplace,        // explicitly replace the syndrome (the caller takes responsibility)
};

// What an accepted SError injection did (see SErrorRequest::result).
enum class SErrorOutcome {
  kPending,         // now pending (HCR_EL2.VSE=1): taken when the guest unmasks SError or runs `esb`
  kDelivered,       // KVM committed it into the guest at once (Linux >= 6.17, guest's PSTATE.A clear):
                    // the vCPU's registers already show the exception entry
  kAlreadyPending,  // the same syndrome was already pending: nothing changed (a PE holds one)
  kKeptPending,     // kKeepPending: another syndrome was pending and stays; nothing changed
  kReplaced,        // kReplace: the pending syndrome was replaced by the requested one
};

struct SErrorResult {
  SErrorOutcome outcome = SErrorOutcome::kPending;
  std::string detail;  // one line for people, naming the syndromes involved
};

// arm64: a virtual SError (KVM_SET_VCPU_EVENTS exception.serror_pending=1).
struct SErrorRequest {
  uint32_t vcpu = 0;
  // VSESR_EL2 ISS, bits [24:0]. None: KVM chooses (IDS, ISS 0x1000000).
  std::optional<uint64_t> esr;
  SErrorOverwrite on_pending = SErrorOverwrite::kRefuse;
  // Optional: when set and the injection is accepted (OK), receives what it did.
  SErrorResult* result = nullptr;
};

// arm64: a synchronous external data abort (KVM_SET_VCPU_EVENTS ext_dabt_pending=1).
struct ExternalAbortRequest {
  uint32_t vcpu = 0;
};

}  // namespace vexstate

#endif  // VEXSTATE_VMM_INJECTION_H_
