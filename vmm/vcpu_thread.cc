#include "vmm/vcpu_thread.h"

#include <pthread.h>
#include <signal.h>

#include <mutex>

#include "absl/strings/str_format.h"

namespace vexstate {

namespace {

// The kick signal. Its handler does nothing: its only job is to make KVM_RUN return EINTR.
int KickSignal() { return SIGRTMIN + 3; }

void InstallKickHandlerOnce() {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction action = {};
    action.sa_handler = [](int) {};
    sigemptyset(&action.sa_mask);
    action.sa_flags = 0;  // no SA_RESTART: KVM_RUN must come back with EINTR
    sigaction(KickSignal(), &action, nullptr);
  });
}

const char* ExitReasonName(uint32_t reason) {
  switch (reason) {
    case KVM_EXIT_UNKNOWN: return "KVM_EXIT_UNKNOWN";
    case KVM_EXIT_EXCEPTION: return "KVM_EXIT_EXCEPTION";
    case KVM_EXIT_HLT: return "KVM_EXIT_HLT";
    case KVM_EXIT_SHUTDOWN: return "KVM_EXIT_SHUTDOWN";
    case KVM_EXIT_FAIL_ENTRY: return "KVM_EXIT_FAIL_ENTRY";
    case KVM_EXIT_INTERNAL_ERROR: return "KVM_EXIT_INTERNAL_ERROR";
    case KVM_EXIT_SYSTEM_EVENT: return "KVM_EXIT_SYSTEM_EVENT";
    case KVM_EXIT_DEBUG: return "KVM_EXIT_DEBUG";
    default: return "exit";
  }
}

}  // namespace

const char* VcpuRunStateName(VcpuRunState state) {
  switch (state) {
    case VcpuRunState::kPaused: return "paused";
    case VcpuRunState::kRunning: return "running";
    case VcpuRunState::kStopped: return "stopped";
  }
  return "?";
}

VcpuThread::VcpuThread(kvm::VcpuFd* vcpu, ExitHandler* handler) : vcpu_(vcpu), handler_(handler) {
  InstallKickHandlerOnce();
  thread_ = std::thread([this] { Loop(); });
}

VcpuThread::~VcpuThread() {
  Stop();
  if (thread_.joinable()) thread_.join();
}

void VcpuThread::Kick() {
  // immediate_exit covers the window where the thread is between its pause check and
  // entering KVM_RUN; the signal covers a vCPU already inside the guest.
  vcpu_->run()->immediate_exit = 1;
  if (thread_.joinable()) pthread_kill(thread_.native_handle(), KickSignal());
}

void VcpuThread::RequestPause() {
  absl::MutexLock lock(&mu_);
  if (state_ == VcpuRunState::kStopped) return;
  pause_requested_ = true;
  Kick();
}

absl::Status VcpuThread::WaitPaused(absl::Duration timeout) {
  absl::MutexLock lock(&mu_);
  auto parked = [this]() ABSL_SHARED_LOCKS_REQUIRED(mu_) { return state_ != VcpuRunState::kRunning; };
  absl::Time deadline = absl::Now() + timeout;
  while (!parked()) {
    if (mu_.AwaitWithDeadline(absl::Condition(&parked), deadline)) break;
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(absl::StrFormat(
          "vCPU %u did not leave KVM_RUN within %s of a pause request", vcpu_->index(), absl::FormatDuration(timeout)));
    }
    Kick();  // a lost signal must not hang us: kick again
  }
  return absl::OkStatus();
}

void VcpuThread::Resume() {
  absl::MutexLock lock(&mu_);
  pause_requested_ = false;
}

void VcpuThread::Stop() {
  absl::MutexLock lock(&mu_);
  stop_requested_ = true;
  if (thread_.joinable() && state_ == VcpuRunState::kRunning) Kick();
}

VcpuRunState VcpuThread::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

absl::Status VcpuThread::stop_reason() const {
  absl::MutexLock lock(&mu_);
  return stop_reason_;
}

void VcpuThread::StopWith(absl::Status reason) {
  {
    absl::MutexLock lock(&mu_);
    state_ = VcpuRunState::kStopped;
    stop_reason_ = reason;
  }
  handler_->OnVcpuStopped(vcpu_->index(), reason);
}

void VcpuThread::Loop() {
  kvm_run* run = vcpu_->run();
  while (true) {
    absl::Status broken;
    bool stop = false;
    {
      absl::MutexLock lock(&mu_);
      if (pause_requested_ && !stop_requested_) {
        if (has_run_) {
          // Step 2 of the pause protocol: complete a pending I/O exit without entering the guest.
          run->immediate_exit = 1;
          absl::Status completed = vcpu_->Run();
          // KVM_RUN with immediate_exit=1 must return EINTR; anything else is a broken vCPU.
          if (completed.ok()) {
            broken = absl::InternalError(absl::StrFormat(
                "vCPU %u: KVM_RUN with immediate_exit=1 entered the guest (exit %u)", vcpu_->index(), run->exit_reason));
          } else if (!absl::IsUnavailable(completed)) {
            broken = completed;
          }
        }
        if (broken.ok()) {
          state_ = VcpuRunState::kPaused;
          mu_.Await(absl::Condition(
              +[](VcpuThread* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(t->mu_) {
                return !t->pause_requested_ || t->stop_requested_;
              },
              this));
        }
      }
      if (broken.ok()) {
        if (stop_requested_) {
          state_ = VcpuRunState::kStopped;
          stop = true;
        } else {
          state_ = VcpuRunState::kRunning;
          has_run_ = true;
          run->immediate_exit = 0;
        }
      }
    }
    if (!broken.ok()) {
      StopWith(broken);
      return;
    }
    if (stop) break;
    absl::Status status = vcpu_->Run();
    if (absl::IsUnavailable(status)) continue;  // EINTR/EAGAIN: a kick; re-check the flags
    if (!status.ok()) {
      StopWith(status);
      return;
    }
    exit_count_.fetch_add(1, std::memory_order_relaxed);
    absl::Status handled = HandleExit();
    if (!handled.ok()) {
      StopWith(handled);
      return;
    }
  }
  handler_->OnVcpuStopped(vcpu_->index(), absl::OkStatus());
}

absl::Status VcpuThread::HandleExit() {
  kvm_run* run = vcpu_->run();
  const uint32_t index = vcpu_->index();
  switch (run->exit_reason) {
    case KVM_EXIT_IO: {
      uint8_t* data = reinterpret_cast<uint8_t*>(run) + run->io.data_offset;
      for (uint32_t i = 0; i < run->io.count; ++i) {
        handler_->OnPortIo(index, run->io.port, run->io.direction == KVM_EXIT_IO_OUT, data + i * run->io.size,
                           run->io.size);
      }
      return absl::OkStatus();
    }
    case KVM_EXIT_MMIO:
      handler_->OnMmio(index, run->mmio.phys_addr, run->mmio.is_write, run->mmio.data, run->mmio.len);
      return absl::OkStatus();
    case KVM_EXIT_INTR:
      return absl::OkStatus();
    case KVM_EXIT_HLT:
      return absl::FailedPreconditionError(
          absl::StrFormat("vCPU %u: guest executed HLT with no in-kernel irqchip to wake it", index));
    case KVM_EXIT_SHUTDOWN:
      return absl::AbortedError(absl::StrFormat(
          "vCPU %u: guest shutdown (KVM_EXIT_SHUTDOWN: triple fault, or a machine check while "
          "MCG_STATUS.MCIP was set or CR4.MCE was clear)",
          index));
    case KVM_EXIT_FAIL_ENTRY:
      return absl::InternalError(absl::StrFormat("vCPU %u: KVM_EXIT_FAIL_ENTRY, hardware_entry_failure_reason=0x%x",
                                                 index, run->fail_entry.hardware_entry_failure_reason));
    case KVM_EXIT_INTERNAL_ERROR: {
      std::string data;
      for (uint32_t i = 0; i < run->internal.ndata && i < 16; ++i) {
        absl::StrAppendFormat(&data, " 0x%x", run->internal.data[i]);
      }
      return absl::InternalError(absl::StrFormat(
          "vCPU %u: KVM_EXIT_INTERNAL_ERROR suberror=%u%s, data:%s", index, run->internal.suberror,
          run->internal.suberror == KVM_INTERNAL_ERROR_EMULATION ? " (instruction emulation failed)" : "", data));
    }
    case KVM_EXIT_SYSTEM_EVENT:
      return absl::AbortedError(
          absl::StrFormat("vCPU %u: KVM_EXIT_SYSTEM_EVENT type=%u (guest requested %s)", index, run->system_event.type,
                          run->system_event.type == KVM_SYSTEM_EVENT_SHUTDOWN ? "power off"
                          : run->system_event.type == KVM_SYSTEM_EVENT_RESET  ? "reset"
                                                                              : "a system event"));
    default:
      return absl::UnimplementedError(
          absl::StrFormat("vCPU %u: unhandled exit %s (%u)", index, ExitReasonName(run->exit_reason), run->exit_reason));
  }
}

}  // namespace vexstate
