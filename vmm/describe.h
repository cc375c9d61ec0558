// Human summaries of a vCPU's exception state: one line per pending or in-flight item, with
// the raw values decoded (MCi_STATUS flags and MCA error code, exception names, ESR/DISR
// fields). Shown by the worker (VmPending.summary), vexd and vexctl.
//
// Contract: a pure function of its argument; no KVM, no I/O; safe from any thread. Every value
// is accepted (reserved bits are shown, never rejected). Lines start with "vCPU <n>: ", e.g.
//   vCPU 0: #MC machine check pending; MCG_STATUS RIPV|MCIP; bank 3: VAL|UC|EN|MISCV|ADDRV
//           mca=0x009f (memory controller error MMM=RD CCCC=unspecified) addr=0x12345000 misc=0x86
//   vCPU 0: #PF pending, error code 0x2, CR2 payload 0xdead000
//   vCPU 0: NMI pending (NMIs masked: guest in its NMI handler)
//   vCPU 0: SError pending, ESR 0xbe001234: EC=0x2f (SError interrupt) IL=1 ISS=0x001234 ...
//   vCPU 0: DISR_EL1 0x80000c11: A=1 IDS=0 AET=0b011 (UER: recoverable state) ...
//   vCPU 0: nothing pending
// The wording is for people; programs should read the VcpuExceptionState fields.
#ifndef VEXSTATE_VMM_DESCRIBE_H_
#define VEXSTATE_VMM_DESCRIBE_H_

#include <string>
#include <vector>

#include "vexstate/v1/exception_state.pb.h"

namespace vexstate {

// At least one line: "vCPU <n>: nothing pending" when there is nothing to show (also when the
// state carries no arch at all).
std::vector<std::string> DescribeExceptionState(const v1::VcpuExceptionState& state);

}  // namespace vexstate

#endif  // VEXSTATE_VMM_DESCRIBE_H_
