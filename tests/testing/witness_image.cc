// The bundled witness guest of this build's arch, as bytes.
#include "guests/bundled.h"
#include "tests/testing/witness_vm.h"

namespace vexstate::testing {

absl::Span<const uint8_t> WitnessImage() { return *BundledGuest("witness"); }

}  // namespace vexstate::testing
