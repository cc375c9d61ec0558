#include "migration/testing_corrupt_run.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/numbers.h"

namespace vexstate::migration {

TestingCorruptRunSink TestingCorruptRunSink::FromEnvironment(PacketSink* inner) {
  const char* value = std::getenv(kTestingCorruptRunEnv);
  uint64_t run = 0;
  if (value != nullptr && *value != '\0' && !absl::SimpleAtoi(value, &run)) {
    std::fprintf(stderr, "TESTING HOOK %s=\"%s\" is not a run number: ignored\n", kTestingCorruptRunEnv, value);
  }
  return TestingCorruptRunSink(inner, run);
}

absl::Status TestingCorruptRunSink::Send(const v1::MigrationPacket& packet) {
  if (target_ == 0 || corrupted_ || !packet.has_pages()) return inner_.Send(packet);
  for (int i = 0; i < packet.pages().runs_size(); ++i) {
    if (packet.pages().runs(i).data().empty() || ++data_runs_seen_ != target_) continue;
    // Only the packet that carries the target run is copied: the hook costs nothing else.
    v1::MigrationPacket copy = packet;
    v1::PageRun& run = *copy.mutable_pages()->mutable_runs(i);
    (*run.mutable_data())[run.data().size() / 2] ^= 0x01;
    corrupted_ = true;
    std::fprintf(stderr, "TESTING HOOK %s: flipped a bit of run %lu (gpa 0x%lx, %u pages, round %u) after its CRC32C\n",
                 kTestingCorruptRunEnv, static_cast<unsigned long>(target_), static_cast<unsigned long>(run.gpa()),
                 run.count(), copy.pages().round());
    return inner_.Send(copy);
  }
  return inner_.Send(packet);
}

}  // namespace vexstate::migration
