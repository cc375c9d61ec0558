// The vocabulary vexctl's command table (commands.cc) is written in: what a
// command's words, arguments and flags are, and CommandArgs, the parsed values
// a command's builder reads.
//
// Contract: pure data and pure functions. CommandArgs keeps the FIRST error its
// accessors meet ("--vcpu: 'x' is not a number") and returns zero values after
// it, so a builder reads every value in a row and the parser checks status()
// once at the end.
#ifndef VEXSTATE_CLIENT_COMMAND_SPEC_H_
#define VEXSTATE_CLIENT_COMMAND_SPEC_H_

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"
#include "client/invocation.h"

namespace vexstate::client {

struct FlagSpec {
  absl::string_view name;  // without "--", words joined by '-'
  bool takes_value = true;
  bool repeatable = false;
};

struct PositionalSpec {
  absl::string_view name;  // "NAME", "FILE" (as in the synopsis)
  bool optional = false;
};

class CommandArgs;

struct CommandSpec {
  std::vector<absl::string_view> words;  // {"vm", "create"}
  // The arguments after the words, as in the usage; "\n" starts a continuation
  // line.
  absl::string_view synopsis;
  absl::string_view summary;  // one line for the usage text
  std::vector<PositionalSpec> positionals;
  std::vector<FlagSpec> flags;
  // Fills the invocation's request from the arguments; errors go to `args`.
  void (*build)(CommandArgs& args, Invocation* invocation);
};

// A list of names and the values they stand for, e.g. a constexpr array of
// {"x86_64", v1::ARCH_X86_64}, {"arm64", v1::ARCH_ARM64}.
template <typename T>
using Choices = absl::Span<const std::pair<absl::string_view, T>>;

// A command's parsed arguments. Flag names are looked up without "--".
class CommandArgs {
 public:
  // `positionals` maps PositionalSpec names to the arguments given; `flags`
  // maps flag names to the values given, in order (a boolean flag's value is
  // ""). `cwd` is for PathArg().
  CommandArgs(std::map<absl::string_view, std::string> positionals,
              std::map<std::string, std::vector<std::string>> flags,
              std::string cwd);

  // A positional argument ("" when an optional one is absent).
  const std::string& Arg(absl::string_view name) const;
  // A positional argument or a flag's value, made absolute against the cwd:
  // vexd resolves paths against its own cwd. "" when absent.
  std::string PathArg(absl::string_view name) const;
  std::string PathFlag(absl::string_view flag) const;

  bool Has(absl::string_view flag) const;
  // The flag's (last) value; "" when absent.
  std::string Value(absl::string_view flag) const;
  std::vector<std::string> Values(absl::string_view flag) const;
  // Absent: records "missing --<flag>" and returns 0.
  uint64_t RequiredUint64(absl::string_view flag, uint64_t max = UINT64_MAX);
  uint32_t RequiredUint32(absl::string_view flag);
  std::optional<uint64_t> OptionalUint64(absl::string_view flag,
                                         uint64_t max = UINT64_MAX);
  std::optional<uint32_t> OptionalUint32(absl::string_view flag);
  std::vector<uint32_t> Uint32s(absl::string_view flag);
  // The value named by a flag (Choice) or a positional argument (ArgChoice)
  // among `choices`; nullopt when absent, or after recording "--<flag>: 'x' is
  // not one of a|b|c". T is explicit: args.Choice<v1::Arch>("arch", kArches).
  template <typename T>
  std::optional<T> Choice(absl::string_view flag, Choices<T> choices);
  template <typename T>
  std::optional<T> ArgChoice(absl::string_view name, Choices<T> choices);

  // Records a usage error unless one is recorded already.
  void Fail(std::string message);
  const absl::Status& status() const { return status_; }

 private:
  std::optional<uint64_t> Number(absl::string_view flag, bool required,
                                 uint64_t max);
  template <typename T>
  std::optional<T> Pick(absl::string_view label, const std::string& text,
                        Choices<T> choices);

  std::map<absl::string_view, std::string> positionals_;
  std::map<std::string, std::vector<std::string>> flags_;
  std::string cwd_;
  absl::Status status_;
};

// Makes `path` absolute against `cwd` (lexically: "." and ".." are kept; vexd's
// open() resolves them). An absolute path, or any path when `cwd` is empty
// (unknown), is returned as it is.
std::string AbsolutePath(absl::string_view path, absl::string_view cwd);

// "a|b|c" from the names of a choice list.
template <typename T>
std::string ChoiceNames(Choices<T> choices) {
  std::vector<absl::string_view> names;
  for (const auto& choice : choices) names.push_back(choice.first);
  return absl::StrJoin(names, "|");
}

template <typename T>
std::optional<T> CommandArgs::Pick(absl::string_view label,
                                   const std::string& text,
                                   Choices<T> choices) {
  for (const auto& [name, value] : choices) {
    if (name == text) return value;
  }
  Fail(absl::StrCat(label, ": '", text, "' is not one of ",
                    ChoiceNames(choices)));
  return std::nullopt;
}

template <typename T>
std::optional<T> CommandArgs::Choice(absl::string_view flag,
                                     Choices<T> choices) {
  if (!Has(flag)) return std::nullopt;
  return Pick(absl::StrCat("--", flag), Value(flag), choices);
}

template <typename T>
std::optional<T> CommandArgs::ArgChoice(absl::string_view name,
                                        Choices<T> choices) {
  if (Arg(name).empty()) return std::nullopt;
  return Pick(name, Arg(name), choices);
}

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_COMMAND_SPEC_H_
