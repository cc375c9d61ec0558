// vexctl's command table: every command's words, synopsis, arguments, flags,
// and the builder that turns them into a request. The usage text and the parser
// both read it, so a command is described in exactly one place.
//
// Contract: constant data, safe from any thread.
#ifndef VEXSTATE_CLIENT_COMMANDS_H_
#define VEXSTATE_CLIENT_COMMANDS_H_

#include <vector>

#include "client/command_spec.h"

namespace vexstate::client {

// Every command, in the order the usage lists them.
const std::vector<CommandSpec>& Commands();

// Flags every command accepts, before or after its words (--host, --token,
// --json, ...).
struct GlobalFlagSpec {
  FlagSpec flag;
  absl::string_view metavar;  // "" for booleans
  std::string help;
};
const std::vector<GlobalFlagSpec>& GlobalFlags();

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_COMMANDS_H_
