// EventPump: follows one worker's WatchEvents stream (with replay) on its own thread and
// hands every event to a sink (vexd: note lifecycle changes, republish into the EventHub).
//
// A broken stream (worker restarting its server, a transient error) is re-subscribed with
// replay after a short pause until Stop(); events already delivered are recognised by the
// worker's sequence numbers (1, 2, 3...) and skipped, so the sink sees each worker event
// exactly once. A worker that has died is noticed by the supervisor's ExitWatcher, which
// stops the pump.
//
// Thread-safety: Stop() may be called from any thread except the sink's (it joins the pump
// thread). The sink runs on the pump thread.
#ifndef VEXSTATE_SERVER_EVENT_PUMP_H_
#define VEXSTATE_SERVER_EVENT_PUMP_H_

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/synchronization/mutex.h"
#include "grpcpp/client_context.h"
#include "server/worker_connection.h"
#include "vexstate/v1/control.pb.h"

namespace vexstate::vexd {

class EventPump {
 public:
  using Sink = std::function<void(v1::Event)>;

  // Starts the thread.
  EventPump(std::string vm, std::shared_ptr<WorkerConnection> worker, Sink sink);
  // Stop().
  ~EventPump();
  EventPump(const EventPump&) = delete;
  EventPump& operator=(const EventPump&) = delete;

  // Cancels the stream and joins the thread. Idempotent.
  void Stop();

 private:
  void Run();
  bool stopping() const;

  const std::string vm_;
  const std::shared_ptr<WorkerConnection> worker_;
  const Sink sink_;
  mutable absl::Mutex mu_;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* call_ ABSL_GUARDED_BY(mu_) = nullptr;  // the stream in flight
  uint64_t last_worker_sequence_ = 0;                         // pump thread only
  std::thread thread_;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_EVENT_PUMP_H_
