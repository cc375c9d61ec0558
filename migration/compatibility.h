// Compatibility first (SPEC §4.4): what a VM needs from a destination host (Begin, on the
// source) and whether a destination can give it (Prepare, on the destination) — decided
// before the source pauses.
//
// The exception-state parts of MigrationRequirements can only be read while the VM is paused
// (SPEC §4.3: state is read only while every vCPU is out of KVM_RUN), and Begin never pauses
// a running VM for them. So for a running VM they say what is known without pausing:
// serror_with_esr_pending = false, exception_payload_needed = false, mce_banks_in_use from the
// VM's configuration. The destination re-checks the final state (captured at the pause point)
// with Vm::CheckRestorableHere before it keeps it (migration/destination.h), so whatever becomes
// pending later is still checked before anything runs there: a refusal then leaves the
// destination discarded and the source free to resume.
//
// Thread-safety: pure functions, except RequirementsOf(Vm&), which is as thread-safe as Vm.
#ifndef VEXSTATE_MIGRATION_COMPATIBILITY_H_
#define VEXSTATE_MIGRATION_COMPATIBILITY_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vexstate/v1/exception_state.pb.h"
#include "vexstate/v1/host.pb.h"
#include "vexstate/v1/migration.pb.h"
#include "vmm/vm.h"

namespace vexstate::migration {

// Begin, from parts: `exception_state` is every vCPU's state at a pause point, or null when
// the VM runs (see above).
v1::MigrationRequirements RequirementsOf(const v1::VmConfig& config, const v1::HostCapabilities& source_host,
                                         const std::vector<v1::VcpuExceptionState>* exception_state);

// Begin, from a VM: reads its exception state if (and only if) it is paused already.
absl::StatusOr<v1::MigrationRequirements> RequirementsOf(Vm& vm);

// Prepare: can `destination` run a VM with `requirements`? FAILED_PRECONDITION naming the
// capability that is missing (arch, KVM_CAP_VCPU_EVENTS, vCPU count vs KVM's maximum, memory
// size rules, KVM_CAP_ARM_INJECT_SERROR_ESR for a pending SError with a syndrome, KVM_CAP_MCE
// bank count, KVM_CAP_EXCEPTION_PAYLOAD for a pending exception with a payload).
// With `allow_degrade`, two shortfalls become degradations instead (appended to
// `degradations`, which may be null):
//  - a pending SError with ESR is delivered without its syndrome (the guest sees IDS);
//  - MCE banks beyond the destination's count are dropped — only while they hold no error,
//    which the destination enforces on the final state (a bank in use there is refused).
// A missing exception payload capability is never degradable: the deferred CR2/DR6 value
// would be lost.
absl::Status CheckCompatibility(const v1::MigrationRequirements& requirements, const v1::HostCapabilities& destination,
                                bool allow_degrade, std::vector<std::string>* degradations);

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_COMPATIBILITY_H_
