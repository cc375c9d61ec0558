#include "server/event_service.h"

#include "absl/strings/str_format.h"
#include "server/service_util.h"

namespace vexstate::vexd {
namespace {

// How often a waiting stream looks whether its caller has gone.
constexpr absl::Duration kPollInterval = absl::Milliseconds(250);

}  // namespace

grpc::Status EventServiceImpl::WatchEvents(grpc::ServerContext* context, const v1::WatchEventsRequest* request,
                                           grpc::ServerWriter<v1::Event>* writer) {
  return Guarded(auth_, context, Role::kViewer, [&]() -> absl::Status {
    if (!request->vm().empty()) {
      // Any well-formed name: a watcher may wait for a VM that is about to be created.
      absl::Status name = ValidateVmName(request->vm());
      if (!name.ok()) return name;
    }
    uint64_t cursor = request->replay() ? 0 : hub_.last_sequence();
    while (!context->IsCancelled()) {
      // Events gone before a replay from the start are simply history; any other gap means
      // this stream fell behind.
      const bool from_start = request->replay() && cursor == 0;
      EventHub::Batch batch = hub_.Read(cursor, request->vm(), kPollInterval);
      if (batch.missed > 0 && !from_start) {
        return absl::ResourceExhaustedError(absl::StrFormat(
            "this WatchEvents stream fell behind: %d events after sequence %d are no longer held; re-subscribe "
            "(with replay for what vexd still holds)",
            batch.missed, cursor));
      }
      for (const v1::Event& event : batch.events) {
        if (!writer->Write(event)) return absl::OkStatus();  // the caller has gone
      }
      cursor = batch.cursor;
      if (batch.closed) return absl::UnavailableError("vexd is shutting down");
    }
    return absl::OkStatus();
  });
}

}  // namespace vexstate::vexd
