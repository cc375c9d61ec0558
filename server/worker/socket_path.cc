#include "server/worker/socket_path.h"

#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_format.h"

namespace vexstate::worker {

namespace {

// True when something accepts connections on the socket at `path`.
bool SomeoneListens(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const bool connected = connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0;
  close(fd);
  return connected;
}

std::string Dirname(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  return slash == 0 ? "/" : path.substr(0, slash);
}

}  // namespace

absl::Status PrepareSocketPath(const std::string& path) {
  if (path.empty()) return absl::InvalidArgumentError("socket path is empty");
  if (path.size() >= sizeof(sockaddr_un::sun_path)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("socket path %s is %u bytes long; a Unix socket path holds at most %u", path, path.size(),
                        sizeof(sockaddr_un::sun_path) - 1));
  }
  struct stat dir_info;
  const std::string dir = Dirname(path);
  if (stat(dir.c_str(), &dir_info) != 0 || !S_ISDIR(dir_info.st_mode)) {
    return absl::NotFoundError(absl::StrFormat("socket path %s: directory %s does not exist", path, dir));
  }
  struct stat info;
  if (lstat(path.c_str(), &info) != 0) {
    if (errno == ENOENT) return absl::OkStatus();
    return absl::ErrnoToStatus(errno, absl::StrFormat("socket path %s", path));
  }
  if (!S_ISSOCK(info.st_mode)) {
    return absl::FailedPreconditionError(
        absl::StrFormat("socket path %s exists and is not a socket; refusing to replace it", path));
  }
  if (SomeoneListens(path)) {
    return absl::AlreadyExistsError(absl::StrFormat("socket path %s: another server is listening on it", path));
  }
  if (unlink(path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("removing the stale socket %s", path));
  }
  return absl::OkStatus();
}

void RemoveSocketUnlessServed(const std::string& path) {
  if (!SomeoneListens(path)) unlink(path.c_str());
}

}  // namespace vexstate::worker
