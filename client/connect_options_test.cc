// Connection options: target syntax, token files, and which default wins.
#include "client/connect_options.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <map>
#include <string>

#include "absl/cleanup/cleanup.h"
#include "gtest/gtest.h"

namespace vexstate::client {
namespace {

Environment FakeEnvironment(std::map<std::string, std::string> vars,
                            bool is_root = false) {
  Environment env;
  env.get = [vars](const char* name) -> std::optional<std::string> {
    auto it = vars.find(name);
    if (it == vars.end()) return std::nullopt;
    return it->second;
  };
  env.is_root = is_root;
  return env;
}

std::string WriteFile(const std::string& name, const std::string& contents) {
  std::string path = std::string(getenv("TEST_TMPDIR")) + "/" + name;
  std::ofstream(path) << contents;
  return path;
}

TEST(GrpcTarget, MapsBothSchemes) {
  EXPECT_EQ(*GrpcTarget("unix:/var/lib/vexstate/vexd.sock"),
            "unix:/var/lib/vexstate/vexd.sock");
  EXPECT_EQ(*GrpcTarget("unix:rel/v.sock"), "unix:rel/v.sock");
  EXPECT_EQ(*GrpcTarget("tcp:127.0.0.1:7443"), "127.0.0.1:7443");
  EXPECT_EQ(*GrpcTarget("tcp:vex1.example:7443"), "vex1.example:7443");
  EXPECT_EQ(*GrpcTarget("tcp:[::1]:7443"), "[::1]:7443");
}

TEST(GrpcTarget, NamesWhatIsWrong) {
  const char* kExpected = " (expected unix:PATH or tcp:HOST:PORT)";
  EXPECT_EQ(GrpcTarget("unix:").status().message(),
            std::string("target 'unix:': empty socket path") + kExpected);
  const std::string long_path = "unix:/" + std::string(107, 'x');
  EXPECT_EQ(GrpcTarget(long_path).status().message(),
            "target '" + long_path +
                "': the socket path has 108 bytes; a Unix socket path holds at "
                "most 107" +
                kExpected);
  EXPECT_TRUE(GrpcTarget("unix:/" + std::string(106, 'x')).ok());
  EXPECT_EQ(GrpcTarget("http://x").status().message(),
            std::string("target 'http://x': unknown scheme") + kExpected);
  EXPECT_EQ(GrpcTarget("tcp:host").status().message(),
            std::string("target 'tcp:host': no port") + kExpected);
  EXPECT_EQ(GrpcTarget("tcp::80").status().message(),
            std::string("target 'tcp::80': empty host") + kExpected);
  EXPECT_EQ(GrpcTarget("tcp:h:0").status().message(),
            std::string("target 'tcp:h:0': bad port '0'") + kExpected);
  EXPECT_EQ(GrpcTarget("tcp:h:99999").status().message(),
            std::string("target 'tcp:h:99999': bad port '99999'") + kExpected);
  EXPECT_EQ(GrpcTarget("tcp:::1:80").status().message(),
            std::string("target 'tcp:::1:80': an IPv6 host needs brackets, "
                        "e.g. tcp:[::1]:7443") +
                kExpected);
}

TEST(ParseTokenFile, FirstWordOfFirstRealLine) {
  EXPECT_EQ(
      *ParseTokenFile("# vexd tokens\n\n  s3cret operator admin\nv viewer\n"),
      "s3cret");
  EXPECT_EQ(*ParseTokenFile("tok"), "tok");
  EXPECT_EQ(*ParseTokenFile("\ttok\r\n"), "tok");
  EXPECT_EQ(ParseTokenFile("# only a comment\n \n").status().message(),
            "no token (only blank or comment lines)");
}

TEST(ResolveConnectOptions, DefaultTargetFollowsVexdStateDir) {
  EXPECT_EQ(
      ResolveConnectOptions({}, FakeEnvironment({}, /*is_root=*/true))->target,
      "unix:/var/lib/vexstate/vexd.sock");
  EXPECT_EQ(ResolveConnectOptions(
                {}, FakeEnvironment({{"XDG_RUNTIME_DIR", "/run/user/1000"}}))
                ->target,
            "unix:/run/user/1000/vexstate/vexd.sock");
  // Root ignores XDG_RUNTIME_DIR, as vexd does.
  EXPECT_EQ(ResolveConnectOptions(
                {}, FakeEnvironment({{"XDG_RUNTIME_DIR", "/run/user/0"}}, true))
                ->target,
            "unix:/var/lib/vexstate/vexd.sock");
}

TEST(ResolveConnectOptions, HostFromEnvironment) {
  EXPECT_EQ(
      ResolveConnectOptions({}, FakeEnvironment({{"VEXSTATE_HOST", "tcp:h:1"}}))
          ->target,
      "tcp:h:1");
  EXPECT_EQ(ResolveConnectOptions(
                {}, FakeEnvironment({{"VEXSTATE_HOST", "/tmp/v.sock"}}))
                ->target,
            "unix:/tmp/v.sock");
  ConnectOptions explicit_target;
  explicit_target.target = "unix:/x.sock";
  EXPECT_EQ(
      ResolveConnectOptions(explicit_target,
                            FakeEnvironment({{"VEXSTATE_HOST", "tcp:h:1"}}))
          ->target,
      "unix:/x.sock");
  EXPECT_EQ(
      ResolveConnectOptions({}, FakeEnvironment({{"VEXSTATE_HOST", "tcp:h"}}))
          .status()
          .code(),
      absl::StatusCode::kInvalidArgument);
}

TEST(ResolveConnectOptions, TokenPrecedence) {
  const std::string file = WriteFile("token_a", "from-file operator\n");
  const std::string env_file = WriteFile("token_b", "from-env-file\n");
  auto env = FakeEnvironment(
      {{"VEXSTATE_TOKEN", "from-env"}, {"VEXSTATE_TOKEN_FILE", env_file}});
  ConnectOptions options;
  options.token = "from-flag";
  options.token_file = file;
  EXPECT_EQ(ResolveConnectOptions(options, env)->token, "from-flag");
  options.token.clear();
  EXPECT_EQ(ResolveConnectOptions(options, env)->token, "from-file");
  options.token_file.clear();
  EXPECT_EQ(ResolveConnectOptions(options, env)->token, "from-env");
  EXPECT_EQ(ResolveConnectOptions(
                options, FakeEnvironment({{"VEXSTATE_TOKEN_FILE", env_file}}))
                ->token,
            "from-env-file");
  options.use_environment = false;
  EXPECT_EQ(ResolveConnectOptions(options, env)->token, "");
}

TEST(ResolveConnectOptions, LocalTokensFileOnlyForTheDefaultTarget) {
  // Short enough for a socket path (TEST_TMPDIR may not be).
  char dir[] = "/tmp/vexctl-runtime-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string runtime = dir;
  ASSERT_EQ(mkdir((runtime + "/vexstate").c_str(), 0700), 0);
  const std::string tokens = runtime + "/vexstate/tokens";
  std::ofstream(tokens) << "# vexd\nlocal-op operator\nlocal-v viewer\n";
  absl::Cleanup cleanup = [&] {
    unlink(tokens.c_str());
    rmdir((runtime + "/vexstate").c_str());
    rmdir(runtime.c_str());
  };
  auto env = FakeEnvironment({{"XDG_RUNTIME_DIR", runtime}});
  EXPECT_EQ(DefaultTokensFile(env), runtime + "/vexstate/tokens");
  EXPECT_EQ(ResolveConnectOptions({}, env)->token, "local-op");
  ConnectOptions remote;
  remote.target = "tcp:elsewhere:7443";
  EXPECT_EQ(ResolveConnectOptions(remote, env)->token, "");
  // No readable tokens file: no token, no error.
  EXPECT_EQ(ResolveConnectOptions(
                {}, FakeEnvironment({{"XDG_RUNTIME_DIR", "/nonexistent"}}))
                ->token,
            "");
}

TEST(ResolveConnectOptions, FileErrorsNameTheFile) {
  ConnectOptions options;
  options.token_file = "/nonexistent/token";
  absl::StatusOr<ConnectOptions> missing =
      ResolveConnectOptions(options, FakeEnvironment({}));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("/nonexistent/token"),
            absl::string_view::npos);

  options.token_file = WriteFile("empty_token", "# nothing\n");
  absl::StatusOr<ConnectOptions> empty =
      ResolveConnectOptions(options, FakeEnvironment({}));
  EXPECT_EQ(empty.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(empty.status().message(),
            "token file " + options.token_file +
                ": no token (only blank or comment lines)");
}

TEST(ResolveConnectOptions, MutualTlsNeedsCertAndKey) {
  ConnectOptions options;
  options.tls_cert_file = "c.pem";
  EXPECT_EQ(
      ResolveConnectOptions(options, FakeEnvironment({})).status().message(),
      "mutual TLS needs both a certificate and its key (--tls-cert and "
      "--tls-key)");
}

}  // namespace
}  // namespace vexstate::client
