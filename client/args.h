// vexctl's command line -> Invocation, and the usage text. Both read the
// command table (commands.h).
//
// Grammar: vexctl [FLAGS] COMMAND [ARGS and FLAGS]. Global flags (--host,
// --json, ...) may come before or after the command; a command's own flags
// after it. "--flag value" and "--flag=value" are the same; '_' and '-' are the
// same inside flag names; "--" ends the flags. "-h", "--help" or "help"
// anywhere asks for the usage. Numbers are decimal or 0x-hex.
//
// Contract: pure functions (the cwd is a parameter, the environment is not
// read). Usage errors are INVALID_ARGUMENT whose message names the command and
// the problem, e.g. "inject mce: --bank: 'x' is not a number (decimal, or hex
// with 0x)".
#ifndef VEXSTATE_CLIENT_ARGS_H_
#define VEXSTATE_CLIENT_ARGS_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/invocation.h"

namespace vexstate::client {

// `args` is argv without argv[0]. FILE arguments are made absolute against
// `cwd`.
absl::StatusOr<Invocation> ParseArgs(const std::vector<std::string>& args,
                                     absl::string_view cwd);

// The full usage text (ends with a newline).
std::string UsageText();

// A short reminder after a usage error: the synopsis of the command `args` name
// (or of every command of the group, for "vm" alone), else the general form;
// ends with a newline.
std::string UsageHint(const std::vector<std::string>& args);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_ARGS_H_
