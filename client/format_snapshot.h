// Human output of SnapshotService responses.
//
// Contract: pure functions, safe from any thread. Every returned string ends
// with '\n'.
#ifndef VEXSTATE_CLIENT_FORMAT_SNAPSHOT_H_
#define VEXSTATE_CLIENT_FORMAT_SNAPSHOT_H_

#include <string>

#include "vexstate/v1/control.pb.h"

namespace vexstate::client {

// path, size, memory stored, sha256 (snapshot save).
std::string FormatSaveSnapshot(const v1::SaveSnapshotResponse& response);
// The new VM's state line and each degradation (snapshot restore).
std::string FormatRestoreSnapshot(const v1::RestoreSnapshotResponse& response);
// The file's header fields, the VM config, the source host, then the pending
// lines of every vCPU (snapshot inspect).
std::string FormatInspectSnapshot(const v1::InspectSnapshotResponse& response);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_FORMAT_SNAPSHOT_H_
