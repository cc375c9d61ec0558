#include "server/auth.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <set>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "vmm/kvm/fd.h"

namespace vexstate::vexd {
namespace {

constexpr absl::string_view kBearerPrefix = "Bearer ";

absl::StatusOr<std::string> RandomToken() {
  unsigned char bytes[32];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) return absl::InternalError("RAND_bytes failed: no token generated");
  return absl::BytesToHexString(absl::string_view(reinterpret_cast<const char*>(bytes), sizeof(bytes)));
}

}  // namespace

absl::string_view RoleName(Role role) { return role == Role::kOperator ? "operator" : "viewer"; }

absl::StatusOr<TokenStore> TokenStore::Parse(absl::string_view text, absl::string_view origin) {
  TokenStore store;
  std::set<std::string> seen;
  int line_number = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_number;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> words = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    const std::string where = absl::StrFormat("%s line %d", origin, line_number);
    if (words.size() < 2) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": expected '<token> <viewer|operator> [name]'"));
    }
    Principal principal;
    principal.token = std::string(words[0]);
    if (words[1] == "operator") {
      principal.role = Role::kOperator;
    } else if (words[1] == "viewer") {
      principal.role = Role::kViewer;
    } else {
      return absl::InvalidArgumentError(
          absl::StrCat(where, ": role '", words[1], "' is neither 'viewer' nor 'operator'"));
    }
    principal.name =
        words.size() > 2 ? absl::StrJoin(words.begin() + 2, words.end(), " ") : absl::StrCat("line ", line_number);
    if (!seen.insert(principal.token).second) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": the token appears twice"));
    }
    store.principals_.push_back(std::move(principal));
  }
  if (store.principals_.empty()) return absl::InvalidArgumentError(absl::StrCat(origin, ": holds no token"));
  return store;
}

absl::StatusOr<TokenStore> TokenStore::Load(const std::string& path) {
  struct stat st;
  if (stat(path.c_str(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("tokens file ", path));
  if ((st.st_mode & 077) != 0) {
    return absl::FailedPreconditionError(
        absl::StrFormat("tokens file %s has mode %04o: group and others must have no access (chmod 600 %s)", path,
                        st.st_mode & 07777, path));
  }
  std::ifstream in(path);
  if (!in) return absl::ErrnoToStatus(errno, absl::StrCat("tokens file ", path));
  std::stringstream text;
  text << in.rdbuf();
  return Parse(text.str(), path);
}

absl::Status TokenStore::CreateDefault(const std::string& path) {
  absl::StatusOr<std::string> operator_token = RandomToken();
  if (!operator_token.ok()) return operator_token.status();
  absl::StatusOr<std::string> viewer_token = RandomToken();
  if (!viewer_token.ok()) return viewer_token.status();
  const std::string text =
      absl::StrCat("# vexd bearer tokens: <token> <viewer|operator> [name]. Created by vexd; edit freely.\n",
                   *operator_token, " operator default-operator\n", *viewer_token, " viewer default-viewer\n");
  kvm::ScopedFd fd(open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!fd.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("creating tokens file ", path));
  if (write(fd.get(), text.data(), text.size()) != static_cast<ssize_t>(text.size()) || fsync(fd.get()) != 0) {
    const int error = errno;
    unlink(path.c_str());
    return absl::ErrnoToStatus(error, absl::StrCat("writing tokens file ", path));
  }
  return absl::OkStatus();
}

const Principal* TokenStore::Find(absl::string_view token) const {
  const Principal* found = nullptr;
  // Every token is compared (no early exit), each with CRYPTO_memcmp, so the time taken does
  // not tell a caller how much of a guess was right.
  for (const Principal& principal : principals_) {
    const bool same = principal.token.size() == token.size() &&
                      CRYPTO_memcmp(principal.token.data(), token.data(), token.size()) == 0;
    if (same) found = &principal;
  }
  return found;
}

grpc::Status Authorizer::Authorize(const grpc::ServerContextBase& context, Role needed) const {
  const auto& metadata = context.client_metadata();
  auto it = metadata.find("authorization");
  if (it == metadata.end()) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                        "missing 'authorization: Bearer <token>' metadata (vexctl: --token_file or $VEXSTATE_TOKEN)");
  }
  const absl::string_view value(it->second.data(), it->second.size());
  if (!absl::StartsWith(value, kBearerPrefix)) {
    return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the authorization metadata is not 'Bearer <token>'");
  }
  const Principal* principal = tokens_.Find(absl::StripAsciiWhitespace(value.substr(kBearerPrefix.size())));
  if (principal == nullptr) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "unknown bearer token");
  if (static_cast<int>(principal->role) < static_cast<int>(needed)) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        absl::StrFormat("this RPC needs the %s role; token '%s' is a %s token", RoleName(needed),
                                        principal->name, RoleName(principal->role)));
  }
  return grpc::Status::OK;
}

}  // namespace vexstate::vexd
