#include "migration/compatibility.h"

#include <algorithm>

#include "absl/strings/str_format.h"

namespace vexstate::migration {

namespace {

// IA32_MCG_CAP[7:0]: the number of banks (Intel SDM Vol. 3B 16.3.1.1).
constexpr uint64_t kMcgCapCountMask = 0xff;

// The bank count a VM gets on a host when its exception state is not at hand: the same rule
// the x86 backend applies when it sets MCG_CAP (config.mce_banks, 0 = all the host offers).
uint32_t ConfiguredMceBanks(const v1::VmConfig& config, const v1::HostCapabilities& host) {
  if (config.arch() != v1::ARCH_X86_64) return 0;
  return config.mce_banks() != 0 ? std::min(config.mce_banks(), host.mce_banks()) : host.mce_banks();
}

}  // namespace

v1::MigrationRequirements RequirementsOf(const v1::VmConfig& config, const v1::HostCapabilities& source_host,
                                         const std::vector<v1::VcpuExceptionState>* exception_state) {
  v1::MigrationRequirements out;
  *out.mutable_config() = config;
  *out.mutable_source_host() = source_host;
  out.set_mce_banks_in_use(ConfiguredMceBanks(config, source_host));
  if (exception_state == nullptr) return out;
  for (const v1::VcpuExceptionState& vcpu : *exception_state) {
    if (vcpu.has_arm64()) {
      // On capture serror_has_esr reports the host's capability: a pending SError on such a
      // host carries a syndrome (KVM's IDS value if none was given).
      if (vcpu.arm64().serror_pending() && vcpu.arm64().serror_has_esr()) out.set_serror_with_esr_pending(true);
    }
    if (vcpu.has_x86_64()) {
      const v1::X86ExceptionState& x86 = vcpu.x86_64();
      out.set_mce_banks_in_use(
          std::max<uint32_t>(out.mce_banks_in_use(), x86.machine_check().mcg_cap() & kMcgCapCountMask));
      if (x86.exception().has_payload() && (x86.exception().pending() || x86.exception().injected())) {
        out.set_exception_payload_needed(true);
      }
    }
  }
  return out;
}

absl::StatusOr<v1::MigrationRequirements> RequirementsOf(Vm& vm) {
  if (!vm.paused()) return RequirementsOf(vm.config(), vm.host(), nullptr);
  absl::StatusOr<std::vector<v1::VcpuExceptionState>> state = vm.CaptureExceptionState();
  if (!state.ok()) return state.status();
  return RequirementsOf(vm.config(), vm.host(), &*state);
}

absl::Status CheckCompatibility(const v1::MigrationRequirements& requirements, const v1::HostCapabilities& destination,
                                bool allow_degrade, std::vector<std::string>* degradations) {
  const v1::VmConfig& config = requirements.config();
  std::vector<std::string> degraded;
  if (config.arch() != destination.arch()) {
    return absl::FailedPreconditionError(absl::StrFormat("arch: the VM is %s, the destination host is %s",
                                                         v1::Arch_Name(config.arch()),
                                                         v1::Arch_Name(destination.arch())));
  }
  if (!destination.vcpu_events()) {
    return absl::FailedPreconditionError(
        "KVM_CAP_VCPU_EVENTS: the destination host cannot restore pending exception state");
  }
  if (config.vcpu_count() > destination.max_vcpus()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("vCPUs: the VM has %u, the destination's KVM allows at most %u (KVM_CAP_MAX_VCPUS)",
                        config.vcpu_count(), destination.max_vcpus()));
  }
  // The remaining shape rules (memory size, vCPU limits of this build) are the ones any VM
  // on the destination must meet.
  if (absl::Status s = ValidateVmConfig(config, destination); !s.ok()) {
    return absl::FailedPreconditionError(absl::StrFormat("the destination cannot create this VM: %s", s.message()));
  }
  if (requirements.serror_with_esr_pending() && !destination.arm_inject_serror_esr()) {
    if (!allow_degrade) {
      return absl::FailedPreconditionError(
          "KVM_CAP_ARM_INJECT_SERROR_ESR: an SError with a syndrome (ESR) is pending and the destination "
          "cannot inject a syndrome (no FEAT_RAS); allow degradation to deliver it without");
    }
    degraded.push_back(
        "pending SError delivered without its ESR (destination lacks KVM_CAP_ARM_INJECT_SERROR_ESR): the "
        "guest sees the implementation-defined syndrome");
  }
  if (requirements.mce_banks_in_use() > destination.mce_banks()) {
    if (!allow_degrade) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "KVM_CAP_MCE: the guest's MCG_CAP has %u MCE banks, the destination offers %u; allow degradation "
          "to drop the extra banks while they hold no error",
          requirements.mce_banks_in_use(), destination.mce_banks()));
    }
    degraded.push_back(absl::StrFormat(
        "MCE banks %u..%u dropped (destination KVM_CAP_MCE = %u); refused at the pause point if one holds "
        "an error",
        destination.mce_banks(), requirements.mce_banks_in_use() - 1, destination.mce_banks()));
  }
  if (requirements.exception_payload_needed() && !destination.exception_payload()) {
    return absl::FailedPreconditionError(
        "KVM_CAP_EXCEPTION_PAYLOAD: a pending exception carries a deferred payload (CR2/DR6) that the "
        "destination cannot represent");
  }
  if (degradations != nullptr) degradations->insert(degradations->end(), degraded.begin(), degraded.end());
  return absl::OkStatus();
}

}  // namespace vexstate::migration
