#include "client/args.h"

#include <map>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/time/time.h"
#include "client/commands.h"

namespace vexstate::client {
namespace {

using FlagValues = std::map<std::string, std::vector<std::string>>;

absl::Status Usage(absl::string_view message) {
  return absl::InvalidArgumentError(message);
}

bool IsFlagToken(const std::string& arg) {
  return arg.size() > 1 && arg[0] == '-';
}

bool WantsHelp(const std::vector<std::string>& args) {
  for (const std::string& arg : args) {
    if (arg == "--") return false;
    if (arg == "-h" || arg == "--help") return true;
  }
  return false;
}

std::string CommandName(const CommandSpec& command) {
  return absl::StrJoin(command.words, " ");
}

// The global flag or, when `command` is given, the command's flag called
// `name`.
const FlagSpec* FindFlag(absl::string_view name, const CommandSpec* command) {
  for (const GlobalFlagSpec& global : GlobalFlags()) {
    if (global.flag.name == name) return &global.flag;
  }
  if (command != nullptr) {
    for (const FlagSpec& flag : command->flags) {
      if (flag.name == name) return &flag;
    }
  }
  return nullptr;
}

// Parses the flag at args[*i] (with its value) into `flags` and moves *i past
// it.
absl::Status TakeFlag(const std::vector<std::string>& args, size_t* i,
                      const CommandSpec* command, FlagValues* flags) {
  const std::string& arg = args[*i];
  ++*i;
  if (arg.rfind("--", 0) != 0) return Usage(absl::StrCat("unknown flag ", arg));
  absl::string_view body = absl::string_view(arg).substr(2);
  size_t equals = body.find('=');
  std::string name = absl::StrReplaceAll(body.substr(0, equals), {{"_", "-"}});
  const FlagSpec* spec = FindFlag(name, command);
  if (spec == nullptr && command == nullptr) {
    return Usage(
        absl::StrCat("unknown flag --", name,
                     " (before the command only global flags are allowed)"));
  }
  if (spec == nullptr) return Usage(absl::StrCat("unknown flag --", name));
  std::string value;
  if (!spec->takes_value) {
    if (equals != absl::string_view::npos) {
      return Usage(absl::StrCat("--", name, " takes no value"));
    }
  } else if (equals != absl::string_view::npos) {
    value = std::string(body.substr(equals + 1));
  } else if (*i < args.size()) {
    value = args[(*i)++];
  } else {
    return Usage(absl::StrCat("--", name, " needs a value"));
  }
  std::vector<std::string>& values = (*flags)[name];
  if (!values.empty() && !spec->repeatable) {
    return Usage(absl::StrCat("--", name, " given twice"));
  }
  values.push_back(std::move(value));
  return absl::OkStatus();
}

// The command named by args[*i] (and args[*i + 1] for two-word commands); moves
// *i past it.
absl::StatusOr<const CommandSpec*> FindCommand(
    const std::vector<std::string>& args, size_t* i) {
  if (*i >= args.size()) return Usage("missing COMMAND (see vexctl help)");
  const std::string& first = args[(*i)++];
  std::vector<const CommandSpec*> group;
  for (const CommandSpec& command : Commands()) {
    if (command.words.front() == first) group.push_back(&command);
  }
  if (group.empty()) {
    return Usage(absl::StrCat("unknown command '", first, "'"));
  }
  if (group.front()->words.size() == 1) return group.front();
  std::vector<absl::string_view> subcommands;
  for (const CommandSpec* command : group) {
    subcommands.push_back(command->words[1]);
  }
  std::string choices = absl::StrJoin(subcommands, "|");
  if (*i >= args.size() || IsFlagToken(args[*i])) {
    return Usage(absl::StrCat(first, ": missing subcommand (", choices, ")"));
  }
  const std::string& second = args[(*i)++];
  for (const CommandSpec* command : group) {
    if (command->words[1] == second) return command;
  }
  return Usage(absl::StrCat(first, ": unknown subcommand '", second, "' (",
                            choices, ")"));
}

absl::StatusOr<std::map<absl::string_view, std::string>> AssignPositionals(
    const CommandSpec& command, const std::vector<std::string>& values) {
  std::map<absl::string_view, std::string> assigned;
  size_t k = 0;
  for (const PositionalSpec& spec : command.positionals) {
    if (k < values.size()) {
      assigned[spec.name] = values[k++];
    } else if (!spec.optional) {
      return Usage(absl::StrCat("missing ", spec.name));
    }
  }
  if (k < values.size()) {
    return Usage(absl::StrCat("unexpected argument '", values[k], "'"));
  }
  return assigned;
}

absl::Status ApplyGlobalFlags(const FlagValues& flags, Invocation* invocation) {
  auto value = [&](absl::string_view name) -> const std::string* {
    auto it = flags.find(std::string(name));
    return it == flags.end() ? nullptr : &it->second.back();
  };
  ConnectOptions& connect = invocation->connect;
  const std::pair<absl::string_view, std::string*> strings[] = {
      {"host", &connect.target},
      {"token", &connect.token},
      {"token-file", &connect.token_file},
      {"tls-ca", &connect.tls_ca_file},
      {"tls-cert", &connect.tls_cert_file},
      {"tls-key", &connect.tls_key_file},
      {"tls-server-name", &connect.tls_server_name},
  };
  for (const auto& [name, field] : strings) {
    if (const std::string* text = value(name)) *field = *text;
  }
  if (const std::string* text = value("timeout")) {
    absl::Duration timeout;
    if (!absl::ParseDuration(*text, &timeout) ||
        timeout <= absl::ZeroDuration()) {
      return Usage(
          absl::StrCat("--timeout: '", *text,
                       "' is not a positive duration (e.g. 30s, 500ms, 2m)"));
    }
    connect.deadline = timeout;
  }
  invocation->json = value("json") != nullptr;
  // What can be checked without the network is a usage error, not a failed
  // call.
  if (!connect.target.empty()) {
    if (absl::StatusOr<std::string> target = GrpcTarget(connect.target);
        !target.ok()) {
      return Usage(absl::StrCat("--host: ", target.status().message()));
    }
  }
  if (connect.tls_cert_file.empty() != connect.tls_key_file.empty()) {
    return Usage("--tls-cert and --tls-key go together (mutual TLS)");
  }
  return absl::OkStatus();
}

// `text` as lines of at most kUsageWidth columns, each starting with `indent`.
std::string Wrap(absl::string_view text, absl::string_view indent) {
  constexpr size_t kUsageWidth = 88;
  std::string out;
  std::string line;
  for (absl::string_view word : absl::StrSplit(text, ' ', absl::SkipEmpty())) {
    if (!line.empty() &&
        indent.size() + line.size() + 1 + word.size() > kUsageWidth) {
      absl::StrAppend(&out, indent, line, "\n");
      line.clear();
    }
    absl::StrAppend(&line, line.empty() ? "" : " ", word);
  }
  if (!line.empty()) absl::StrAppend(&out, indent, line, "\n");
  return out;
}

std::string CommandUsage(const CommandSpec& command) {
  std::string line = CommandName(command);
  if (!command.synopsis.empty()) {
    absl::StrAppend(
        &line, " ",
        absl::StrReplaceAll(command.synopsis, {{"\n", "\n        "}}));
  }
  return line;
}

}  // namespace

absl::StatusOr<Invocation> ParseArgs(const std::vector<std::string>& args,
                                     absl::string_view cwd) {
  Invocation invocation;
  if (WantsHelp(args)) return invocation;
  FlagValues flags;
  size_t i = 0;
  bool flags_ended = false;
  while (!flags_ended && i < args.size() && IsFlagToken(args[i])) {
    if (args[i] == "--") {
      flags_ended = true;
      ++i;
    } else if (absl::Status taken = TakeFlag(args, &i, nullptr, &flags);
               !taken.ok()) {
      return taken;
    }
  }
  absl::StatusOr<const CommandSpec*> found = FindCommand(args, &i);
  if (!found.ok()) return found.status();
  const CommandSpec& command = **found;
  auto in_command = [&](const absl::Status& status) {
    return Usage(absl::StrCat(CommandName(command), ": ", status.message()));
  };

  std::vector<std::string> positionals;
  while (i < args.size()) {
    if (flags_ended || !IsFlagToken(args[i])) {
      positionals.push_back(args[i++]);
    } else if (args[i] == "--") {
      flags_ended = true;
      ++i;
    } else if (absl::Status taken = TakeFlag(args, &i, &command, &flags);
               !taken.ok()) {
      return in_command(taken);
    }
  }
  absl::StatusOr<std::map<absl::string_view, std::string>> assigned =
      AssignPositionals(command, positionals);
  if (!assigned.ok()) return in_command(assigned.status());
  if (absl::Status applied = ApplyGlobalFlags(flags, &invocation);
      !applied.ok()) {
    return applied;
  }
  CommandArgs command_args(*std::move(assigned), std::move(flags),
                           std::string(cwd));
  command.build(command_args, &invocation);
  if (!command_args.status().ok()) return in_command(command_args.status());
  return invocation;
}

std::string UsageText() {
  std::string text = absl::StrCat(
      "usage: vexctl [FLAGS] COMMAND [ARGS]\n\n",
      Wrap("Talks to vexd, the vexstate host daemon: VMs, their pending "
           "exceptions, snapshots, events, live migration.",
           ""),
      "\nCommands:\n");
  for (const CommandSpec& command : Commands()) {
    absl::StrAppend(&text, "  ", CommandUsage(command), "\n",
                    Wrap(command.summary, "      "));
  }
  absl::StrAppend(&text, "\nFlags (before or after the command):\n");
  for (const GlobalFlagSpec& global : GlobalFlags()) {
    std::string flag = absl::StrCat("--", global.flag.name);
    if (!global.metavar.empty()) absl::StrAppend(&flag, " ", global.metavar);
    absl::StrAppend(&text, "  ", flag, "\n", Wrap(global.help, "      "));
  }
  for (absl::string_view paragraph : {
           "Numbers are decimal or 0x-hex. FILE paths are made absolute here, "
           "then opened by vexd on its host. Flag names take '-' or '_'; "
           "--flag=value works too.",
           "--json prints each response as one JSON object on one line (proto "
           "field names, every field, enums by name, 64-bit integers as "
           "strings); events and migrate's progress messages print one object "
           "per line.",
           "Exit status: 0 success; 1 the call failed, with \"vexctl: CODE: "
           "message\" on stderr (CODE is the gRPC status name, e.g. "
           "NOT_FOUND), or a migration ended other than COMPLETED; 2 usage "
           "error.",
       }) {
    absl::StrAppend(&text, "\n", Wrap(paragraph, ""));
  }
  return text;
}

std::string UsageHint(const std::vector<std::string>& args) {
  // The first two words that are not flags (a flag's value may be taken for a
  // word, which at worst shows the general form).
  std::vector<absl::string_view> words;
  for (const std::string& arg : args) {
    if (IsFlagToken(arg)) continue;
    words.push_back(arg);
    if (words.size() == 2) break;
  }
  // The commands of the group the first word names, narrowed to the one the
  // second word names if it names one.
  std::vector<const CommandSpec*> group;
  std::vector<const CommandSpec*> exact;
  for (const CommandSpec& command : Commands()) {
    if (words.empty() || command.words.front() != words.front()) continue;
    group.push_back(&command);
    if (command.words.size() == 1 ||
        (words.size() == 2 && command.words[1] == words[1])) {
      exact.push_back(&command);
    }
  }
  std::string hint;
  for (const CommandSpec* command : exact.empty() ? group : exact) {
    absl::StrAppend(&hint, "usage: vexctl ", CommandUsage(*command), "\n");
  }
  if (hint.empty()) hint = "usage: vexctl [FLAGS] COMMAND [ARGS]\n";
  return hint + "(vexctl help lists every command and flag)\n";
}

}  // namespace vexstate::client
