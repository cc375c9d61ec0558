#include "server/listen.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vexstate::vexd {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ParseListenAddress, UnixAndTcpForms) {
  absl::StatusOr<ListenAddress> unix_socket = ParseListenAddress("unix:/var/lib/vexstate/vexd.sock");
  ASSERT_TRUE(unix_socket.ok());
  EXPECT_EQ(unix_socket->kind, ListenAddress::Kind::kUnix);
  EXPECT_EQ(unix_socket->grpc_address, "unix:/var/lib/vexstate/vexd.sock");

  absl::StatusOr<ListenAddress> v4 = ParseListenAddress("tcp:127.0.0.1:7777");
  ASSERT_TRUE(v4.ok());
  EXPECT_TRUE(v4->loopback);
  EXPECT_EQ(v4->port, 7777);
  EXPECT_EQ(v4->grpc_address, "127.0.0.1:7777");
  absl::StatusOr<ListenAddress> v6 = ParseListenAddress("tcp:[::1]:0");
  ASSERT_TRUE(v6.ok());
  EXPECT_TRUE(v6->loopback);
  EXPECT_EQ(v6->grpc_address, "[::1]:0");
  EXPECT_TRUE(ParseListenAddress("tcp:localhost:1")->loopback);
  EXPECT_TRUE(ParseListenAddress("tcp:127.8.9.10:1")->loopback);
  EXPECT_FALSE(ParseListenAddress("tcp:0.0.0.0:1")->loopback);
  EXPECT_FALSE(ParseListenAddress("tcp:[::]:1")->loopback);
  EXPECT_FALSE(ParseListenAddress("tcp:10.0.0.1:1")->loopback);
  EXPECT_FALSE(ParseListenAddress("tcp:example.com:1")->loopback);

  for (const char* bad :
       {"unix:relative.sock", "tcp:127.0.0.1", "tcp:127.0.0.1:65536", "tcp::::1:5", "http://x", "tcp::80"}) {
    EXPECT_EQ(ParseListenAddress(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST(CredentialsFor, PlaintextBeyondLoopbackNeedsConsent) {
  TlsOptions none;
  EXPECT_TRUE(CredentialsFor(*ParseListenAddress("tcp:127.0.0.1:0"), none).ok());
  EXPECT_TRUE(CredentialsFor(*ParseListenAddress("unix:/x.sock"), none).ok());
  absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> refused =
      CredentialsFor(*ParseListenAddress("tcp:0.0.0.0:0"), none);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refused.status().message(), HasSubstr("--tls_cert"));
  TlsOptions insecure;
  insecure.insecure_tcp = true;
  EXPECT_TRUE(CredentialsFor(*ParseListenAddress("tcp:0.0.0.0:0"), insecure).ok());
  TlsOptions missing;
  missing.cert_file = "/nonexistent/cert.pem";
  missing.key_file = "/nonexistent/key.pem";
  EXPECT_EQ(CredentialsFor(*ParseListenAddress("tcp:0.0.0.0:0"), missing).status().code(), absl::StatusCode::kNotFound);
}

TEST(ValidateTlsOptions, PairsGoTogether) {
  TlsOptions cert_only;
  cert_only.cert_file = "c";
  EXPECT_FALSE(ValidateTlsOptions(cert_only).ok());
  TlsOptions ca_only;
  ca_only.client_ca_file = "ca";
  EXPECT_FALSE(ValidateTlsOptions(ca_only).ok());
  EXPECT_TRUE(ValidateTlsOptions(TlsOptions()).ok());
}

TEST(RepeatedFlagValues, CollectsEveryOccurrence) {
  const char* args[] = {"vexd",
                        "--listen=unix:/a.sock",
                        "--other",
                        "x",
                        "--listen",
                        "tcp:127.0.0.1:1,tcp:[::1]:2",
                        "-listen=unix:/b.sock",
                        "--listener=no",
                        "--",
                        "--listen=after-dashes"};
  EXPECT_THAT(RepeatedFlagValues(10, const_cast<char**>(args), "listen"),
              ElementsAre("unix:/a.sock", "tcp:127.0.0.1:1", "tcp:[::1]:2", "unix:/b.sock"));
}

}  // namespace
}  // namespace vexstate::vexd
