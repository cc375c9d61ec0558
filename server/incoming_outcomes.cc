#include "server/incoming_outcomes.h"

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "server/atomic_file.h"
#include "server/state_dir.h"

namespace vexstate::vexd {

absl::Status IncomingOutcomes::ValidateId(absl::string_view id) {
  constexpr size_t kMaxIdLength = 64;
  if (id.empty() || id.size() > kMaxIdLength) {
    return absl::InvalidArgumentError(
        absl::StrFormat("migration id '%s' has %d characters; 1 to %d are allowed", id, id.size(), kMaxIdLength));
  }
  for (char c : id) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
    if (!ok) {
      return absl::InvalidArgumentError(absl::StrFormat(
          "migration id '%s' has the character '%c': only 0-9, A-Z, a-z, '-' and '_' are allowed", id, c));
    }
  }
  return absl::OkStatus();
}

absl::Status IncomingOutcomes::Record(const std::string& id, const v1::FinishResponse& outcome) const {
  if (absl::Status valid = ValidateId(id); !valid.ok()) return valid;
  if (absl::Status made = MakeDirs(dir_, 0700); !made.ok()) return made;
  std::string bytes;
  if (!outcome.SerializeToString(&bytes)) return absl::InternalError("cannot serialise a FinishResponse");
  absl::Status written = WriteFileAtomically(PathOf(id), bytes);
  if (!written.ok()) {
    return absl::Status(written.code(),
                        absl::StrCat("recording the outcome of migration ", id, ": ", written.message()));
  }
  return absl::OkStatus();
}

std::optional<v1::FinishResponse> IncomingOutcomes::Find(const std::string& id) const {
  if (!ValidateId(id).ok()) return std::nullopt;
  std::ifstream in(PathOf(id), std::ios::binary);
  if (!in) return std::nullopt;
  std::stringstream bytes;
  bytes << in.rdbuf();
  v1::FinishResponse outcome;
  if (!outcome.ParseFromString(bytes.str())) return std::nullopt;
  return outcome;
}

}  // namespace vexstate::vexd
