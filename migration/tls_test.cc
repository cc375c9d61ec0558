// Loading TLS material: tools/make_certs.sh output loads; every bad file is named.
#include "migration/tls.h"

#include <cstdlib>
#include <fstream>
#include <string>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vexstate::migration {
namespace {

using ::testing::HasSubstr;

std::string MakeCerts(const std::string& name) {
  const std::string dir = std::string(getenv("TEST_TMPDIR")) + "/" + name;
  const std::string command = "tools/make_certs.sh " + dir + " >/dev/null";
  EXPECT_EQ(std::system(command.c_str()), 0) << command;
  return dir;
}

void WriteFile(const std::string& path, const std::string& contents) {
  std::ofstream out(path, std::ios::trunc);
  out << contents;
}

TEST(Tls, MakeCertsOutputLoadsForBothRoles) {
  const std::string dir = MakeCerts("certs");
  for (const char* role : {"server", "client"}) {
    absl::StatusOr<TlsPem> tls = LoadTls(TlsFilesIn(dir, role));
    ASSERT_TRUE(tls.ok()) << role << ": " << tls.status();
    EXPECT_THAT(tls->cert, HasSubstr("BEGIN CERTIFICATE"));
    EXPECT_NE(ServerTlsCredentials(*tls), nullptr);
    EXPECT_NE(ClientTlsCredentials(*tls), nullptr);
  }
}

TEST(Tls, MakeCertsIsIdempotent) {
  const std::string dir = MakeCerts("again");
  std::ifstream first(dir + "/server.pem");
  std::string before((std::istreambuf_iterator<char>(first)), {});
  MakeCerts("again");
  std::ifstream second(dir + "/server.pem");
  std::string after((std::istreambuf_iterator<char>(second)), {});
  EXPECT_EQ(before, after) << "a valid certificate is kept";
}

TEST(Tls, BadFilesAreNamed) {
  const std::string dir = MakeCerts("bad");
  TlsFiles files = TlsFilesIn(dir, "server");
  TlsFiles missing = files;
  missing.key = dir + "/nope.key";
  EXPECT_EQ(LoadTls(missing).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(LoadTls(missing).status().message()), HasSubstr("nope.key"));

  TlsFiles garbage = files;
  garbage.cert = dir + "/garbage.pem";
  WriteFile(garbage.cert, "not a certificate\n");
  EXPECT_EQ(LoadTls(garbage).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(LoadTls(garbage).status().message()), HasSubstr("garbage.pem"));

  TlsFiles mismatched = files;
  mismatched.key = dir + "/client.key";  // the client's key with the server's certificate
  EXPECT_THAT(std::string(LoadTls(mismatched).status().message()), HasSubstr("does not belong"));
}

}  // namespace
}  // namespace vexstate::migration
