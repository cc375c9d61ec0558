#include "migration/source.h"

#include <algorithm>
#include <future>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "migration/chunk_digest.h"
#include "migration/memory_digest.h"
#include "migration/memory_extents.h"

namespace vexstate::migration {

namespace {

absl::Status Annotate(const absl::Status& status, const std::string& where) {
  if (status.ok()) return status;
  return absl::Status(status.code(), absl::StrFormat("%s: %s", where, status.message()));
}

// Below this expected downtime another pre-copy round is not worth its time.
constexpr absl::Duration kSmallDowntime = absl::Milliseconds(2);

}  // namespace

void ApplyRequest(const v1::MigrateVmRequest& request, SourceOptions& options) {
  if (request.max_downtime_ms() != 0) options.max_downtime = absl::Milliseconds(request.max_downtime_ms());
  if (request.max_bandwidth_bytes_per_sec() != 0) {
    options.max_bandwidth_bytes_per_sec = request.max_bandwidth_bytes_per_sec();
  }
  if (request.max_precopy_rounds() != 0) options.max_rounds = request.max_precopy_rounds();
}

MigrationSource::MigrationSource(Vm* vm, SourceOptions options) : vm_(vm), options_(std::move(options)) {}

void MigrationSource::Cancel() {
  cancelled_ = true;
  absl::MutexLock lock(&mu_);
  if (active_sink_ != nullptr) active_sink_->Cancel();
}

absl::Status MigrationSource::CheckCancelled() const {
  if (cancelled_) return absl::CancelledError("migration cancelled");
  return absl::OkStatus();
}

void MigrationSource::Report(v1::MigrationPhase phase, uint32_t round, const SourceResult& result,
                             uint64_t pages_remaining, uint64_t expected_downtime_ms) const {
  if (!options_.on_progress) return;
  v1::MigrationProgress progress;
  progress.set_migration_id(options_.migration_id);
  progress.set_phase(phase);
  progress.set_round(round);
  progress.set_bytes_sent(result.bytes_sent);
  progress.set_pages_sent(result.pages_sent);
  progress.set_pages_remaining(pages_remaining);
  progress.set_dirty_pages_per_sec(result.dirty_pages_per_sec);
  progress.set_expected_downtime_ms(expected_downtime_ms);
  options_.on_progress(progress);
}

absl::Status MigrationSource::SendPages(PacketSink& sink, const PageBitmap& bitmap, ZeroPages zero_pages,
                                        uint32_t round, SourceResult& result) {
  const absl::Time start = absl::Now();
  uint64_t round_bytes = 0;
  // One packet, reused: PageBatch::Clear keeps its runs and their buffers for the next batch.
  v1::PageBatch* batch = batch_packet_.mutable_pages();
  batch->Clear();
  uint64_t batched = 0;
  auto flush = [&]() -> absl::Status {
    if (batch->runs_size() == 0) return absl::OkStatus();
    if (absl::Status s = CheckCancelled(); !s.ok()) return s;
    batch->set_round(round);
    const uint64_t size = batch_packet_.ByteSizeLong();
    if (absl::Status s = sink.Send(batch_packet_); !s.ok()) return s;
    round_bytes += size;
    result.bytes_sent += size;
    batch->Clear();
    batched = 0;
    if (options_.max_bandwidth_bytes_per_sec != 0) {
      // Pace the round: its bytes so far may not have left earlier than the limit allows.
      const absl::Time allowed = start + absl::Seconds(static_cast<double>(round_bytes) /
                                                       static_cast<double>(options_.max_bandwidth_bytes_per_sec));
      const absl::Time now = absl::Now();
      if (allowed > now) absl::SleepFor(allowed - now);
    }
    return absl::OkStatus();
  };
  RunSink runs{[batch] { return batch->add_runs(); },
               [&](v1::PageRun& run) -> absl::Status {
                 batched += run.data().size() + run.zero_bitmap().size();
                 return batched >= options_.batch_bytes ? flush() : absl::OkStatus();
               }};
  EncodeStats stats;
  absl::Status status = EncodePages(vm_->memory(), bitmap, zero_pages, runs, &stats);
  if (status.ok()) status = flush();
  result.pages_sent += stats.pages;
  measured_bytes_ += round_bytes;
  measured_time_ += absl::Now() - start;
  if (measured_time_ > absl::ZeroDuration()) {
    result.bandwidth_bytes_per_sec = static_cast<double>(measured_bytes_) / absl::ToDoubleSeconds(measured_time_);
  }
  return status;
}

absl::Status MigrationSource::Stream(PacketSink& sink, SourceResult& result) {
  GuestMemory& memory = vm_->memory();
  {
    v1::MigrationPacket hello;
    hello.mutable_hello()->set_migration_id(options_.migration_id);
    hello.mutable_hello()->set_token(options_.token);
    result.bytes_sent += hello.ByteSizeLong();
    if (absl::Status s = sink.Send(hello); !s.ok()) return Annotate(s, "sending hello");
  }
  if (absl::Status s = vm_->SetDirtyLogging(true); !s.ok()) return Annotate(s, "enabling dirty logging");

  // Pre-copy. From here every guest write is in the dirty log, so round 0 may read pages
  // while they change: a page written after it was read is sent again in a later round.
  // Round 0 covers the pages that hold data: holes of the memfd are zero on both sides and
  // stay untouched. Allocated pages that are zero go as zero_bitmap bits: nearly free on the
  // wire, and the destination then writes them, so its guest does not pay the first-touch
  // cost for them (notes/x86-kvm.md: ~350 us a page under kvm_pvm, unless the VMM wrote it).
  absl::StatusOr<PageBitmap> populated = PopulatedPages(memory);
  if (!populated.ok()) return populated.status();
  PageBitmap pending = std::move(*populated);
  // Chunk hashes follow the pages from here (the same marks as the dirty log), on a thread of
  // their own, so that at the pause point only what was written since needs hashing.
  IncrementalChunkDigest digest(memory, pending);
  digest.StartHashing();
  Report(v1::MIGRATION_PRECOPY, 0, result, CountPages(pending), 0);
  absl::Time last_fetch = absl::Now();
  uint64_t previous_remaining = CountPages(pending);
  for (uint32_t round = 0;; ++round) {
    if (absl::Status s = SendPages(sink, pending, ZeroPages::kElide, round, result); !s.ok()) {
      return Annotate(s, absl::StrFormat("pre-copy round %u", round));
    }
    result.precopy_rounds = round + 1;
    absl::StatusOr<PageBitmap> dirty = vm_->FetchDirtyPages();
    if (!dirty.ok()) return Annotate(dirty.status(), "reading the dirty log");
    pending = std::move(*dirty);
    digest.MarkWritten(pending);
    digest.KeepUp();
    const absl::Time now = absl::Now();
    const uint64_t remaining = CountPages(pending);
    result.dirty_pages_per_sec =
        static_cast<uint64_t>(static_cast<double>(remaining) / std::max(1e-6, absl::ToDoubleSeconds(now - last_fetch)));
    last_fetch = now;
    const double bandwidth = std::max(result.bandwidth_bytes_per_sec, 1.0);
    const absl::Duration expected = absl::Seconds(static_cast<double>(remaining * kPageSize) / bandwidth);
    Report(v1::MIGRATION_PRECOPY, round, result, remaining, absl::ToInt64Milliseconds(expected));
    if (result.precopy_rounds >= options_.max_rounds) break;
    // max_downtime is a bound, not a goal: while a round still shrinks what is left by a
    // quarter, another (shorter) round costs less than sending it with the guest paused.
    const bool converging = remaining * 4 <= previous_remaining * 3;
    previous_remaining = remaining;
    if (expected <= options_.max_downtime && (!converging || expected <= kSmallDowntime)) break;
    if (absl::Status s = CheckCancelled(); !s.ok()) return s;
  }

  // Stop and copy.
  if (absl::Status s = CheckCancelled(); !s.ok()) return s;
  result.paused_by_source = !vm_->paused();
  result.pause_time = absl::Now();
  if (absl::Status s = vm_->Pause(); !s.ok()) return Annotate(s, "pausing the VM");
  result.paused_time = absl::Now();
  if (options_.at_pause) {
    if (absl::Status s = options_.at_pause(*vm_); !s.ok()) return Annotate(s, "at the pause point");
  }
  absl::StatusOr<PageBitmap> dirty = vm_->FetchDirtyPages();
  if (!dirty.ok()) return Annotate(dirty.status(), "reading the dirty log after the pause");
  MergeInto(pending, *dirty);
  digest.MarkWritten(*dirty);
  // Memory no longer changes: re-hash the chunks written since their hash while the last pages
  // and the state go out. The future's destructor waits for it (declared after `digest`, so it
  // is destroyed first): no early return leaves it reading.
  std::future<absl::StatusOr<std::string>> root =
      std::async(std::launch::async, [&digest] { return digest.Root(); });
  Report(v1::MIGRATION_STOP_AND_COPY, result.precopy_rounds, result, CountPages(pending), 0);
  const uint64_t before = result.pages_sent;
  if (absl::Status s = SendPages(sink, pending, ZeroPages::kElide, result.precopy_rounds, result); !s.ok()) {
    return Annotate(s, "sending the last dirty pages");
  }
  result.final_pages = result.pages_sent - before;
  if (absl::Status s = CheckCancelled(); !s.ok()) return s;
  absl::StatusOr<v1::Snapshot> state = vm_->Capture(/*with_memory=*/false);
  if (!state.ok()) return Annotate(state.status(), "capturing the final state");
  {
    v1::MigrationPacket packet;
    *packet.mutable_final_state() = std::move(*state);
    result.bytes_sent += packet.ByteSizeLong();
    // From this call on the destination may hold the state: Run never resumes the VM again.
    result.final_state_sent = true;
    if (absl::Status s = sink.Send(packet); !s.ok()) return Annotate(s, "sending the final state");
    result.final_state_time = absl::Now();
  }
  absl::StatusOr<std::string> sha256 = root.get();
  if (!sha256.ok()) return sha256.status();
  result.memory_sha256 = std::move(*sha256);
  {
    v1::MigrationPacket packet;
    packet.mutable_digest()->set_chunk_root_sha256(result.memory_sha256);
    packet.mutable_digest()->set_chunk_bytes(digest.chunk_bytes());
    packet.mutable_digest()->set_memory_bytes(memory.size());
    result.bytes_sent += packet.ByteSizeLong();
    if (absl::Status s = sink.Send(packet); !s.ok()) return Annotate(s, "sending the digest");
    result.digest_time = absl::Now();
  }
  absl::StatusOr<v1::TransferResult> transfer = sink.Finish();
  result.verified_time = absl::Now();
  if (!transfer.ok()) return Annotate(transfer.status(), "destination");
  result.transfer = std::move(*transfer);
  if (result.transfer.memory_sha256() != result.memory_sha256) {
    return absl::DataLossError(absl::StrFormat("the destination reports memory SHA-256 %s, the source has %s",
                                               ToHex(result.transfer.memory_sha256()), ToHex(result.memory_sha256)));
  }
  return absl::OkStatus();
}

SourceResult MigrationSource::Run(PacketSink& sink) {
  SourceResult result;
  result.start_time = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    active_sink_ = &sink;
  }
  if (cancelled_) sink.Cancel();
  result.status = CheckCancelled();
  if (result.status.ok()) result.status = Stream(sink, result);
  {
    absl::MutexLock lock(&mu_);
    active_sink_ = nullptr;
  }
  if (!result.status.ok()) {
    // A broken stream: make sure the destination sees it end (it discards an incomplete
    // transfer) and prefer its reason when it has one.
    sink.Cancel();
  }
  absl::Status logging = vm_->SetDirtyLogging(false);
  if (result.status.ok() && !logging.ok()) result.status = Annotate(logging, "disabling dirty logging");
  if (!result.status.ok() && !result.final_state_sent && result.paused_by_source) {
    // Safe: the final state never left this process, so no other host can run this VM.
    if (absl::Status s = vm_->Resume(); s.ok()) result.resumed_by_source = true;
  }
  result.end_time = absl::Now();
  return result;
}

}  // namespace vexstate::migration
