// MigrationDestination: the receiving end of one migration (Prepare, the data stream, Finish;
// SPEC §5 and proto/vexstate/v1/migration.proto).
//
// Create() makes an empty VM (Vm::CreateIncoming: memory zeroed, vCPUs parked, never run)
// and a one-time token for PrepareResponse. The data stream then feeds it:
//   Authenticate(hello)  the token, compared in constant time, consumed by the first stream
//                        that presents it: any later hello (a replay, a second stream) is
//                        UNAUTHENTICATED, and so is a wrong token or migration id. A refused
//                        hello changes nothing.
//   Consume(packet)      pages: verified (CRC32C, shape), then written into the VM's memory;
//                        final_state: checked with Vm::CheckRestorableHere under the policy (MCE
//                        banks, SError syndrome, payload...) and restored into the (parked) VM
//                        right away; digest: the chunked SHA-256 of the VM's memory (kept
//                        current as runs are applied: migration/chunk_digest.h) must equal
//                        the source's, else DATA_LOSS. A source's whole-RAM SHA-256 (older
//                        sources) is checked by hashing all of memory.
//   EndTransfer()        the stream ended: OK with the TransferResult only if all of the above
//                        arrived in order and verified.
// Any error after authentication (bad packet, order, incomplete stream, Abort) marks the
// migration failed for good: the VM never runs, Commit refuses, the reason is kept (status()).
// Commit() resumes the VM, whose final state (registers, then exception state last) was
// restored on arrival — only after a complete verified transfer, otherwise FAILED_PRECONDITION. Discard()
// destroys the VM (never run). Commit and Discard are each final; a second call returns the
// outcome of the first (idempotent, for a repeated Finish).
//
// Exactly once (SPEC §4.1): the VM here never runs before Commit, and Commit never follows a
// Discard; the source resumes only after this side confirmed Discard (FAILED/CANCELLED).
//
// Thread-safety: every method is thread-safe (one mutex; Consume holds it while it writes
// pages). Typically one gRPC stream thread calls Authenticate/Consume/EndTransfer while vexd's
// Finish handler calls Commit or Discard.
#ifndef VEXSTATE_MIGRATION_DESTINATION_H_
#define VEXSTATE_MIGRATION_DESTINATION_H_

#include <future>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "migration/chunk_digest.h"
#include "vexstate/v1/migration.pb.h"
#include "vmm/exit_handler.h"
#include "vmm/vm.h"

namespace vexstate::migration {

struct DestinationOptions {
  std::string migration_id;
  // The VM to create: MigrationRequirements.config (renamed if the orchestrator asked).
  v1::VmConfig config;
  // From PrepareRequest.allow_degrade; applied to the final state and at Commit.
  RestorePolicy policy;
  // Write every page of guest memory once at Create (MADV_POPULATE_WRITE, or a write per page)
  // so the guest does not pay the first-touch cost of pages the stream leaves zero after it
  // runs. Costs time in Prepare, not in the downtime.
  bool prefault_memory = false;
};

class MigrationDestination {
 public:
  enum class State {
    kAwaitingHello,  // created; token not yet presented
    kReceiving,      // authenticated: pages, then final_state, then digest
    kStateReceived,  // final_state kept; waiting for the digest
    kVerified,       // digest matched: ready to Commit
    kCommitted,      // running
    kDiscarded,      // destroyed by Discard (or never completed and then discarded)
    kFailed,         // a transfer error; the VM never runs; Discard to release it
  };

  // `devices` must outlive this object.
  static absl::StatusOr<std::unique_ptr<MigrationDestination>> Create(DestinationOptions options, ExitHandler* devices);
  ~MigrationDestination();

  const std::string& migration_id() const { return options_.migration_id; }
  // PrepareResponse.token (32 bytes).
  const std::string& token() const { return token_; }

  absl::Status Authenticate(const v1::TransferHello& hello);
  // Any packet but hello, on the authenticated stream.
  absl::Status Consume(const v1::MigrationPacket& packet);
  absl::StatusOr<v1::TransferResult> EndTransfer();
  // The authenticated stream broke (peer gone, cancelled): fail with `reason`.
  void Abort(const absl::Status& reason);

  absl::Status Commit();
  absl::Status Discard();

  State state() const;
  // Why the migration failed (OK unless kFailed).
  absl::Status status() const;
  // What the restore will do / did differently (allow_degrade only).
  std::vector<std::string> degradations() const;
  // The FinishResponse / QueryIncoming answer for this migration.
  v1::FinishResponse Describe() const;
  absl::Time resume_time() const;  // when Commit resumed the VM (InfinitePast before)
  uint64_t pages_received() const;
  // The VM (null after Discard). The caller may use it once Commit succeeded (it keeps
  // running); ReleaseVm hands it over for good after Commit (null otherwise).
  Vm* vm();
  std::unique_ptr<Vm> ReleaseVm();

 private:
  MigrationDestination(DestinationOptions options, std::unique_ptr<Vm> vm, std::string token,
                       std::unique_ptr<IncrementalChunkDigest> chunk_digest);
  // Records the failure (first one wins) and returns it.
  absl::Status Fail(absl::Status status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status ConsumeLocked(const v1::MigrationPacket& packet) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckDigest(const v1::MemoryDigest& digest) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const DestinationOptions options_;
  const std::string token_;
  mutable absl::Mutex mu_;
  std::unique_ptr<Vm> vm_ ABSL_GUARDED_BY(mu_);
  State state_ ABSL_GUARDED_BY(mu_) = State::kAwaitingHello;
  bool token_used_ ABSL_GUARDED_BY(mu_) = false;
  absl::Status failure_ ABSL_GUARDED_BY(mu_);

  std::vector<std::string> degradations_ ABSL_GUARDED_BY(mu_);
  std::string memory_sha256_ ABSL_GUARDED_BY(mu_);
  uint64_t pages_received_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Time resume_time_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();
  // Chunk hashes of the VM's memory, following the applied runs (migration/chunk_digest.h).
  // Declared after vm_ so that it is destroyed first (its hashing reads vm_'s memory).
  std::unique_ptr<IncrementalChunkDigest> chunk_digest_ ABSL_GUARDED_BY(mu_);
  // The chunk root, started when the final state arrived; destroyed first (it reads
  // chunk_digest_).
  std::future<absl::StatusOr<std::string>> digest_ ABSL_GUARDED_BY(mu_);
};

const char* StateName(MigrationDestination::State state);

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_DESTINATION_H_
