// Authentication and authorisation of vexd's control RPCs (SPEC §4.6, control.proto header).
//
// Every vexstate RPC carries "authorization: Bearer <token>" metadata. A token maps to a
// principal with a role: viewer (Get*/List*/QueryPending/GetExceptionState/InspectSnapshot/
// WatchEvents) or operator (everything). No or unknown token -> UNAUTHENTICATED; a viewer
// calling an operator RPC -> PERMISSION_DENIED. Health and reflection need no token.
//
// Tokens file: one token per line, "<token> <viewer|operator> [name]"; blank lines and lines
// whose first non-blank character is '#' are ignored. The file must not be readable by group
// or others (like ssh keys): vexd refuses it otherwise. Without --tokens, vexd uses
// <state_dir>/tokens, creating it on first start with one random operator token (first line,
// so `vexctl --token_file` picks it) and one random viewer token.
//
// Where the check happens: every handler of the four public services begins with
// Authorizer::Authorize(context, <role>) (see the services' Guarded helper); vexd_test walks
// every method of every service descriptor and checks each refuses a call without a token,
// so a handler that forgets the check fails the build's tests.
//
// Thread-safety: TokenStore and Authorizer are immutable after construction; every method
// is safe from any thread.
#ifndef VEXSTATE_SERVER_AUTH_H_
#define VEXSTATE_SERVER_AUTH_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/server_context.h"
#include "grpcpp/support/status.h"

namespace vexstate::vexd {

enum class Role { kViewer = 1, kOperator = 2 };
absl::string_view RoleName(Role role);

struct Principal {
  std::string token;
  Role role = Role::kViewer;
  std::string name;  // from the tokens file; "line N" when the line names none
};

class TokenStore {
 public:
  // Parses a tokens file's text. INVALID_ARGUMENT naming `origin` and the line for a bad
  // role, a missing role, a duplicated token, or a file without any token.
  static absl::StatusOr<TokenStore> Parse(absl::string_view text, absl::string_view origin);
  // Reads and parses `path`; FAILED_PRECONDITION if group or others may read it.
  static absl::StatusOr<TokenStore> Load(const std::string& path);
  // Writes a new tokens file (mode 0600, O_EXCL) with a random operator and a random viewer
  // token. ALREADY_EXISTS if `path` exists.
  static absl::Status CreateDefault(const std::string& path);

  // The principal holding `token`, or nullptr. Compares in time independent of where the
  // token differs.
  const Principal* Find(absl::string_view token) const;
  const std::vector<Principal>& principals() const { return principals_; }

 private:
  std::vector<Principal> principals_;
};

class Authorizer {
 public:
  explicit Authorizer(TokenStore tokens) : tokens_(std::move(tokens)) {}

  // OK when the call's bearer token belongs to a principal whose role is at least `needed`.
  grpc::Status Authorize(const grpc::ServerContextBase& context, Role needed) const;

 private:
  const TokenStore tokens_;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_AUTH_H_
