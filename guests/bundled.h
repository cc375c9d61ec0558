// The guest programs vexstate carries inside its binaries, by name.
#ifndef VEXSTATE_GUESTS_BUNDLED_H_
#define VEXSTATE_GUESTS_BUNDLED_H_

#include <cstdint>
#include <string>

#include "absl/status/statusor.h"
#include "absl/types/span.h"

namespace vexstate {

// The image of bundled guest `name` for this build's arch ("witness": the witness guest of
// guests/x86_64 or guests/arm64). NOT_FOUND names the guests that exist.
absl::StatusOr<absl::Span<const uint8_t>> BundledGuest(const std::string& name);

}  // namespace vexstate

#endif  // VEXSTATE_GUESTS_BUNDLED_H_
