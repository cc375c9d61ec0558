// ExitHandler: what a VM's devices see of its vCPUs' userspace exits.
//
// Called on the vCPU's own thread, while that vCPU is out of KVM_RUN; an implementation must
// be thread-safe across vCPUs and should return quickly (the vCPU waits for it).
#ifndef VEXSTATE_VMM_EXIT_HANDLER_H_
#define VEXSTATE_VMM_EXIT_HANDLER_H_

#include <cstdint>

#include "absl/status/status.h"

namespace vexstate {

class ExitHandler {
 public:
  virtual ~ExitHandler() = default;

  // KVM_EXIT_IO, once per element of a string instruction. For an IN, fill `data`.
  virtual void OnPortIo(uint32_t vcpu, uint16_t port, bool is_write, uint8_t* data, uint32_t size) = 0;
  // KVM_EXIT_MMIO. For a read, fill `data`.
  virtual void OnMmio(uint32_t vcpu, uint64_t gpa, bool is_write, uint8_t* data, uint32_t len) = 0;
  // The vCPU has stopped for good: the reason says why (guest shutdown, entry failure,
  // internal error, a system event, or OK when the VMM stopped it).
  virtual void OnVcpuStopped(uint32_t vcpu, const absl::Status& reason) {}
};

}  // namespace vexstate

#endif  // VEXSTATE_VMM_EXIT_HANDLER_H_
