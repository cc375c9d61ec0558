#include "server/worker/console_mirror.h"

#include <arpa/inet.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "guests/common/witness_abi.h"
#include "gtest/gtest.h"

namespace vexstate::worker {
namespace {

// A UDP socket on 127.0.0.1 with an ephemeral port: the benchmark's end of the mirror.
class Receiver {
 public:
  Receiver() {
    fd_ = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    EXPECT_EQ(bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof(address)), 0);
    socklen_t len = sizeof(address);
    EXPECT_EQ(getsockname(fd_, reinterpret_cast<sockaddr*>(&address), &len), 0);
    port_ = ntohs(address.sin_port);
  }
  ~Receiver() { close(fd_); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }

  // Every datagram that arrives within `timeout_ms` of the previous one, concatenated.
  std::string Drain(int timeout_ms = 200) {
    std::string bytes;
    pollfd p{fd_, POLLIN, 0};
    while (poll(&p, 1, timeout_ms) == 1) {
      char buffer[64];
      const ssize_t n = recv(fd_, buffer, sizeof(buffer), 0);
      if (n <= 0) break;
      bytes.append(buffer, n);
    }
    return bytes;
  }

 private:
  int fd_ = -1;
  uint16_t port_ = 0;
};

TEST(ConsoleMirror, SendsConsoleWritesOnly) {
  Receiver receiver;
  absl::StatusOr<std::unique_ptr<ConsoleMirror>> mirror = ConsoleMirror::Create(receiver.address());
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  uint8_t dot = '.', x = 'x', a = 'a', b = 'b';
  (*mirror)->OnPortIo(VEX_X86_CONSOLE_PORT, /*is_write=*/true, &dot, 1);
  (*mirror)->OnPortIo(VEX_X86_CONSOLE_PORT, /*is_write=*/false, &x, 1);  // a read: not console output
  (*mirror)->OnPortIo(VEX_X86_CONSOLE_PORT + 5, /*is_write=*/true, &x, 1);  // another port
  (*mirror)->OnMmio(VEX_ARM64_CONSOLE_MMIO, /*is_write=*/true, &a, 1);
  (*mirror)->OnMmio(VEX_ARM64_CONSOLE_MMIO + 8, /*is_write=*/true, &x, 1);
  (*mirror)->OnPortIo(VEX_X86_CONSOLE_PORT, /*is_write=*/true, &b, 1);
  EXPECT_EQ(receiver.Drain(), ".ab");
}

TEST(ConsoleMirror, NobodyListeningNeverBlocksOrFails) {
  std::string address;
  {
    Receiver gone;
    address = gone.address();
  }
  absl::StatusOr<std::unique_ptr<ConsoleMirror>> mirror = ConsoleMirror::Create(address);
  ASSERT_TRUE(mirror.ok()) << mirror.status();
  uint8_t dot = '.';
  for (int i = 0; i < 10000; ++i) (*mirror)->OnPortIo(VEX_X86_CONSOLE_PORT, true, &dot, 1);
}

TEST(ConsoleMirror, RejectsMalformedDestinations) {
  for (const char* bad : {"", "127.0.0.1", "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "localhost:9000",
                          "127.0.0.1:9x", "::1:9000"}) {
    absl::StatusOr<std::unique_ptr<ConsoleMirror>> mirror = ConsoleMirror::Create(bad);
    EXPECT_EQ(mirror.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    if (!mirror.ok()) EXPECT_NE(std::string(mirror.status().message()).find(kConsoleMirrorEnv), std::string::npos);
  }
}

TEST(ConsoleMirror, EnvironmentUnsetMeansNoMirror) {
  unsetenv(kConsoleMirrorEnv);
  absl::StatusOr<std::unique_ptr<ConsoleMirror>> none = ConsoleMirrorFromEnvironment();
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(*none, nullptr);
  setenv(kConsoleMirrorEnv, "not-an-address", 1);
  EXPECT_EQ(ConsoleMirrorFromEnvironment().status().code(), absl::StatusCode::kInvalidArgument);
  setenv(kConsoleMirrorEnv, "127.0.0.1:9", 1);
  absl::StatusOr<std::unique_ptr<ConsoleMirror>> some = ConsoleMirrorFromEnvironment();
  ASSERT_TRUE(some.ok());
  EXPECT_NE(*some, nullptr);
  unsetenv(kConsoleMirrorEnv);
}

}  // namespace
}  // namespace vexstate::worker
