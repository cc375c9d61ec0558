// Reading a whole local file (a VmConfig, a guest image) for the worker's startup.
//
// Contract: blocking I/O on the calling thread. Errors name the file, what it was for, and
// the errno meaning with its canonical code (NOT_FOUND, PERMISSION_DENIED, ...).
#ifndef VEXSTATE_SERVER_WORKER_READ_FILE_H_
#define VEXSTATE_SERVER_WORKER_READ_FILE_H_

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace vexstate::worker {

// `what` says what the file is for ("config file", "guest image").
absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view what);

}  // namespace vexstate::worker

#endif  // VEXSTATE_SERVER_WORKER_READ_FILE_H_
