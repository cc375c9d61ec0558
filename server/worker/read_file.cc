#include "server/worker/read_file.h"

#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace vexstate::worker {

absl::StatusOr<std::string> ReadWholeFile(const std::string& path, absl::string_view what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::ErrnoToStatus(errno, absl::StrCat(what, " ", path));
  std::ostringstream contents;
  contents << in.rdbuf();
  // An empty file leaves failbit set by operator<< with nothing to copy; only badbit is an error.
  if (in.bad()) return absl::ErrnoToStatus(errno, absl::StrCat("reading ", what, " ", path));
  return contents.str();
}

}  // namespace vexstate::worker
