#include "vmm/arch/arm64/state_codec.h"

#include <cstring>
#include <unordered_set>

#include "absl/strings/str_format.h"
#include "vmm/arch/arm64/reg_ids.h"

namespace vexstate::arm64 {

std::vector<uint64_t> SavedRegisterIds(absl::Span<const uint64_t> listed) {
  std::vector<uint64_t> ids;
  ids.reserve(listed.size());
  for (uint64_t id : listed) {
    if (id != kRegDisrEl1) ids.push_back(id);
  }
  return ids;
}

void EncodeRegisters(absl::Span<const RegValue> values,
                     v1::Arm64VcpuState* out) {
  for (const RegValue& value : values) {
    v1::Arm64Register* reg = out->add_registers();
    reg->set_id(value.id);
    reg->set_value(value.bytes);
  }
}

absl::StatusOr<std::vector<RegValue>> DecodeRegisters(
    const v1::Arm64VcpuState& in, absl::Span<const uint64_t> destination_ids) {
  const std::unordered_set<uint64_t> known(destination_ids.begin(),
                                           destination_ids.end());
  std::unordered_set<uint64_t> seen;
  std::vector<RegValue> out;
  out.reserve(in.registers_size());
  for (int i = 0; i < in.registers_size(); ++i) {
    const v1::Arm64Register& reg = in.registers(i);
    if (!IsArm64RegId(reg.id())) {
      return absl::InvalidArgumentError(
          absl::StrFormat("register %d: %s", i, RegName(reg.id())));
    }
    if (reg.value().size() != RegSizeBytes(reg.id())) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "register %s: value has %u bytes, the id says %u", RegName(reg.id()),
          reg.value().size(), RegSizeBytes(reg.id())));
    }
    if (!seen.insert(reg.id()).second) {
      return absl::InvalidArgumentError(
          absl::StrFormat("register %s is given twice", RegName(reg.id())));
    }
    if (reg.id() == kRegDisrEl1) {
      return absl::InvalidArgumentError(
          absl::StrFormat("register %s is in the register list: it belongs in "
                          "the exception state (disr_el1), so it has "
                          "one value",
                          RegName(reg.id())));
    }
    if (known.count(reg.id()) == 0) {
      return absl::FailedPreconditionError(
          absl::StrFormat("register %s is not in this vCPU's KVM_GET_REG_LIST: "
                          "this host's KVM cannot restore it",
                          RegName(reg.id())));
    }
    out.push_back(RegValue{reg.id(), reg.value()});
  }
  return out;
}

absl::Status ValidateMpState(uint32_t mp_state) {
  // KVM_MP_STATE_RUNNABLE, _STOPPED, _SUSPENDED (api.rst "KVM_SET_MP_STATE":
  // the arm64 states).
  if (mp_state == 0 || mp_state == 5 || mp_state == 10) return absl::OkStatus();
  return absl::InvalidArgumentError(
      absl::StrFormat("mp_state %u is not an arm64 MP state (0 RUNNABLE, 5 "
                      "STOPPED, 10 SUSPENDED)",
                      mp_state));
}

absl::StatusOr<uint64_t> FindU64(absl::Span<const RegValue> values,
                                 uint64_t id) {
  for (const RegValue& value : values) {
    if (value.id != id) continue;
    if (value.bytes.size() != sizeof(uint64_t)) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "register %s has %u bytes, not 8", RegName(id), value.bytes.size()));
    }
    uint64_t v = 0;
    std::memcpy(&v, value.bytes.data(),
                sizeof(v));  // little-endian host and KVM ABI
    return v;
  }
  return absl::NotFoundError(
      absl::StrFormat("register %s is not in the state", RegName(id)));
}

}  // namespace vexstate::arm64
