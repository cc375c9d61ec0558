#include "migration/destination.h"

#include <sys/mman.h>

#include <cerrno>
#include <future>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "migration/chunk_digest.h"
#include "migration/memory_digest.h"
#include "migration/page_codec.h"
#include "migration/token.h"

namespace vexstate::migration {

namespace {

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14
#endif

// Makes every page of `memory` resident and written once (zeros stay zeros).
void Prefault(GuestMemory& memory) {
  if (madvise(memory.host(), memory.size(), MADV_POPULATE_WRITE) == 0) return;
  // Older kernels: one write per page does the same.
  for (uint64_t offset = 0; offset < memory.size(); offset += kPageSize) {
    volatile uint8_t* byte = memory.host() + offset;
    *byte = *byte;
  }
}

}  // namespace

const char* StateName(MigrationDestination::State state) {
  switch (state) {
    case MigrationDestination::State::kAwaitingHello:
      return "awaiting hello";
    case MigrationDestination::State::kReceiving:
      return "receiving pages";
    case MigrationDestination::State::kStateReceived:
      return "final state received";
    case MigrationDestination::State::kVerified:
      return "verified";
    case MigrationDestination::State::kCommitted:
      return "committed";
    case MigrationDestination::State::kDiscarded:
      return "discarded";
    case MigrationDestination::State::kFailed:
      return "failed";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<MigrationDestination>> MigrationDestination::Create(DestinationOptions options,
                                                                                   ExitHandler* devices) {
  if (options.migration_id.empty()) return absl::InvalidArgumentError("migration_id is empty");
  absl::StatusOr<std::string> token = NewToken();
  if (!token.ok()) return token.status();
  absl::StatusOr<std::unique_ptr<Vm>> vm = Vm::CreateIncoming(options.config, devices);
  if (!vm.ok()) return vm.status();
  if (options.prefault_memory) Prefault((*vm)->memory());
  // Fresh memory is all holes: every chunk starts as zeros; applied runs mark theirs.
  auto chunk_digest = std::make_unique<IncrementalChunkDigest>((*vm)->memory(), PageBitmap());
  return std::unique_ptr<MigrationDestination>(
      new MigrationDestination(std::move(options), std::move(*vm), std::move(*token), std::move(chunk_digest)));
}

MigrationDestination::MigrationDestination(DestinationOptions options, std::unique_ptr<Vm> vm, std::string token,
                                           std::unique_ptr<IncrementalChunkDigest> chunk_digest)
    : options_(std::move(options)), token_(std::move(token)), vm_(std::move(vm)), chunk_digest_(std::move(chunk_digest)) {}

MigrationDestination::~MigrationDestination() = default;

absl::Status MigrationDestination::Fail(absl::Status status) {
  if (state_ != State::kFailed) {
    state_ = State::kFailed;
    failure_ = status;
  }
  return status;
}

absl::Status MigrationDestination::Authenticate(const v1::TransferHello& hello) {
  absl::MutexLock lock(&mu_);
  if (token_used_) {
    return absl::UnauthenticatedError(
        absl::StrFormat("the token of migration \"%s\" was already used by another stream (one stream per token)",
                        options_.migration_id));
  }
  if (hello.migration_id() != options_.migration_id) {
    return absl::UnauthenticatedError(absl::StrFormat("hello names migration \"%s\"; this destination serves \"%s\"",
                                                      hello.migration_id(), options_.migration_id));
  }
  if (!TokensEqual(hello.token(), token_)) {
    return absl::UnauthenticatedError(
        absl::StrFormat("wrong token for migration \"%s\" (not the one from Prepare)", options_.migration_id));
  }
  if (state_ != State::kAwaitingHello) {
    return absl::FailedPreconditionError(
        absl::StrFormat("migration \"%s\" is %s", options_.migration_id, StateName(state_)));
  }
  token_used_ = true;
  state_ = State::kReceiving;
  return absl::OkStatus();
}

absl::Status MigrationDestination::Consume(const v1::MigrationPacket& packet) {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kFailed) return failure_;
  if (!token_used_ || state_ == State::kAwaitingHello) {
    return absl::UnauthenticatedError("a data packet before an accepted hello");
  }
  if (state_ == State::kDiscarded || state_ == State::kCommitted || state_ == State::kVerified) {
    return absl::FailedPreconditionError(
        absl::StrFormat("migration \"%s\" is %s: no more packets", options_.migration_id, StateName(state_)));
  }
  absl::Status status = ConsumeLocked(packet);
  if (!status.ok()) return Fail(status);
  return status;
}

absl::Status MigrationDestination::ConsumeLocked(const v1::MigrationPacket& packet) {
  switch (packet.packet_case()) {
    case v1::MigrationPacket::kHello:
      return absl::FailedPreconditionError("a second hello on the stream");
    case v1::MigrationPacket::kPages:
      if (state_ != State::kReceiving) {
        return absl::FailedPreconditionError(
            absl::StrFormat("page batch of round %u after the final state", packet.pages().round()));
      }
      if (absl::Status s = ApplyRuns(packet.pages().runs(), vm_->memory(), &pages_received_); !s.ok()) return s;
      for (const v1::PageRun& run : packet.pages().runs()) {
        chunk_digest_->MarkWritten((run.gpa() - vm_->memory().base_gpa()) / kPageSize, run.count());
      }
      chunk_digest_->KeepUp();
      return absl::OkStatus();
    case v1::MigrationPacket::kFinalState: {
      if (state_ != State::kReceiving) return absl::FailedPreconditionError("a second final state");
      const v1::Snapshot& state = packet.final_state();
      if (state.memory_size() != 0) {
        return absl::InvalidArgumentError("final_state carries memory chunks; memory travels as page runs");
      }
      // Against this VM (its own MCE banks...) and the policy: what Commit's RestoreState will
      // check first, found now, while the source can still simply resume.
      RestoreReport report;
      if (absl::Status s = vm_->CheckRestorableHere(state, options_.policy, &report); !s.ok()) {
        return absl::Status(s.code(), absl::StrFormat("final state cannot be restored here: %s", s.message()));
      }
      // No page may follow the final state, so memory is final: finish the chunk hashes while
      // the digest is on its way (the source sends it once its own hashes are done), and
      // restore the state into the VM now, so that Commit only has to resume it. Restored or
      // not, the VM never runs before Commit (which needs the digest verified), and Discard
      // destroys it.
      digest_ = std::async(std::launch::async, [digest = chunk_digest_.get()] { return digest->Root(); });
      RestoreReport restored;
      if (absl::Status s = vm_->RestoreState(state, options_.policy, &restored); !s.ok()) {
        return absl::Status(s.code(), absl::StrFormat("restoring the final state: %s", s.message()));
      }
      degradations_ = std::move(restored.degradations);
      state_ = State::kStateReceived;
      return absl::OkStatus();
    }
    case v1::MigrationPacket::kDigest:
      if (state_ != State::kStateReceived) {
        return absl::FailedPreconditionError("the memory digest arrived before the final state");
      }
      if (absl::Status s = CheckDigest(packet.digest()); !s.ok()) return s;
      state_ = State::kVerified;
      return absl::OkStatus();
    case v1::MigrationPacket::PACKET_NOT_SET:
      break;
  }
  return absl::InvalidArgumentError("an empty packet (unknown kind: is the source newer than this build?)");
}

absl::Status MigrationDestination::CheckDigest(const v1::MemoryDigest& digest) {
  if (digest.memory_bytes() != vm_->memory().size()) {
    return absl::DataLossError(absl::StrFormat("the source hashed %u bytes of memory; this VM has %u",
                                               digest.memory_bytes(), vm_->memory().size()));
  }
  // Ours is the chunk root at kDigestChunkBytes; a source that hashed otherwise (all of RAM
  // at once, or other chunks) is checked by hashing all of memory its way: slower, as sure.
  absl::StatusOr<std::string> mine = digest_.get();
  if (!mine.ok()) return mine.status();
  std::string theirs = digest.chunk_root_sha256();
  const char* kind = "chunked memory SHA-256";
  if (theirs.empty()) {
    theirs = digest.sha256();
    kind = "memory SHA-256";
    mine = MemorySha256(vm_->memory());
  } else if (digest.chunk_bytes() != chunk_digest_->chunk_bytes()) {
    mine = ChunkRootSha256(vm_->memory(), digest.chunk_bytes());
  }
  if (!mine.ok()) return mine.status();
  if (*mine != theirs) {
    return absl::DataLossError(absl::StrFormat("%s %s here differs from the source's %s at its pause point", kind,
                                               ToHex(*mine), ToHex(theirs)));
  }
  memory_sha256_ = std::move(*mine);
  return absl::OkStatus();
}

absl::StatusOr<v1::TransferResult> MigrationDestination::EndTransfer() {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kFailed) return failure_;
  if (state_ != State::kVerified) {
    if (state_ == State::kDiscarded) return absl::CancelledError("the migration was discarded during the transfer");
    return Fail(absl::DataLossError(
        absl::StrFormat("the stream ended early (%s): no verified memory digest", StateName(state_))));
  }
  v1::TransferResult result;
  result.set_pages_received(pages_received_);
  result.set_memory_sha256(memory_sha256_);
  return result;
}

void MigrationDestination::Abort(const absl::Status& reason) {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kReceiving || state_ == State::kStateReceived) {
    // Fail records the reason as this transfer's outcome and returns it; Abort has no caller
    // to hand it to.
    Fail(absl::Status(reason.code(), absl::StrFormat("the data stream broke: %s", reason.message()))).IgnoreError();
  }
}

absl::Status MigrationDestination::Commit() {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kCommitted) return absl::OkStatus();
  if (state_ != State::kVerified) {
    std::string why = state_ == State::kFailed ? absl::StrFormat(": %s", failure_.ToString()) : "";
    return absl::FailedPreconditionError(absl::StrFormat("migration \"%s\" cannot commit: it is %s, not verified%s",
                                                         options_.migration_id, StateName(state_), why));
  }
  // The final state was restored when it arrived: only the vCPUs' go is left.
  if (absl::Status s = vm_->Resume(); !s.ok()) return Fail(s);
  resume_time_ = absl::Now();
  state_ = State::kCommitted;
  return absl::OkStatus();
}

absl::Status MigrationDestination::Discard() {
  absl::MutexLock lock(&mu_);
  if (state_ == State::kCommitted) {
    return absl::FailedPreconditionError(absl::StrFormat(
        "migration \"%s\" is committed: the VM runs here and cannot be discarded", options_.migration_id));
  }
  if (digest_.valid()) digest_.wait();  // it reads the VM's memory
  chunk_digest_.reset();                // likewise (its destructor waits for its hashing)
  vm_.reset();                          // never ran: nothing of it reached a guest
  if (state_ != State::kFailed) state_ = State::kDiscarded;
  return absl::OkStatus();
}

MigrationDestination::State MigrationDestination::state() const {
  absl::MutexLock lock(&mu_);
  return state_;
}

absl::Status MigrationDestination::status() const {
  absl::MutexLock lock(&mu_);
  return failure_;
}

std::vector<std::string> MigrationDestination::degradations() const {
  absl::MutexLock lock(&mu_);
  return degradations_;
}

v1::FinishResponse MigrationDestination::Describe() const {
  absl::MutexLock lock(&mu_);
  v1::FinishResponse out;
  switch (state_) {
    case State::kAwaitingHello:
      out.set_phase(v1::MIGRATION_PREPARE);
      break;
    case State::kReceiving:
    case State::kStateReceived:
      out.set_phase(v1::MIGRATION_PRECOPY);
      break;
    case State::kVerified:
      out.set_phase(v1::MIGRATION_FINISH);
      break;
    case State::kCommitted:
      out.set_phase(v1::MIGRATION_COMPLETED);
      break;
    case State::kDiscarded:
    case State::kFailed:
      out.set_phase(v1::MIGRATION_FAILED);
      break;
  }
  out.set_memory_sha256(ToHex(memory_sha256_));
  for (const std::string& d : degradations_) out.add_degradations(d);
  if (state_ == State::kCommitted) out.set_resumed_unix_ns(absl::ToUnixNanos(resume_time_));
  return out;
}

absl::Time MigrationDestination::resume_time() const {
  absl::MutexLock lock(&mu_);
  return resume_time_;
}

uint64_t MigrationDestination::pages_received() const {
  absl::MutexLock lock(&mu_);
  return pages_received_;
}

Vm* MigrationDestination::vm() {
  absl::MutexLock lock(&mu_);
  return vm_.get();
}

std::unique_ptr<Vm> MigrationDestination::ReleaseVm() {
  absl::MutexLock lock(&mu_);
  if (state_ != State::kCommitted) return nullptr;
  return std::move(vm_);
}

}  // namespace vexstate::migration
