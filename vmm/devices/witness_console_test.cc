#include "vmm/devices/witness_console.h"

#include <string>

#include "gtest/gtest.h"

namespace vexstate {
namespace {

void Feed(WitnessConsole& console, uint32_t vcpu, const std::string& text) {
  for (char c : text) console.OnByte(vcpu, static_cast<uint8_t>(c));
}

TEST(ParseWitnessLine, HexDecimalAndNonNumericValues) {
  WitnessReport r;
  ASSERT_TRUE(ParseWitnessLine("VEX EXC cpu=1 seq=3 vec=0x12 err=0x0 arch=x86_64", &r).ok());
  EXPECT_EQ(r.kind, "EXC");
  EXPECT_EQ(r.Get("cpu"), 1u);
  EXPECT_EQ(r.Get("seq"), 3u);
  EXPECT_EQ(r.Get("vec"), 0x12u);
  EXPECT_FALSE(r.Has("arch"));
  EXPECT_EQ(r.Get("missing", 7), 7u);
}

TEST(ParseWitnessLine, RejectsNonReports) {
  WitnessReport r;
  EXPECT_FALSE(ParseWitnessLine("hello world", &r).ok());
  EXPECT_FALSE(ParseWitnessLine("VEX", &r).ok());
}

TEST(WitnessConsole, KeepsOneLineBufferPerVcpu) {
  WitnessConsole console;
  // Interleaved bytes from two vCPUs must not mix.
  std::string a = "VEX EXC cpu=0 vec=0xe\n", b = "VEX EXC cpu=1 vec=0x2\n";
  for (size_t i = 0; i < std::max(a.size(), b.size()); ++i) {
    if (i < a.size()) console.OnByte(0, a[i]);
    if (i < b.size()) console.OnByte(1, b[i]);
  }
  EXPECT_EQ(console.Find("EXC", 0, {{"vec", 0xe}}).size(), 1u);
  EXPECT_EQ(console.Find("EXC", 1, {{"vec", 0x2}}).size(), 1u);
  EXPECT_EQ(console.Find("EXC", 1, {{"vec", 0xe}}).size(), 0u);
}

TEST(WitnessConsole, TranscriptKeepsTheNewestBytesOnly) {
  WitnessConsole console;
  Feed(console, 0, std::string(5 * WitnessConsole::kTranscriptBytes, '.'));
  Feed(console, 0, "VEX READY cpu=0\n");
  const std::string transcript = console.Transcript();
  EXPECT_GE(transcript.size(), WitnessConsole::kTranscriptBytes);
  EXPECT_LT(transcript.size(), 2 * WitnessConsole::kTranscriptBytes);
  EXPECT_EQ(transcript.substr(transcript.size() - 16), "VEX READY cpu=0\n");
  EXPECT_EQ(console.heartbeats(), 5 * WitnessConsole::kTranscriptBytes);  // counted, not kept
}

TEST(WitnessConsole, CountsHeartbeatsOnlyOutsideLines) {
  WitnessConsole console;
  Feed(console, 0, "..VEX READY cpu=0 x=1.5\n.");
  EXPECT_EQ(console.heartbeats(), 3u);
  EXPECT_EQ(console.Find("READY").size(), 1u);
}

TEST(WitnessConsole, WaitForTimesOutWithConsoleTail) {
  WitnessConsole console;
  Feed(console, 0, "VEX READY cpu=0\n");
  auto result = console.WaitFor("EXC", std::nullopt, {}, 1, absl::Milliseconds(20));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_NE(result.status().message().find("VEX READY"), std::string::npos);
}

TEST(WitnessConsole, WaitForReturnsEarlyWhenAVcpuBreaks) {
  WitnessConsole console;
  console.OnVcpuStopped(0, absl::AbortedError("guest shutdown"));
  auto result = console.WaitFor("EXC", std::nullopt, {}, 1, absl::Seconds(30));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kAborted);
}

}  // namespace
}  // namespace vexstate
