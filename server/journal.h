// Journal: vexd's durable memory of its VMs, one VmRecord (worker.proto) per VM in
// <dir>/<name>.record, so a restarted vexd knows which workers to re-attach to and which
// VMs are gone.
//
// Write() is atomic: the record goes to "<name>.record.tmp", is fsynced, renamed over the old
// record, and the directory is fsynced, so after a crash a record is either the old one or
// the new one, never a mix.
//
// Thread-safety: the Journal holds no state beyond its directory; callers serialise writes
// of the same VM's record (vexd does: under that VM's lock). Different VMs may be written
// concurrently.
#ifndef VEXSTATE_SERVER_JOURNAL_H_
#define VEXSTATE_SERVER_JOURNAL_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vexstate/v1/worker.pb.h"

namespace vexstate::vexd {

class Journal {
 public:
  explicit Journal(std::string dir) : dir_(std::move(dir)) {}

  // Replaces the record of `record.name()`. Errors name the file and the failing step.
  absl::Status Write(const v1::VmRecord& record) const;

  struct Loaded {
    std::vector<v1::VmRecord> records;  // sorted by name
    // One line per record file that could not be used (unreadable, not a VmRecord, or its
    // name field does not match the file name); those files are left where they are.
    std::vector<std::string> problems;
  };
  // Reads every <name>.record in the directory (stale ".tmp" files are removed).
  absl::StatusOr<Loaded> LoadAll() const;

  // Removes the record of `name` (OK if there is none).
  absl::Status Remove(const std::string& name) const;

  std::string PathOf(const std::string& name) const { return dir_ + "/" + name + ".record"; }

 private:
  const std::string dir_;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_JOURNAL_H_
