#include "migration/testing_corrupt_run.h"

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace vexstate::migration {

TestingCorruptRunSink TestingCorruptRunSink::FromEnvironment(PacketSink* inner) {
  const char* value = std::getenv(kTestingCorruptRunEnv);
  if (value == nullptr || *value == '\0') return TestingCorruptRunSink(inner, 0);
  const std::vector<std::string> parts = absl::StrSplit(value, '@');
  uint64_t run = 0;
  uint32_t round = 0;
  if (parts.size() > 2 || !absl::SimpleAtoi(parts[0], &run) ||
      (parts.size() == 2 && !absl::SimpleAtoi(parts[1], &round))) {
    std::fprintf(stderr, "TESTING HOOK %s=\"%s\" is not N or N@ROUND: ignored\n", kTestingCorruptRunEnv, value);
    return TestingCorruptRunSink(inner, 0);
  }
  return TestingCorruptRunSink(inner, run, parts.size() == 2 ? static_cast<int64_t>(round) : -1);
}

absl::Status TestingCorruptRunSink::Send(const v1::MigrationPacket& packet) {
  if (target_ == 0 || corrupted_ || !packet.has_pages()) return inner_.Send(packet);
  if (round_ >= 0 && packet.pages().round() != static_cast<uint32_t>(round_)) return inner_.Send(packet);
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
