// Reading a small local file (token files, PEM certificates and keys) whole.
//
// Contract: blocking file I/O on the calling thread; no state. Errors carry the
// path and the errno meaning (NOT_FOUND, PERMISSION_DENIED, ...).
#ifndef VEXSTATE_CLIENT_FILE_CONTENTS_H_
#define VEXSTATE_CLIENT_FILE_CONTENTS_H_

#include <string>

#include "absl/status/statusor.h"

namespace vexstate::client {

absl::StatusOr<std::string> ReadFileContents(const std::string& path);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_FILE_CONTENTS_H_
