// Human output of vexd's events and of the witness guest's report lines.
//
// Contract: pure functions, safe from any thread.
#ifndef VEXSTATE_CLIENT_FORMAT_EVENT_H_
#define VEXSTATE_CLIENT_FORMAT_EVENT_H_

#include <string>

#include "vexstate/v1/control.pb.h"

namespace vexstate::client {

// One line, no newline: "<time>  <vm>  <kind>  <what>", kind being lifecycle,
// injection or guest, e.g. (shown on two lines here)
//   2026-11-23T16:22:00.123Z  vm1  guest      vCPU 0: VEX EXC cpu=0 seq=1
//       vec=0x12 ...  [vec: #MC machine check]
std::string FormatEvent(const v1::Event& event);

// "vCPU <n>: <the guest's line>", followed by the decoded values of the fields
// the witness ABI defines (guests/common/witness_abi.h) in brackets: vec of EXC
// (exception name), esr (ESR_EL1 fields), disr (DISR_EL1), status (MCi_STATUS
// flags), mcg_status.
std::string FormatGuestReport(const v1::GuestReportEvent& report);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_FORMAT_EVENT_H_
