// A Unix socket path over a server's life: the checks before it binds (so a failure names the
// path and the reason instead of a bind error), and its removal at exit.
//
// Contract: touches only `path` (may unlink a stale socket there). Not thread-safe with
// another process binding the same path at the same time; vexd gives each worker its own.
#ifndef VEXSTATE_SERVER_WORKER_SOCKET_PATH_H_
#define VEXSTATE_SERVER_WORKER_SOCKET_PATH_H_

#include <string>

#include "absl/status/status.h"

namespace vexstate::worker {

// OK when `path` can be bound: it does not exist, or it is a socket nobody listens on (a
// leftover of a dead worker; it is removed). INVALID_ARGUMENT for an empty or too long path
// (sockaddr_un holds 107 bytes), NOT_FOUND when its directory does not exist, ALREADY_EXISTS
// when a server is listening on it, FAILED_PRECONDITION when it is something else than a
// socket (never removed).
absl::Status PrepareSocketPath(const std::string& path);

// Removes the socket at `path` at a server's exit, once it has stopped listening, unless
// another server listens there: a successor that already replaced it keeps its own. (Not by
// inode: a successor's new socket may reuse the old one's inode number.)
void RemoveSocketUnlessServed(const std::string& path);

}  // namespace vexstate::worker

#endif  // VEXSTATE_SERVER_WORKER_SOCKET_PATH_H_
