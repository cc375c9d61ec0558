#include "client/numbers.h"

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace vexstate::client {

absl::StatusOr<uint64_t> ParseUint64(absl::string_view text, uint64_t max) {
  absl::string_view digits = text;
  int base = 10;
  if (absl::StartsWithIgnoreCase(digits, "0x")) {
    digits.remove_prefix(2);
    base = 16;
  }
  if (digits.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is not a number"));
  }
  uint64_t value = 0;
  bool overflow = false;
  for (char c : digits) {
    uint64_t digit;
    if (absl::ascii_isdigit(c)) {
      digit = c - '0';
    } else if (base == 16 && absl::ascii_isxdigit(c)) {
      digit = absl::ascii_tolower(c) - 'a' + 10;
    } else {
      return absl::InvalidArgumentError(absl::StrCat(
          "'", text, "' is not a number (decimal, or hex with 0x)"));
    }
    if (value > (UINT64_MAX - digit) / base) overflow = true;
    value = value * base + digit;
  }
  if (overflow || value > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", text, "' is out of range (max ", max, " = 0x",
                     absl::Hex(max), ")"));
  }
  return value;
}

absl::StatusOr<uint32_t> ParseUint32(absl::string_view text) {
  absl::StatusOr<uint64_t> value = ParseUint64(text, UINT32_MAX);
  if (!value.ok()) return value.status();
  return static_cast<uint32_t>(*value);
}

}  // namespace vexstate::client
