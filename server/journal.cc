#include "server/journal.h"

#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "server/atomic_file.h"

namespace vexstate::vexd {
namespace {

constexpr absl::string_view kRecordSuffix = ".record";
constexpr absl::string_view kTmpSuffix = ".record.tmp";

}  // namespace

absl::Status Journal::Write(const v1::VmRecord& record) const {
  if (record.name().empty()) return absl::InvalidArgumentError("journal: record without a name");
  std::string bytes;
  if (!record.SerializeToString(&bytes)) {
    return absl::InternalError(absl::StrCat("journal: cannot serialise the record of ", record.name()));
  }
  absl::Status written = WriteFileAtomically(PathOf(record.name()), bytes);
  if (!written.ok()) return absl::Status(written.code(), absl::StrCat("journal: ", written.message()));
  return absl::OkStatus();
}

absl::StatusOr<Journal::Loaded> Journal::LoadAll() const {
  DIR* dir = opendir(dir_.c_str());
  if (dir == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat("journal: opendir ", dir_));
  std::vector<std::string> names;
  std::vector<std::string> stale;
  while (dirent* entry = readdir(dir)) {
    const std::string file = entry->d_name;
    if (absl::EndsWith(file, kTmpSuffix)) {
      stale.push_back(file);
    } else if (absl::EndsWith(file, kRecordSuffix)) {
      names.push_back(std::string(absl::StripSuffix(file, kRecordSuffix)));
    }
  }
  closedir(dir);
  // A .tmp is a write that never got renamed: the record beside it is the valid one.
  for (const std::string& file : stale) unlink((dir_ + "/" + file).c_str());

  std::sort(names.begin(), names.end());
  Loaded loaded;
  for (const std::string& name : names) {
    const std::string path = PathOf(name);
    std::ifstream in(path, std::ios::binary);
    std::stringstream bytes;
    bytes << in.rdbuf();
    v1::VmRecord record;
    if (!in || !record.ParseFromString(bytes.str())) {
      loaded.problems.push_back(absl::StrCat(path, ": not a readable VmRecord; left in place"));
      continue;
    }
    if (record.name() != name) {
      loaded.problems.push_back(
          absl::StrCat(path, ": holds the record of '", record.name(), "', not of '", name, "'; left in place"));
      continue;
    }
    loaded.records.push_back(std::move(record));
  }
  return loaded;
}

absl::Status Journal::Remove(const std::string& name) const {
  const std::string path = PathOf(name);
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return absl::ErrnoToStatus(errno, absl::StrCat("journal: unlink ", path));
  }
  return absl::OkStatus();
}

}  // namespace vexstate::vexd
