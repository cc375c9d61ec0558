#include "vmm/arch/arm64/boot.h"

#include "absl/strings/str_format.h"
#include "guests/common/witness_abi.h"
#include "vmm/arch/arm64/reg_ids.h"
#include "vmm/arch/arm64/vcpu_state.h"

namespace vexstate::arm64 {

static_assert(kImageOffset == VEX_IMAGE_OFFSET,
              "the boot protocol is the witness guests' layout");

absl::StatusOr<uint64_t> LoadFlatImage(absl::Span<const uint8_t> image,
                                       GuestMemory& memory) {
  if (image.empty())
    return absl::InvalidArgumentError("the arm64 guest image is empty");
  if (kImageOffset + image.size() > memory.size()) {
    return absl::InvalidArgumentError(
        absl::StrFormat("the arm64 guest image (%u bytes) does not fit in RAM "
                        "at offset 0x%x (RAM is %u bytes)",
                        image.size(), kImageOffset, memory.size()));
  }
  const uint64_t entry = memory.base_gpa() + kImageOffset;
  if (absl::Status s = memory.Write(entry, image); !s.ok()) return s;
  return entry;
}

absl::Status SetEntryState(kvm::VcpuFd& vcpu, uint64_t entry) {
  for (uint32_t n = 0; n < 4; ++n) {
    if (absl::Status s = SetU64(vcpu, XRegId(n), 0); !s.ok()) return s;
  }
  if (absl::Status s = SetU64(vcpu, kRegPstate, kPstateModeEl1h | kPstateDaif);
      !s.ok())
    return s;
  return SetU64(vcpu, kRegPc, entry);
}

}  // namespace vexstate::arm64
