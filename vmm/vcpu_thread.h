// VcpuThread: one thread per vCPU running the KVM_RUN loop, with pause and resume.
//
// Pause protocol (api.rst "immediate_exit", and the EINTR rule of KVM_RUN):
//   1. the controller sets pause_requested and kvm_run.immediate_exit = 1, then sends the
//      thread a signal (no SA_RESTART), so KVM_RUN returns EINTR whether the vCPU was inside
//      the guest or just about to enter;
//   2. before parking, the thread calls KVM_RUN once more with immediate_exit = 1: KVM then
//      completes a pending port-I/O/MMIO exit (writes an IN's data into RAX, advances RIP/PC)
//      and returns EINTR without entering the guest. So a paused vCPU's registers are final,
//      which is what a capture needs (SPEC §3: "complete a pending MMIO exit before capture");
//   3. the thread parks; WaitPaused() returns when it has.
// Every exit that is not port I/O or MMIO stops the vCPU for good with a precise status
// (shutdown, entry failure, internal error, system event, HLT without in-kernel irqchip): a
// guest that breaks never leaves its vCPU spinning or the caller waiting forever.
//
// Thread-safety: all public methods may be called from any thread except the vCPU's own.
#ifndef VEXSTATE_VMM_VCPU_THREAD_H_
#define VEXSTATE_VMM_VCPU_THREAD_H_

#include <atomic>
#include <cstdint>
#include <thread>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "vmm/exit_handler.h"
#include "vmm/kvm/vcpu_fd.h"

namespace vexstate {

enum class VcpuRunState { kPaused, kRunning, kStopped };

const char* VcpuRunStateName(VcpuRunState state);

class VcpuThread {
 public:
  // The thread starts parked (kPaused); Resume() lets it run. `vcpu` and `handler` must
  // outlive this object.
  VcpuThread(kvm::VcpuFd* vcpu, ExitHandler* handler);
  ~VcpuThread();  // Stop() and join.

  void RequestPause();
  // Waits until the vCPU is parked (or stopped). DEADLINE_EXCEEDED if it is still in
  // KVM_RUN after `timeout`.
  absl::Status WaitPaused(absl::Duration timeout);
  void Resume();
  // Ends the thread; the vCPU will not run again.
  void Stop();

  VcpuRunState state() const;
  // Why the vCPU stopped (OK if it has not, or if Stop() was called).
  absl::Status stop_reason() const;
  uint64_t exit_count() const { return exit_count_.load(); }

 private:
  void Loop();
  // Handles one userspace exit; a non-OK status stops the vCPU for good.
  absl::Status HandleExit();
  void Kick();
  void StopWith(absl::Status reason);

  kvm::VcpuFd* const vcpu_;
  ExitHandler* const handler_;
  mutable absl::Mutex mu_;
  bool pause_requested_ ABSL_GUARDED_BY(mu_) = true;
  bool stop_requested_ ABSL_GUARDED_BY(mu_) = false;
  bool has_run_ ABSL_GUARDED_BY(mu_) = false;
  VcpuRunState state_ ABSL_GUARDED_BY(mu_) = VcpuRunState::kPaused;
  absl::Status stop_reason_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> exit_count_{0};
  std::thread thread_;
};

}  // namespace vexstate

#endif  // VEXSTATE_VMM_VCPU_THREAD_H_
