#include "guests/bundled.h"

#include "absl/strings/str_format.h"

#if defined(__aarch64__)
#include "guests/arm64/witness_image.h"
#else
#include "guests/x86_64/witness_image.h"
#endif

namespace vexstate {

absl::StatusOr<absl::Span<const uint8_t>> BundledGuest(const std::string& name) {
  if (name != "witness") {
    return absl::NotFoundError(absl::StrFormat("no bundled guest \"%s\" (bundled: witness)", name));
  }
#if defined(__aarch64__)
  return guests::arm64::WitnessImage();
#else
  return absl::MakeConstSpan(kX86WitnessElf, kX86WitnessElfSize);
#endif
}

}  // namespace vexstate
