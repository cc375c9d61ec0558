// EventService (control.proto): WatchEvents streams the EventHub's events, all VMs or one,
// optionally replaying the history vexd still holds first. Role: viewer.
//
// A stream that falls further behind than the hub's history ends with RESOURCE_EXHAUSTED
// (saying how many events it missed) rather than skipping silently; the client re-subscribes
// with replay. A slow client only ever holds up its own stream. Streams end with UNAVAILABLE
// when vexd shuts down.
//
// Thread-safety: thread-safe; each stream runs on its own gRPC thread.
#ifndef VEXSTATE_SERVER_EVENT_SERVICE_H_
#define VEXSTATE_SERVER_EVENT_SERVICE_H_

#include "server/auth.h"
#include "server/event_hub.h"
#include "vexstate/v1/control.grpc.pb.h"

namespace vexstate::vexd {

class EventServiceImpl final : public v1::EventService::Service {
 public:
  // `auth` and `hub` must outlive the service.
  EventServiceImpl(const Authorizer* auth, const EventHub* hub) : auth_(*auth), hub_(*hub) {}

  grpc::Status WatchEvents(grpc::ServerContext* context, const v1::WatchEventsRequest* request,
                           grpc::ServerWriter<v1::Event>* writer) override;

 private:
  const Authorizer& auth_;
  const EventHub& hub_;
};

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_EVENT_SERVICE_H_
