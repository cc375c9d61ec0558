// PacketSink: where a MigrationSource writes the data stream (MigrationPacket, in order:
// hello, page batches, final_state, digest). The gRPC client stream (migration/data_service.h)
// is one; tests wrap it to corrupt or drop packets, or collect packets in memory.
//
// Thread-safety: Send and Finish are called by one thread (the source's); Cancel may be
// called from any thread at any time, also while Send blocks, and must make a blocked Send
// return promptly with an error.
#ifndef VEXSTATE_MIGRATION_PACKET_SINK_H_
#define VEXSTATE_MIGRATION_PACKET_SINK_H_

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "vexstate/v1/migration.pb.h"

namespace vexstate::migration {

class PacketSink {
 public:
  virtual ~PacketSink() = default;
  // Hands one packet on; may block for flow control. An error means the stream is broken:
  // nothing more will be delivered (Finish then returns the peer's reason, if it has one).
  virtual absl::Status Send(const v1::MigrationPacket& packet) = 0;
  // Ends the stream and waits for the destination's verdict: its TransferResult once it
  // verified the digest, or its error (DATA_LOSS, UNAUTHENTICATED, FAILED_PRECONDITION...).
  virtual absl::StatusOr<v1::TransferResult> Finish() = 0;
  // Breaks the stream from another thread (CancelMigration).
  virtual void Cancel() = 0;
};

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_PACKET_SINK_H_
