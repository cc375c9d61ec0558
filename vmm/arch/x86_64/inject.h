// Injecting exceptions, NMIs and machine checks into a paused x86 vCPU, with validation.
//
// Contract: every function validates the request against the architecture and the vCPU's
// current state (read with GET ioctls only) before its first state-changing ioctl. A refused
// request leaves the vCPU exactly as it was, and the status says precisely why:
//   INVALID_ARGUMENT    the request itself is wrong (vector > 31, NMI vector, missing error
//                       code, bank out of range, MCi_STATUS.VAL clear, ...)
//   FAILED_PRECONDITION the request is fine but the vCPU cannot take it now (an exception is
//                       already pending, the guest is still in its #MC handler, CR4.MCE clear)
// After a successful injection the state is read back to confirm KVM holds it as pending.
#ifndef VEXSTATE_VMM_ARCH_X86_64_INJECT_H_
#define VEXSTATE_VMM_ARCH_X86_64_INJECT_H_

#include "absl/status/status.h"
#include "vmm/injection.h"
#include "vmm/kvm/vcpu_fd.h"

namespace vexstate::x86 {

// Pure checks of a request (no KVM), shared by the injectors and the control plane.
absl::Status ValidateExceptionRequest(const ExceptionRequest& request);
absl::Status ValidateMachineCheckRequest(const MachineCheckRequest& request, uint32_t bank_count);

absl::Status InjectException(kvm::VcpuFd& vcpu, const ExceptionRequest& request);
absl::Status InjectNmi(kvm::VcpuFd& vcpu);
absl::Status InjectMachineCheck(kvm::VcpuFd& vcpu, const MachineCheckRequest& request);

}  // namespace vexstate::x86

#endif  // VEXSTATE_VMM_ARCH_X86_64_INJECT_H_
