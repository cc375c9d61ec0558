#include "server/event_pump.h"

#include <utility>

#include "server/logging.h"

namespace vexstate::vexd {

EventPump::EventPump(std::string vm, std::shared_ptr<WorkerConnection> worker, Sink sink)
    : vm_(std::move(vm)), worker_(std::move(worker)), sink_(std::move(sink)) {
  thread_ = std::thread([this] { Run(); });
}

EventPump::~EventPump() { Stop(); }

void EventPump::Stop() {
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    if (call_ != nullptr) call_->TryCancel();
  }
  if (thread_.joinable()) thread_.join();
}

bool EventPump::stopping() const {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void EventPump::Run() {
  while (!stopping()) {
    grpc::ClientContext context;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return;
      call_ = &context;
    }
    v1::WatchWorkerEventsRequest request;
    request.set_replay(true);
    std::unique_ptr<grpc::ClientReader<v1::Event>> reader = worker_->stub->WatchEvents(&context, request);
    v1::Event event;
    while (reader->Read(&event)) {
      // Sequence 0 would mean a worker that does not number its events: pass everything on.
      if (event.sequence() != 0 && event.sequence() <= last_worker_sequence_) continue;
      last_worker_sequence_ = event.sequence();
      event.set_vm(vm_);
      sink_(std::move(event));
    }
    const grpc::Status status = reader->Finish();
    {
      absl::MutexLock lock(&mu_);
      call_ = nullptr;
      if (stopping_) return;
    }
    Log("VM %s: worker event stream ended (%d: %s); re-subscribing", vm_, status.error_code(), status.error_message());
    // Wait a little before re-subscribing, but wake at once for Stop().
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(500));
  }
}

}  // namespace vexstate::vexd
