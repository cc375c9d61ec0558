// Replacing a file so that a crash leaves either the old or the new contents, never a mix:
// write "<path>.tmp", fsync, rename over <path>, fsync the directory.
//
// Thread-safety: concurrent writers of the same path must be serialised by the caller
// (they share the ".tmp" name); different paths are independent.
#ifndef VEXSTATE_SERVER_ATOMIC_FILE_H_
#define VEXSTATE_SERVER_ATOMIC_FILE_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace vexstate::vexd {

// The file gets mode 0600. Errors name the file and the step that failed.
absl::Status WriteFileAtomically(const std::string& path, absl::string_view bytes);

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_ATOMIC_FILE_H_
