// The replay corpus's expectation files, without KVM: parsing, formatting, and the exact
// matching that makes a replay fail on a missing, duplicated or different report.
#include "tests/replay/expectation.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "guests/common/witness_abi.h"

namespace vexstate::replay {
namespace {

using ::testing::HasSubstr;

constexpr char kMachineCheck[] =
    "# x86_mce_bank3: an uncorrected #MC pending at capture\n"
    "\n"
    "VEX EXC cpu=0 seq=1 vec=0x12\n"
    "VEX MCE cpu=0 seq=1 mcg_status=0x5 banks=1\n"
    "VEX MCB cpu=0 seq=1 bank=3 status=0xbc0000000000009f addr=0x12345000 misc=0x86\n";

Expectation Parse(const std::string& text) {
  absl::StatusOr<Expectation> e = ParseExpectation(text, "test.expect");
  EXPECT_TRUE(e.ok()) << e.status();
  return e.ok() ? *e : Expectation{};
}

WitnessReport Report(uint32_t vcpu, const std::string& line) {
  WitnessReport r;
  EXPECT_TRUE(ParseWitnessLine(line, &r).ok()) << line;
  r.vcpu = vcpu;
  return r;
}

// What the guest prints for kMachineCheck (with the fields the file does not compare).
std::vector<WitnessReport> MachineCheckReports() {
  return {
      Report(0, "VEX EXC cpu=0 seq=1 vec=0x12 err=0x0 cr2=0x0 rip=0x100a3c"),
      Report(0, "VEX MCE cpu=0 seq=1 mcg_status=0x5 banks=1"),
      Report(0, "VEX MCB cpu=0 seq=1 bank=3 status=0xbc0000000000009f addr=0x12345000 misc=0x86"),
  };
}

TEST(Expectation, ParsesReportsAndControls) {
  Expectation e = Parse(std::string("control hold_mask=0 heartbeat_ms=0x10\n") + kMachineCheck);
  ASSERT_EQ(e.controls.size(), 2u);
  EXPECT_EQ(e.controls[0].field, "hold_mask");
  EXPECT_EQ(e.controls[0].offset, uint64_t{VEX_CTL_HOLD_MASK});
  EXPECT_EQ(e.controls[0].value, 0u);
  EXPECT_EQ(e.controls[1].offset, uint64_t{VEX_CTL_HEARTBEAT_MS});
  EXPECT_EQ(e.controls[1].value, 16u);
  ASSERT_EQ(e.reports.size(), 3u);
  EXPECT_EQ(e.reports[2].kind, "MCB");
  EXPECT_EQ(e.reports[2].vcpu, 0u);
  EXPECT_EQ(e.reports[2].line, 6);
  ASSERT_EQ(e.reports[2].fields.size(), 5u);
  EXPECT_EQ(e.reports[2].fields[2], (std::pair<std::string, uint64_t>("status", 0xbc0000000000009full)));
  EXPECT_THAT(e.comments, ::testing::ElementsAre("x86_mce_bank3: an uncorrected #MC pending at capture"));
}

TEST(Expectation, FormatParsesBack) {
  Expectation e = Parse(std::string("control hold_mask=0\n") + kMachineCheck);
  const std::string text = FormatExpectation(e);
  EXPECT_THAT(text, HasSubstr("control hold_mask=0\n"));
  EXPECT_THAT(text, HasSubstr("VEX MCB cpu=0 seq=1 bank=3 status=0xbc0000000000009f addr=0x12345000 misc=0x86\n"));
  Expectation again = Parse(text);
  EXPECT_EQ(FormatExpectation(again), text);
}

TEST(Expectation, ParseErrorsNameFileAndLine) {
  const std::pair<std::string, std::string> bad[] = {
      {"VEX EXC vec=0x12\n", "test.expect:1: the report has no cpu="},
      {"\nVEX EXC cpu=0 vec=twelve\n", "test.expect:2: \"vec=twelve\" is not key=value"},
      {"VEX EXC cpu=0 vec\n", "\"vec\" is not key=value"},
      {"control hold=0\n", "test.expect:1: unknown control field \"hold\" (known: hold_mask, heartbeat_ms)"},
      {"control\n", "control line without a field"},
      {"EXC cpu=0 vec=0x12\n", "neither a \"control\" line nor"},
  };
  for (const auto& [text, message] : bad) {
    absl::StatusOr<Expectation> e = ParseExpectation(text, "test.expect");
    EXPECT_EQ(e.status().code(), absl::StatusCode::kInvalidArgument) << text;
    EXPECT_THAT(std::string(e.status().message()), HasSubstr(message)) << text;
  }
}

TEST(Expectation, ExactMatchPasses) { EXPECT_TRUE(MatchReports(Parse(kMachineCheck), MachineCheckReports()).ok()); }

TEST(Expectation, MissingReportFails) {
  std::vector<WitnessReport> reports = MachineCheckReports();
  reports.pop_back();
  absl::Status s = MatchReports(Parse(kMachineCheck), reports);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(s.message()), HasSubstr("vCPU 0: report 3 missing: expected \"VEX MCB cpu=0"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("(line 5)"));
}

TEST(Expectation, DuplicateDeliveryFails) {
  std::vector<WitnessReport> reports = MachineCheckReports();
  reports.push_back(Report(0, "VEX EXC cpu=0 seq=2 vec=0x12 err=0x0 cr2=0x0 rip=0x100a3c"));
  absl::Status s = MatchReports(Parse(kMachineCheck), reports);
  EXPECT_THAT(std::string(s.message()), HasSubstr("report 4 not expected: the guest said \"VEX EXC cpu=0 seq=2"));
}

TEST(Expectation, DifferentValueFails) {
  std::vector<WitnessReport> reports = MachineCheckReports();
  reports[2] = Report(0, "VEX MCB cpu=0 seq=1 bank=3 status=0xbc0000000000009f addr=0x12346000 misc=0x86");
  absl::Status s = MatchReports(Parse(kMachineCheck), reports);
  EXPECT_THAT(std::string(s.message()), HasSubstr("report 3: addr=0x12346000, expected 0x12345000 (line 5)"));
}

TEST(Expectation, MissingFieldFails) {
  std::vector<WitnessReport> reports = MachineCheckReports();
  reports[2] = Report(0, "VEX MCB cpu=0 seq=1 bank=3 status=0xbc0000000000009f misc=0x86");
  EXPECT_THAT(std::string(MatchReports(Parse(kMachineCheck), reports).message()), HasSubstr("no addr="));
}

TEST(Expectation, OtherKindFails) {
  std::vector<WitnessReport> reports = MachineCheckReports();
  reports[1] = Report(0, "VEX HOLD cpu=0 vec=0x12");
  EXPECT_THAT(std::string(MatchReports(Parse(kMachineCheck), reports).message()),
              HasSubstr("report 2: expected a MCE (line 4), the guest said \"VEX HOLD"));
}

TEST(Expectation, ReportOnAnotherVcpuFails) {
  std::vector<WitnessReport> reports = MachineCheckReports();
  for (WitnessReport& r : reports) r.vcpu = 1;
  absl::Status s = MatchReports(Parse(kMachineCheck), reports);
  EXPECT_THAT(std::string(s.message()), HasSubstr("vCPU 0: report 1 missing"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("vCPU 1: report 1 not expected"));
}

TEST(Expectation, OrderBetweenVcpusIsFreeWithinAVcpuIsNot) {
  Expectation e = Parse(
      "VEX EXC cpu=0 seq=1 vec=0xe cr2=0xa000\n"
      "VEX EXC cpu=1 seq=1 vec=0x12\n"
      "VEX MCB cpu=1 seq=1 bank=5\n");
  std::vector<WitnessReport> interleaved = {
      Report(1, "VEX EXC cpu=1 seq=1 vec=0x12"),
      Report(0, "VEX EXC cpu=0 seq=1 vec=0xe cr2=0xa000"),
      Report(1, "VEX MCB cpu=1 seq=1 bank=5"),
  };
  EXPECT_TRUE(MatchReports(e, interleaved).ok());
  std::swap(interleaved[0], interleaved[2]);
  EXPECT_FALSE(MatchReports(e, interleaved).ok());
}

}  // namespace
}  // namespace vexstate::replay
