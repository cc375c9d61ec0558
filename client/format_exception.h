// Human output of ExceptionService responses: what is pending (decoded by
// DescribeExceptionState, vmm/describe.h: exception names, MCi_STATUS flags,
// ESR/DISR fields) and, for `vexctl state`, every field of a vCPU's exception
// state with its raw value and decoding.
//
// The pending lines are decoded here from the typed vcpus, not taken from the
// server's `summary` strings, so the output is the same for every vexd version
// that sends the state.
//
// Contract: pure functions, safe from any thread. Every returned string ends
// with '\n'.
#ifndef VEXSTATE_CLIENT_FORMAT_EXCEPTION_H_
#define VEXSTATE_CLIENT_FORMAT_EXCEPTION_H_

#include <string>

#include "absl/strings/string_view.h"
#include "google/protobuf/repeated_field.h"
#include "vexstate/v1/control.pb.h"

namespace vexstate::client {

// One DescribeExceptionState line per pending item of every vCPU ("vCPU 0: NMI
// pending"), each preceded by `indent`.
std::string FormatPendingLines(
    const google::protobuf::RepeatedPtrField<v1::VcpuExceptionState>& vcpus,
    absl::string_view indent);

// The vCPU's state after the injection, then "note: ..." when vexd left one
// (inject ...).
std::string FormatInjectResponse(const v1::InjectResponse& response);
// Per VM: "<vm> (<STATE>, read <time>)" and its pending lines; "no VMs"
// (pending).
std::string FormatQueryPending(const v1::QueryPendingResponse& response);
// Per vCPU: a "vCPU <n> (<arch>)" header, the pending lines, then every field
// (state).
std::string FormatExceptionState(const v1::GetExceptionStateResponse& response);
std::string FormatVcpuExceptionState(const v1::VcpuExceptionState& state);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_FORMAT_EXCEPTION_H_
