#include "migration/testing_corrupt_run.h"

#include <string>
#include <vector>

#include "gtest/gtest.h"

namespace vexstate::migration {
namespace {

// Keeps what it is sent.
class CollectingSink final : public PacketSink {
 public:
  absl::Status Send(const v1::MigrationPacket& packet) override {
    packets.push_back(packet);
    return absl::OkStatus();
  }
  absl::StatusOr<v1::TransferResult> Finish() override { return v1::TransferResult(); }
  void Cancel() override {}
  std::vector<v1::MigrationPacket> packets;
};

// A batch of round `round` with one run per entry of `data` (an empty entry: an all-zero run).
v1::MigrationPacket Batch(uint32_t round, const std::vector<std::string>& data) {
  v1::MigrationPacket packet;
  packet.mutable_pages()->set_round(round);
  uint64_t gpa = 0;
  for (const std::string& d : data) {
    v1::PageRun* run = packet.mutable_pages()->add_runs();
    run->set_gpa(gpa += 0x1000);
    run->set_count(1);
    run->set_data(d);
    run->set_crc32c(7);
  }
  return packet;
}

// Where the sent packets differ from the originals: "packet.run" for each changed run.
std::vector<std::string> Changed(const std::vector<v1::MigrationPacket>& sent,
                                 const std::vector<v1::MigrationPacket>& original) {
  std::vector<std::string> changed;
  for (size_t p = 0; p < sent.size(); ++p) {
    for (int r = 0; r < sent[p].pages().runs_size(); ++r) {
      const v1::PageRun& a = sent[p].pages().runs(r);
      const v1::PageRun& b = original[p].pages().runs(r);
      if (a.SerializeAsString() == b.SerializeAsString()) continue;
      EXPECT_EQ(a.crc32c(), b.crc32c()) << "the CRC stays what the source sealed";
      EXPECT_EQ(a.data().size(), b.data().size());
      int bytes = 0;
      for (size_t i = 0; i < a.data().size(); ++i) bytes += a.data()[i] != b.data()[i];
      EXPECT_EQ(bytes, 1) << "one byte flipped";
      changed.push_back(std::to_string(p) + "." + std::to_string(r));
    }
  }
  return changed;
}

std::vector<std::string> SendAll(uint64_t run, int64_t round, const std::vector<v1::MigrationPacket>& packets) {
  CollectingSink inner;
  TestingCorruptRunSink sink(&inner, run, round);
  for (const v1::MigrationPacket& p : packets) EXPECT_TRUE(sink.Send(p).ok());
  EXPECT_EQ(inner.packets.size(), packets.size());
  return Changed(inner.packets, packets);
}

const std::vector<v1::MigrationPacket>& Stream() {
  static const auto* const kStream = new std::vector<v1::MigrationPacket>{
      Batch(0, {"aaaa", "", "bbbb"}),
      Batch(0, {"cccc"}),
      Batch(1, {"", "dddd", "eeee"}),
  };
  return *kStream;
}

TEST(TestingCorruptRunSink, OffPassesEverythingThrough) { EXPECT_TRUE(SendAll(0, -1, Stream()).empty()); }

TEST(TestingCorruptRunSink, CountsOnlyRunsWithDataOverTheStream) {
  EXPECT_EQ(SendAll(1, -1, Stream()), std::vector<std::string>{"0.0"});
  EXPECT_EQ(SendAll(2, -1, Stream()), std::vector<std::string>{"0.2"});
  EXPECT_EQ(SendAll(3, -1, Stream()), std::vector<std::string>{"1.0"});
  EXPECT_EQ(SendAll(4, -1, Stream()), std::vector<std::string>{"2.1"});
  EXPECT_TRUE(SendAll(6, -1, Stream()).empty()) << "past the last run: nothing";
}

TEST(TestingCorruptRunSink, RoundRestrictsTheCount) {
  EXPECT_EQ(SendAll(1, 1, Stream()), std::vector<std::string>{"2.1"});
  EXPECT_EQ(SendAll(2, 1, Stream()), std::vector<std::string>{"2.2"});
  EXPECT_TRUE(SendAll(1, 2, Stream()).empty());
}

}  // namespace
}  // namespace vexstate::migration
