#include "client/connect_options.h"

#include <unistd.h>

#include <cstdlib>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "client/file_contents.h"

namespace vexstate::client {
namespace {

constexpr size_t kMaxUnixSocketPath = 107;

absl::Status BadTarget(absl::string_view target, absl::string_view why) {
  return absl::InvalidArgumentError(
      absl::StrCat("target '", target, "': ", why,
                   " (expected unix:PATH or tcp:HOST:PORT)"));
}

}  // namespace

Environment ProcessEnvironment() {
  Environment env;
  env.get = [](const char* name) -> std::optional<std::string> {
    const char* value = std::getenv(name);
    if (value == nullptr || *value == '\0') return std::nullopt;
    return std::string(value);
  };
  env.is_root = geteuid() == 0;
  return env;
}

std::string DefaultStateDir(const Environment& env) {
  if (!env.is_root) {
    std::optional<std::string> runtime = env.get("XDG_RUNTIME_DIR");
    if (runtime.has_value() && absl::StartsWith(*runtime, "/")) {
      return absl::StrCat(*runtime, "/vexstate");
    }
  }
  return "/var/lib/vexstate";
}

std::string DefaultTarget(const Environment& env) {
  return absl::StrCat("unix:", DefaultStateDir(env), "/vexd.sock");
}

std::string DefaultTokensFile(const Environment& env) {
  return absl::StrCat(DefaultStateDir(env), "/tokens");
}

absl::StatusOr<std::string> GrpcTarget(absl::string_view target) {
  if (absl::StartsWith(target, "unix:")) {
    if (target.size() == 5) return BadTarget(target, "empty socket path");
    // sockaddr_un.sun_path holds 108 bytes with the NUL; gRPC would only say
    // "the target uri is not valid".
    if (target.size() - 5 > kMaxUnixSocketPath) {
      return BadTarget(target,
                       absl::StrCat("the socket path has ", target.size() - 5,
                                    " bytes; a Unix socket path holds at most ",
                                    kMaxUnixSocketPath));
    }
    return std::string(target);
  }
  if (!absl::StartsWith(target, "tcp:")) {
    return BadTarget(target, "unknown scheme");
  }
  absl::string_view host_port = target.substr(4);
  size_t colon = host_port.rfind(':');
  if (colon == absl::string_view::npos) return BadTarget(target, "no port");
  absl::string_view host = host_port.substr(0, colon);
  absl::string_view port = host_port.substr(colon + 1);
  if (host.empty()) return BadTarget(target, "empty host");
  // An IPv6 address must be bracketed, or its colons would be taken for the
  // port's.
  if (host.find(':') != absl::string_view::npos &&
      !(host.front() == '[' && host.back() == ']')) {
    return BadTarget(target,
                     "an IPv6 host needs brackets, e.g. tcp:[::1]:7443");
  }
  uint32_t port_number = 0;
  if (!absl::SimpleAtoi(port, &port_number) || port_number == 0 ||
      port_number > 65535) {
    return BadTarget(target, absl::StrCat("bad port '", port, "'"));
  }
  return std::string(host_port);
}

absl::StatusOr<std::string> ParseTokenFile(absl::string_view contents) {
  for (absl::string_view line : absl::StrSplit(contents, '\n')) {
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line.front() == '#') continue;
    std::vector<absl::string_view> words =
        absl::StrSplit(line, absl::ByAnyChar(" \t\r\v\f"), absl::SkipEmpty());
    return std::string(words.front());
  }
  return absl::InvalidArgumentError("no token (only blank or comment lines)");
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadFileContents(path);
  if (!contents.ok()) {
    return absl::Status(
        contents.status().code(),
        absl::StrCat("token file: ", contents.status().message()));
  }
  absl::StatusOr<std::string> token = ParseTokenFile(*contents);
  if (!token.ok()) {
    return absl::InvalidArgumentError(
        absl::StrCat("token file ", path, ": ", token.status().message()));
  }
  return token;
}

absl::StatusOr<ConnectOptions> ResolveConnectOptions(ConnectOptions options,
                                                     const Environment& env) {
  auto from_env = [&](const char* name) -> std::optional<std::string> {
    if (!options.use_environment || !env.get) return std::nullopt;
    return env.get(name);
  };
  bool default_target = false;
  if (options.target.empty()) {
    if (std::optional<std::string> host = from_env(kHostEnv)) {
      // A bare path in VEXSTATE_HOST names a Unix socket.
      bool has_scheme =
          absl::StartsWith(*host, "unix:") || absl::StartsWith(*host, "tcp:");
      options.target = has_scheme ? *host : absl::StrCat("unix:", *host);
    } else {
      options.target = DefaultTarget(env);
      default_target = true;
    }
  }
  if (absl::StatusOr<std::string> checked = GrpcTarget(options.target);
      !checked.ok()) {
    return checked.status();
  }
  // A file named by the caller beats the environment; the environment's token
  // beats its token file.
  if (options.token.empty() && options.token_file.empty()) {
    if (std::optional<std::string> token = from_env(kTokenEnv)) {
      options.token = *token;
    } else if (std::optional<std::string> file = from_env(kTokenFileEnv)) {
      options.token_file = *file;
    }
  }
  if (options.token.empty() && !options.token_file.empty()) {
    absl::StatusOr<std::string> read = ReadTokenFile(options.token_file);
    if (!read.ok()) return read.status();
    options.token = *std::move(read);
  }
  // The local vexd's own tokens file, for its local socket only. Not being able
  // to read it (not root, no vexd yet) is normal: go without a token.
  if (options.token.empty() && default_target && options.use_environment) {
    absl::StatusOr<std::string> read = ReadTokenFile(DefaultTokensFile(env));
    if (read.ok()) options.token = *std::move(read);
  }
  if (options.tls_cert_file.empty() != options.tls_key_file.empty()) {
    return absl::InvalidArgumentError(
        "mutual TLS needs both a certificate and its key (--tls-cert and "
        "--tls-key)");
  }
  return options;
}

}  // namespace vexstate::client
