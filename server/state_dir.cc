#include "server/state_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/strip.h"

namespace vexstate::vexd {

absl::Status MakeDirs(const std::string& path, int mode) {
  if (path.empty()) return absl::InvalidArgumentError("empty directory path");
  struct stat st;
  if (stat(path.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode))
      return absl::FailedPreconditionError(absl::StrCat(path, " exists and is not a directory"));
    return absl::OkStatus();
  }
  const size_t slash = path.find_last_of('/');
  if (slash != std::string::npos && slash > 0) {
    absl::Status parent = MakeDirs(path.substr(0, slash), mode);
    if (!parent.ok()) return parent;
  }
  if (mkdir(path.c_str(), mode) != 0 && errno != EEXIST)
    return absl::ErrnoToStatus(errno, absl::StrCat("mkdir ", path));
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<StateDir>> StateDir::Open(const std::string& root_in) {
  const std::string root = std::string(absl::StripSuffix(root_in, "/"));
  if (root.empty() || root[0] != '/') {
    return absl::InvalidArgumentError(absl::StrCat("state dir '", root_in, "' must be an absolute path"));
  }
  const size_t longest_socket =
      root.size() + std::string("/vms/").size() + kMaxVmNameLength + std::string(".sock").size();
  if (longest_socket > kMaxUnixSocketPath) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "state dir %s is too long: a VM's socket path there may take %d bytes, a Unix socket path at most %d", root,
        longest_socket, kMaxUnixSocketPath));
  }
  absl::Status made = MakeDirs(root, 0700);
  if (!made.ok()) return made;
  struct stat st;
  if (stat(root.c_str(), &st) != 0) return absl::ErrnoToStatus(errno, absl::StrCat("stat ", root));
  if (st.st_uid != geteuid()) {
    return absl::FailedPreconditionError(
        absl::StrFormat("state dir %s belongs to uid %d, not to this user (uid %d)", root, st.st_uid, geteuid()));
  }
  // Only vexd's user may reach the sockets and records inside (SPEC §4.6).
  if ((st.st_mode & 077) != 0 && chmod(root.c_str(), 0700) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("chmod 0700 ", root));
  }
  made = MakeDirs(root + "/vms", 0700);
  if (!made.ok()) return made;

  const std::string lock_path = root + "/vexd.lock";
  kvm::ScopedFd lock(open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock.valid()) return absl::ErrnoToStatus(errno, absl::StrCat("open ", lock_path));
  if (flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno != EWOULDBLOCK) return absl::ErrnoToStatus(errno, absl::StrCat("flock ", lock_path));
    char holder[32] = {0};
    const ssize_t n = pread(lock.get(), holder, sizeof(holder) - 1, 0);
    std::string pid = n > 0 ? std::string(absl::StripTrailingAsciiWhitespace(std::string(holder, n))) : "unknown";
    return absl::FailedPreconditionError(
        absl::StrFormat("another vexd (pid %s) already runs on state dir %s (it holds %s)", pid, root, lock_path));
  }
  const std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(lock.get(), 0) != 0 ||
      pwrite(lock.get(), pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    return absl::ErrnoToStatus(errno, absl::StrCat("writing pid to ", lock_path));
  }
  return std::unique_ptr<StateDir>(new StateDir(root, std::move(lock)));
}

std::string StateDir::VmFile(absl::string_view vm, absl::string_view ext) const {
  return absl::StrCat(root_, "/vms/", vm, ".", ext);
}

absl::StatusOr<std::string> DefaultStateDir() {
  if (geteuid() == 0) return std::string("/var/lib/vexstate");
  const char* runtime = std::getenv("XDG_RUNTIME_DIR");
  if (runtime != nullptr && runtime[0] == '/') return absl::StrCat(runtime, "/vexstate");
  return absl::InvalidArgumentError(
      "no default state dir for a non-root user without $XDG_RUNTIME_DIR: pass --state_dir");
}

}  // namespace vexstate::vexd
