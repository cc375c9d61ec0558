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
  // One log line per outage, not one per retry (a stopping worker ends its stream a moment
  // before it exits and the supervisor stops the pump).
  bool outage_logged = false;
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
      outage_logged = false;
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
    if (!outage_logged) {
      Log("VM %s: worker event stream ended (%d: %s); re-subscribing until it is back or gone", vm_,
          status.error_code(), status.error_message());
      outage_logged = true;
    }
    // Wait a little before re-subscribing, but wake at once for Stop().
    absl::MutexLock lock(&mu_);
    mu_.AwaitWithTimeout(absl::Condition(&stopping_), absl::Milliseconds(500));
  }
}

}  // namespace vexstate::vexd
