// vexctl: the command line of vexstate's host control plane. `vexctl help`
// prints the usage (args.cc builds it from the command table in commands.cc).
//
// Exit status: 0 success; 1 the call (or connecting) failed, with
// "vexctl: <CODE>: <message>" on stderr; 2 usage error, with the problem and
// the command's synopsis on stderr.
#include <unistd.h>

#include <iostream>
#include <string>
#include <vector>

#include "client/args.h"
#include "client/client.h"
#include "client/run.h"

namespace {

// The cwd, or "" when it cannot be read (relative FILE arguments then go as
// they are).
std::string CurrentDirectory() {
  std::vector<char> buffer(4096);
  if (getcwd(buffer.data(), buffer.size()) == nullptr) return "";
  return buffer.data();
}

}  // namespace

int main(int argc, char** argv) {
  using vexstate::client::Invocation;
  using vexstate::client::VexClient;
  const std::vector<std::string> args(argv + 1, argv + argc);
  absl::StatusOr<Invocation> invocation =
      vexstate::client::ParseArgs(args, CurrentDirectory());
  if (!invocation.ok()) {
    std::cerr << "vexctl: " << invocation.status().message() << "\n"
              << vexstate::client::UsageHint(args);
    return 2;
  }
  if (invocation->rpc == vexstate::client::Rpc::kHelp) {
    std::cout << vexstate::client::UsageText();
    return 0;
  }
  absl::StatusOr<VexClient> client = VexClient::Connect(invocation->connect);
  if (!client.ok()) {
    return vexstate::client::ReportError(client.status(), std::cerr);
  }
  return vexstate::client::RunInvocation(*invocation, *client, std::cout,
                                         std::cerr, isatty(STDOUT_FILENO) != 0);
}
