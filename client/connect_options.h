// How a client reaches one vexd: the target address, the bearer token, TLS
// files, the per-call deadline, and the defaults taken from the environment
// when a field is empty.
//
// Contract: plain data and pure functions (the environment is read only through
// the Environment passed in, files only by ReadTokenFile). Safe from any
// thread.
#ifndef VEXSTATE_CLIENT_CONNECT_OPTIONS_H_
#define VEXSTATE_CLIENT_CONNECT_OPTIONS_H_

#include <functional>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace vexstate::client {

// Environment variables read by ResolveConnectOptions.
inline constexpr char kHostEnv[] = "VEXSTATE_HOST";    // a target, as --host
inline constexpr char kTokenEnv[] = "VEXSTATE_TOKEN";  // the token itself
inline constexpr char kTokenFileEnv[] = "VEXSTATE_TOKEN_FILE";  // a token file

struct ConnectOptions {
  // "unix:PATH" (a Unix socket; PATH may be relative to the caller's cwd) or
  // "tcp:HOST:PORT" (HOST may be a name, an IPv4 address or a bracketed IPv6
  // address). Empty: $VEXSTATE_HOST (a bare path there means unix:PATH), else
  // the local vexd's default socket, DefaultTarget().
  std::string target;
  // Sent as "authorization: Bearer <token>" on every call. When empty, the
  // first of: the token in `token_file`; $VEXSTATE_TOKEN; the token in the file
  // $VEXSTATE_TOKEN_FILE; and, only when the target is the default one (so a
  // local token never goes to another host), the local vexd's tokens file
  // DefaultTokensFile() if this user can read it. Else no token (vexd then
  // answers UNAUTHENTICATED). What the caller set wins over the environment.
  std::string token;
  std::string token_file;
  // TLS. With none of these set the channel is plaintext (vexd's default: a
  // Unix socket or loopback). `tls_ca_file` alone: server-authenticated TLS
  // against that CA. `tls_cert_file` and `tls_key_file` (always together):
  // mutual TLS; without `tls_ca_file` the system roots verify the server.
  std::string tls_ca_file;
  std::string tls_cert_file;
  std::string tls_key_file;
  // Overrides the name checked against the server certificate (e.g. when
  // connecting by IP).
  std::string tls_server_name;
  // Deadline of each unary call (WatchEvents has none).
  absl::Duration deadline = absl::Seconds(30);
  // When false, ResolveConnectOptions takes nothing from the environment (no
  // variables, no default tokens file); an empty target is still the default.
  bool use_environment = true;
};

// What ResolveConnectOptions reads from the process, as a value (tests pass
// their own).
struct Environment {
  // The value of a variable, or nullopt when it is unset or empty.
  std::function<std::optional<std::string>(const char* name)> get;
  bool is_root = false;  // effective uid 0
};
// getenv and geteuid.
Environment ProcessEnvironment();

// vexd's default --state_dir, as server/state_dir.h defines it:
// /var/lib/vexstate for root, $XDG_RUNTIME_DIR/vexstate for other users (when
// that variable holds an absolute path; else /var/lib/vexstate, which then
// fails to connect with a message naming it).
std::string DefaultStateDir(const Environment& env);
// "unix:<DefaultStateDir>/vexd.sock".
std::string DefaultTarget(const Environment& env);
// "<DefaultStateDir>/tokens": vexd writes it on first start, operator token on
// the first line.
std::string DefaultTokensFile(const Environment& env);

// `options` with the empty target and token filled in as documented on
// ConnectOptions. Errors: INVALID_ARGUMENT for a malformed target, a token file
// without a token, or a certificate without its key;
// NOT_FOUND/PERMISSION_DENIED for an unreadable token file (a default tokens
// file that cannot be read is skipped instead).
absl::StatusOr<ConnectOptions> ResolveConnectOptions(ConnectOptions options,
                                                     const Environment& env);

// The gRPC channel target for a vexstate target: "unix:PATH" stays as it is,
// "tcp:HOST:PORT" becomes "HOST:PORT". INVALID_ARGUMENT names what is wrong.
absl::StatusOr<std::string> GrpcTarget(absl::string_view target);

// The token in a token file's contents: the first whitespace-separated word of
// the first line that is neither blank nor a comment ('#' as its first
// non-blank character). INVALID_ARGUMENT when there is none.
absl::StatusOr<std::string> ParseTokenFile(absl::string_view contents);
// Reads `path` and applies ParseTokenFile; errors name the file.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_CONNECT_OPTIONS_H_
