// RunInvocation: what vexctl prints and its exit status, against an in-process
// FakeVexd.
#include "client/run.h"

#include <algorithm>
#include <cstdlib>
#include <sstream>

#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "client/args.h"
#include "client/fake_vexd.h"
#include "client/format_json.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vexstate::client {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;

class RunTest : public testing::Test {
 protected:
  // Runs a vexctl command line (global flags included) against the fake vexd.
  int Run(const std::string& line, bool terminal = false) {
    out_.str("");
    err_.str("");
    std::vector<std::string> args =
        absl::StrSplit(line, ' ', absl::SkipEmpty());
    args.push_back("--host");
    args.push_back(vexd_.target());
    absl::StatusOr<Invocation> invocation = ParseArgs(args, "/");
    EXPECT_TRUE(invocation.ok()) << invocation.status();
    invocation->connect.use_environment = false;
    absl::StatusOr<VexClient> client = VexClient::Connect(invocation->connect);
    EXPECT_TRUE(client.ok()) << client.status();
    return RunInvocation(*invocation, *client, out_, err_, terminal);
  }

  FakeVexd vexd_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(RunTest, HumanOutputExitsZero) {
  EXPECT_EQ(Run("--token good-token pending vm1"), 0);
  EXPECT_THAT(out_.str(), StartsWith("vm1 (RUNNING, read -)\n"
                                     "  vCPU 0: #MC machine check pending; "));
  EXPECT_EQ(err_.str(), "");
}

TEST_F(RunTest, JsonIsOneParseableLine) {
  EXPECT_EQ(Run("--token good-token --json pending vm1"), 0);
  std::string json = out_.str();
  ASSERT_FALSE(json.empty());
  EXPECT_EQ(json.back(), '\n');
  json.pop_back();
  EXPECT_EQ(json.find('\n'), std::string::npos);
  v1::QueryPendingResponse response;
  ASSERT_TRUE(FromJson(json, &response).ok()) << json;
  EXPECT_EQ(response.vms(0).vcpus(0).x86_64().exception().vector(), 18u);
}

TEST_F(RunTest, RpcErrorIsCodeAndMessageExitOne) {
  EXPECT_EQ(Run("--token good-token vm show missing"), 1);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "vexctl: NOT_FOUND: no VM named 'missing'\n");
  EXPECT_EQ(Run("--token bad vm list --json"), 1);
  EXPECT_EQ(err_.str(),
            "vexctl: UNAUTHENTICATED: missing or unknown bearer token\n");
}

TEST_F(RunTest, EventsReplayThenStopOneLineEach) {
  EXPECT_EQ(Run("--token good-token events vm1"), 0);
  std::vector<std::string> lines = absl::StrSplit(out_.str(), '\n');
  ASSERT_EQ(lines.size(), 4u) << out_.str();  // three lines and the final ""
  EXPECT_EQ(lines[0], "-  vm1  injection  vCPU 0: event 1");
  EXPECT_EQ(lines[3], "");
  // vexctl cancelled the stream after the quiet period (vexd notices a moment
  // later).
  for (int i = 0; i < 200 && vexd_.cancelled_streams() == 0; ++i) {
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(vexd_.cancelled_streams(), 1);

  EXPECT_EQ(Run("--token good-token --json events vm1"), 0);
  lines = absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 3u);
  for (const std::string& line : lines) {
    v1::Event event;
    EXPECT_TRUE(FromJson(line, &event).ok()) << line;
  }
  EXPECT_THAT(lines[2], HasSubstr("\"sequence\":\"3\""));
}

TEST_F(RunTest, CreatePrintsTheVm) {
  EXPECT_EQ(Run("--token good-token vm create a --arch x86_64 --vcpus 1 "
                "--memory-mib 32"),
            0);
  EXPECT_THAT(out_.str(), HasSubstr("state                    CREATED\n"));
  EXPECT_THAT(out_.str(), HasSubstr("memory                   32 MiB\n"));
}

TEST_F(RunTest, MigrateLinePerProgressThenResultExitZero) {
  EXPECT_EQ(Run("--token good-token migrate vm1 --to tcp:10.77.0.2:7500"), 0);
  std::vector<std::string> lines = absl::StrSplit(out_.str(), '\n');
  ASSERT_GE(lines.size(), 6u) << out_.str();
  EXPECT_EQ(lines[0], "PREPARE");
  EXPECT_THAT(lines[1], StartsWith("PRECOPY round 1: sent 16.0 MiB, "
                                   "remaining 16.0 MiB, dirty 0.0 MiB/s"));
  EXPECT_EQ(lines[4], "COMPLETED");
  EXPECT_THAT(out_.str(), HasSubstr("outcome        COMPLETED\n"));
  EXPECT_THAT(out_.str(), HasSubstr("destination    tcp:10.77.0.2:7500\n"));
  EXPECT_THAT(out_.str(), HasSubstr("memory sha256  ab12\n"));
  EXPECT_EQ(err_.str(), "");
}

TEST_F(RunTest, MigrateOnATerminalRedrawsOneBar) {
  EXPECT_EQ(Run("--token good-token migrate vm1 --to tcp:h:7500", true), 0);
  const std::string& out = out_.str();
  std::string progress = out.substr(0, out.find("outcome"));
  // Each message redraws the same line; one newline ends the bar.
  EXPECT_EQ(std::count(progress.begin(), progress.end(), '\n'), 1) << out;
  EXPECT_EQ(std::count(progress.begin(), progress.end(), '\r'), 5) << out;
  EXPECT_THAT(progress, HasSubstr("\r\033[K[####################] "
                                  "COMPLETED"));
}

TEST_F(RunTest, MigrateJsonOneObjectPerMessage) {
  EXPECT_EQ(Run("--token good-token --json migrate vm1 --to tcp:h:7500"), 0);
  std::vector<std::string> lines =
      absl::StrSplit(out_.str(), '\n', absl::SkipEmpty());
  ASSERT_EQ(lines.size(), 5u) << out_.str();
  v1::MigrationProgress last;
  ASSERT_TRUE(FromJson(lines.back(), &last).ok()) << lines.back();
  EXPECT_EQ(last.result().outcome(), v1::MIGRATION_COMPLETED);
  EXPECT_EQ(last.result().memory_sha256(), "ab12");
}

TEST_F(RunTest, MigrateFailedExitsOneWithTheError) {
  EXPECT_EQ(Run("--token good-token migrate refused --to tcp:h:7500"), 1);
  EXPECT_THAT(out_.str(), HasSubstr("outcome        FAILED\n"));
  EXPECT_EQ(err_.str(),
            "vexctl: migration FAILED: FAILED_PRECONDITION: fewer MCE banks\n");
  EXPECT_EQ(Run("--token good-token migrate missing --to tcp:h:7500"), 1);
  EXPECT_EQ(out_.str(), "");
  EXPECT_EQ(err_.str(), "vexctl: NOT_FOUND: no VM named 'missing'\n");
}

TEST_F(RunTest, MigrateStatusAndCancel) {
  EXPECT_EQ(Run("--token good-token migrate-status vm1"), 0);
  EXPECT_THAT(out_.str(), HasSubstr("phase      PRECOPY\n"));
  EXPECT_EQ(Run("--token good-token migrate-cancel vm1"), 0);
  EXPECT_THAT(out_.str(), HasSubstr("phase      CANCELLED\n"));
}

}  // namespace
}  // namespace vexstate::client
