#include "client/command_spec.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/numbers.h"

namespace vexstate::client {

CommandArgs::CommandArgs(std::map<absl::string_view, std::string> positionals,
                         std::map<std::string, std::vector<std::string>> flags,
                         std::string cwd)
    : positionals_(std::move(positionals)),
      flags_(std::move(flags)),
      cwd_(std::move(cwd)) {}

const std::string& CommandArgs::Arg(absl::string_view name) const {
  static const std::string* const kEmpty = new std::string();
  auto it = positionals_.find(name);
  return it == positionals_.end() ? *kEmpty : it->second;
}

std::string CommandArgs::PathArg(absl::string_view name) const {
  const std::string& path = Arg(name);
  return path.empty() ? path : AbsolutePath(path, cwd_);
}

std::string CommandArgs::PathFlag(absl::string_view flag) const {
  std::string path = Value(flag);
  return path.empty() ? path : AbsolutePath(path, cwd_);
}

bool CommandArgs::Has(absl::string_view flag) const {
  return flags_.find(std::string(flag)) != flags_.end();
}

std::string CommandArgs::Value(absl::string_view flag) const {
  auto it = flags_.find(std::string(flag));
  return it == flags_.end() ? "" : it->second.back();
}

std::vector<std::string> CommandArgs::Values(absl::string_view flag) const {
  auto it = flags_.find(std::string(flag));
  return it == flags_.end() ? std::vector<std::string>() : it->second;
}

std::optional<uint64_t> CommandArgs::Number(absl::string_view flag,
                                            bool required, uint64_t max) {
  if (!Has(flag)) {
    if (required) Fail(absl::StrCat("missing --", flag));
    return std::nullopt;
  }
  absl::StatusOr<uint64_t> value = ParseUint64(Value(flag), max);
  if (!value.ok()) {
    Fail(absl::StrCat("--", flag, ": ", value.status().message()));
    return std::nullopt;
  }
  return *value;
}

uint64_t CommandArgs::RequiredUint64(absl::string_view flag, uint64_t max) {
  return Number(flag, /*required=*/true, max).value_or(0);
}

uint32_t CommandArgs::RequiredUint32(absl::string_view flag) {
  return static_cast<uint32_t>(
      Number(flag, /*required=*/true, UINT32_MAX).value_or(0));
}

std::optional<uint64_t> CommandArgs::OptionalUint64(absl::string_view flag,
                                                    uint64_t max) {
  return Number(flag, /*required=*/false, max);
}

std::optional<uint32_t> CommandArgs::OptionalUint32(absl::string_view flag) {
  std::optional<uint64_t> value = Number(flag, /*required=*/false, UINT32_MAX);
  if (!value.has_value()) return std::nullopt;
  return static_cast<uint32_t>(*value);
}

std::vector<uint32_t> CommandArgs::Uint32s(absl::string_view flag) {
  std::vector<uint32_t> numbers;
  for (const std::string& text : Values(flag)) {
    absl::StatusOr<uint32_t> value = ParseUint32(text);
    if (!value.ok()) {
      Fail(absl::StrCat("--", flag, ": ", value.status().message()));
      return {};
    }
    numbers.push_back(*value);
  }
  return numbers;
}

void CommandArgs::Fail(std::string message) {
  if (status_.ok()) status_ = absl::InvalidArgumentError(std::move(message));
}

std::string AbsolutePath(absl::string_view path, absl::string_view cwd) {
  if (absl::StartsWith(path, "/") || cwd.empty()) return std::string(path);
  if (absl::EndsWith(cwd, "/")) return absl::StrCat(cwd, path);
  return absl::StrCat(cwd, "/", path);
}

}  // namespace vexstate::client
