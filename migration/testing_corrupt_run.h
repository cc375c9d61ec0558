// TEST-ONLY fault-injection hook: one corrupted chunk on the wire (tests/migration/
// fault_stream_test.py). Off unless the environment variable
//
//   VEXSTATE_TESTING_CORRUPT_RUN=N          N >= 1
//   VEXSTATE_TESTING_CORRUPT_RUN=N@ROUND    only runs of pre-copy round ROUND count (the round
//                                           after the last pre-copy round is stop-and-copy)
//
// is set in the environment of the SOURCE vexd (its workers inherit it). Then the source
// worker's data stream flips one byte of the data of the N-th PageRun that carries page data
// (counted from 1), after the source sealed that run with its CRC32C:
// what a bit error on the wire would look like to the destination, which must detect it
// (DATA_LOSS naming the run's gpa) and apply nothing. The flip is announced on stderr (the
// worker log) with the run's gpa and round. Never set it in production.
//
// TestingCorruptRunSink sits in front of the real sink and passes everything through
// unchanged when the hook is off.
//
// Thread-safety: PacketSink's contract (Send/Finish from one thread, Cancel from any).
#ifndef VEXSTATE_MIGRATION_TESTING_CORRUPT_RUN_H_
#define VEXSTATE_MIGRATION_TESTING_CORRUPT_RUN_H_

#include <cstdint>

#include "migration/packet_sink.h"

namespace vexstate::migration {

inline constexpr char kTestingCorruptRunEnv[] = "VEXSTATE_TESTING_CORRUPT_RUN";

class TestingCorruptRunSink final : public PacketSink {
 public:
  // `inner` must outlive this sink. `run` is N (0: off), `round` ROUND (-1: any round);
  // FromEnvironment reads them.
  TestingCorruptRunSink(PacketSink* inner, uint64_t run, int64_t round = -1)
      : inner_(*inner), target_(run), round_(round) {}
  static TestingCorruptRunSink FromEnvironment(PacketSink* inner);

  absl::Status Send(const v1::MigrationPacket& packet) override;
  absl::StatusOr<v1::TransferResult> Finish() override { return inner_.Finish(); }
  void Cancel() override { inner_.Cancel(); }

  bool corrupted() const { return corrupted_; }

 private:
  PacketSink& inner_;
  const uint64_t target_;
  const int64_t round_;
  uint64_t data_runs_seen_ = 0;
  bool corrupted_ = false;
};

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_TESTING_CORRUPT_RUN_H_
