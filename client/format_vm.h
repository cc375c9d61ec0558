// Human output of VmService responses: VMs, the VM table, host capabilities,
// guest commands.
//
// Contract: pure functions, safe from any thread. Every returned string ends
// with '\n'.
#ifndef VEXSTATE_CLIENT_FORMAT_VM_H_
#define VEXSTATE_CLIENT_FORMAT_VM_H_

#include <string>

#include "vexstate/v1/control.pb.h"

namespace vexstate::client {

// "key  value" lines: name, state, arch, vCPUs, memory, guest, ... (vm show, vm
// create).
std::string FormatVmInfo(const v1::VmInfo& vm);
// "<name>: <STATE>" plus the error of a CRASHED VM (vm
// start/pause/resume/stop/delete).
std::string FormatVmStateLine(const v1::VmInfo& vm);
// NAME ARCH STATE VCPUS MEMORY GUEST PID REPORTS table, or "no VMs" (vm list).
std::string FormatVmList(const v1::ListVmsResponse& response);
// "key  value" lines; arch-specific capabilities for the host's arch only (host
// caps).
std::string FormatHostCapabilities(const v1::HostCapabilities& caps);
// The guest's report lines, decoded (guest NAME ...).
std::string FormatGuestCommandResponse(
    const v1::GuestCommandResponse& response);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_FORMAT_VM_H_
