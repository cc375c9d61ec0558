// The bundled witness guest of this build's arch, as bytes.
#include "tests/testing/witness_vm.h"

#if defined(__aarch64__)
#error "arm64 witness image: add the guests/arm64/witness_image.h branch here"
#else
#include "guests/x86_64/witness_image.h"
#endif

namespace vexstate::testing {

absl::Span<const uint8_t> WitnessImage() {
#if !defined(__aarch64__)
  return absl::MakeConstSpan(kX86WitnessElf, kX86WitnessElfSize);
#endif
}

}  // namespace vexstate::testing
