// Numbers typed on a command line: "0x"-prefixed hexadecimal or decimal,
// unsigned.
//
// Contract: pure functions; errors are INVALID_ARGUMENT messages that quote the
// text and, when it is a number, say which range it missed.
#ifndef VEXSTATE_CLIENT_NUMBERS_H_
#define VEXSTATE_CLIENT_NUMBERS_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vexstate::client {

// "4096", "0x1000", "0X1000". No sign, no spaces, no other bases (a leading 0
// is decimal).
absl::StatusOr<uint64_t> ParseUint64(absl::string_view text,
                                     uint64_t max = UINT64_MAX);
absl::StatusOr<uint32_t> ParseUint32(absl::string_view text);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_NUMBERS_H_
