// MigrationSource: the Perform phase on the host that has the VM (SPEC §5; the phases are in
// proto/vexstate/v1/migration.proto).
//
// Run() streams the VM into a PacketSink, in this order:
//   hello (migration id + the destination's one-time token)
//   pre-copy rounds while the VM runs: round 0 = every page that holds data (memfd holes,
//     never touched, are skipped: zero on both sides), round n = the pages KVM's dirty log
//     reports as written since round n-1 read it; zero pages travel as zero_bitmap bits
//   Pause (the pause time is recorded: downtime starts here)
//   the last dirty pages
//   final_state = Vm::Capture(with_memory = false): VM devices, every vCPU's registers and
//     exception state (the destination restores the exception state last)
//   digest = the chunked SHA-256 of all RAM at the pause point (migration/chunk_digest.h:
//     chunk hashes kept current during pre-copy, only chunks written since re-hashed)
// then waits for the destination's verdict (PacketSink::Finish) and checks the digest it
// reports against its own. Pre-copy stops when the pages still dirty would move within
// max_downtime at the bandwidth measured so far (bytes sent / time spent encoding and
// sending) and a further round would not shrink them by a quarter (or they would move within
// 2 ms), or after max_rounds rounds. A VM that is already paused when Run starts is
// migrated the same way (its rounds after round 0 find nothing dirty) and is never resumed
// by Run.
//
// What Run leaves behind — the exactly-once rule (SPEC §4.1):
//  * OK: the destination holds a verified copy and does not run it. The VM here is paused,
//    dirty logging off. The caller sends Finish(commit) to the destination; once that
//    confirms the VM runs there, the caller destroys the VM here; if the destination
//    confirms it discarded the copy, the caller may Resume() it here.
//  * Error (any, including CANCELLED) with final_state_sent == false: the final state never
//    left this process, so the destination cannot run the VM. Run turned dirty logging off
//    and, if it had paused the VM itself, resumed it (resumed_by_source == true). A VM that
//    was paused when Run started stays paused.
//  * Error with final_state_sent == true: the VM stays paused and Run never resumes it: the
//    destination may hold the state. The caller settles it with the destination
//    (Finish(commit = false), or QueryIncoming after a lost answer) and only after the
//    destination confirms the copy is discarded may it Resume() the VM here.
// So a pending exception reaches the guest exactly once: here after a confirmed discard, or
// on the destination after commit.
//
// Thread-safety: Run is called once, from one thread. Cancel may be called from any thread
// at any time (before, during or after Run). The progress callback runs on Run's thread.
// The Vm must outlive Run; nobody else may use its dirty log meanwhile.
#ifndef VEXSTATE_MIGRATION_SOURCE_H_
#define VEXSTATE_MIGRATION_SOURCE_H_

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migration/packet_sink.h"
#include "migration/page_codec.h"
#include "vexstate/v1/migration.pb.h"
#include "vmm/vm.h"

namespace vexstate::migration {

struct SourceOptions {
  std::string migration_id;
  std::string token;  // PrepareResponse.token
  absl::Duration max_downtime = absl::Milliseconds(300);
  uint64_t max_bandwidth_bytes_per_sec = 0;  // 0 = unlimited
  uint32_t max_rounds = 30;                  // pre-copy rounds, round 0 included (>= 1)
  // Flush a PageBatch once its runs hold this much page data.
  uint64_t batch_bytes = 1 << 20;
  // Called after every round and at each phase change.
  std::function<void(const v1::MigrationProgress&)> on_progress;
  // Called right after the VM is paused, before the last dirty pages and the final state are
  // read; an error aborts the migration (as before final_state_sent). Tests use it to make an
  // exception pending at the pause point; vexd may use it to journal the pause.
  std::function<absl::Status(Vm&)> at_pause;
};

// Applies MigrateVmRequest's knobs (0 = keep the default) to `options`.
void ApplyRequest(const v1::MigrateVmRequest& request, SourceOptions& options);

struct SourceResult {
  absl::Status status;
  // See the header comment: these two decide who may resume the VM.
  bool final_state_sent = false;
  bool resumed_by_source = false;
  bool paused_by_source = false;  // Run paused the VM (it ran when Run started)
  absl::Time start_time = absl::InfinitePast();
  // When Run paused the VM (or reached that point, if the VM was paused already): the
  // downtime starts here. InfinitePast if Run never got there.
  absl::Time pause_time = absl::InfinitePast();
  absl::Time paused_time = absl::InfinitePast();       // every vCPU out of KVM_RUN
  absl::Time final_state_time = absl::InfinitePast();  // final state handed to the sink
  absl::Time digest_time = absl::InfinitePast();       // digest handed to the sink
  absl::Time verified_time = absl::InfinitePast();     // the destination's verdict arrived
  absl::Time end_time = absl::InfinitePast();
  uint32_t precopy_rounds = 0;  // rounds sent while the VM ran (MigrationResult.rounds)
  uint64_t bytes_sent = 0;      // serialized packet bytes
  uint64_t pages_sent = 0;      // pages in all runs (zero pages included)
  uint64_t final_pages = 0;     // pages sent after the pause
  double bandwidth_bytes_per_sec = 0;
  uint64_t dirty_pages_per_sec = 0;  // the last measured rate
  std::string memory_sha256;         // raw 32-byte chunk root at the pause point ("" if not reached)
  v1::TransferResult transfer;       // the destination's answer (on success)

  absl::Duration total() const { return end_time - start_time; }
};

class MigrationSource {
 public:
  MigrationSource(Vm* vm, SourceOptions options);
  MigrationSource(const MigrationSource&) = delete;
  MigrationSource& operator=(const MigrationSource&) = delete;

  SourceResult Run(PacketSink& sink);
  // Stops Run as soon as possible (between batches, or by breaking a blocked Send); Run then
  // returns CANCELLED, or its own result if it had already finished.
  void Cancel();

 private:
  absl::Status Stream(PacketSink& sink, SourceResult& result);
  absl::Status CheckCancelled() const;
  // Encodes the pages of `bitmap` into batches of round `round` and sends them.
  absl::Status SendPages(PacketSink& sink, const PageBitmap& bitmap, ZeroPages zero_pages, uint32_t round,
                         SourceResult& result);
  void Report(v1::MigrationPhase phase, uint32_t round, const SourceResult& result, uint64_t pages_remaining,
              uint64_t expected_downtime_ms) const;

  Vm* const vm_;
  const SourceOptions options_;
  std::atomic<bool> cancelled_{false};
  absl::Mutex mu_;
  PacketSink* active_sink_ ABSL_GUARDED_BY(mu_) = nullptr;
  v1::MigrationPacket batch_packet_;  // reused by SendPages (Run's thread only)
  // Bandwidth measurement over all page rounds.
  uint64_t measured_bytes_ = 0;
  absl::Duration measured_time_;
};

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_SOURCE_H_
