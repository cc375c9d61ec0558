// StateDir: vexd's directory on disk, and the lock that makes one vexd its only owner.
//
// Layout (every file mode 0600, directories 0700):
//   <root>/vexd.lock          flock(LOCK_EX) held by the running vexd; holds its pid
//   <root>/vexd.sock          the default Unix listening socket
//   <root>/tokens             the default tokens file (auth.h)
//   <root>/vms/<name>.record  the journal: one VmRecord per VM (journal.h)
//   <root>/vms/<name>.config  the VmConfig handed to the VM's worker (binary proto)
//   <root>/vms/<name>.sock    the worker's VmWorker socket
//   <root>/vms/<name>.log     the worker's stdout and stderr
//   <root>/migrations/<id>.outcome  how an incoming migration was settled (incoming_outcomes.h)
//
// The lock is an flock on an fd opened close-on-exec, so workers never inherit it: a vexd
// restarted while its workers live on gets the lock back. It is released when the StateDir
// is destroyed (or the process dies).
//
// Thread-safety: const methods are thread-safe.
#ifndef VEXSTATE_SERVER_STATE_DIR_H_
#define VEXSTATE_SERVER_STATE_DIR_H_

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "vmm/kvm/fd.h"

namespace vexstate::vexd {

// Unix socket paths must fit sockaddr_un.sun_path (107 bytes and a NUL).
inline constexpr size_t kMaxUnixSocketPath = 107;
// VM names name files and sockets in the state dir.
inline constexpr size_t kMaxVmNameLength = 63;

class StateDir {
 public:
  // Creates `root` and `root/vms` if needed (0700) and takes the lock. FAILED_PRECONDITION
  // when another vexd holds it (naming its pid), or when `root` is not a directory owned by
  // this user. INVALID_ARGUMENT when `root` is relative, or so long that the socket of a VM
  // with a name of kMaxVmNameLength characters would not fit a Unix socket path.
  static absl::StatusOr<std::unique_ptr<StateDir>> Open(const std::string& root);

  const std::string& root() const { return root_; }
  std::string vms_dir() const { return root_ + "/vms"; }
  std::string migrations_dir() const { return root_ + "/migrations"; }
  std::string default_socket() const { return root_ + "/vexd.sock"; }
  std::string default_tokens() const { return root_ + "/tokens"; }
  // <root>/vms/<vm>.<ext> ("record", "config", "sock", "log").
  std::string VmFile(absl::string_view vm, absl::string_view ext) const;

 private:
  StateDir(std::string root, kvm::ScopedFd lock) : root_(std::move(root)), lock_(std::move(lock)) {}
  const std::string root_;
  kvm::ScopedFd lock_;
};

// The default --state_dir: /var/lib/vexstate for root; $XDG_RUNTIME_DIR/vexstate for other
// users. INVALID_ARGUMENT (asking for --state_dir) when neither applies.
absl::StatusOr<std::string> DefaultStateDir();

// mkdir -p with `mode` for the directories it creates; an existing path must be a directory.
absl::Status MakeDirs(const std::string& path, int mode);

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_STATE_DIR_H_
