#include "server/worker/console_mirror.h"

#include <arpa/inet.h>
#include <errno.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "guests/common/witness_abi.h"

namespace vexstate::worker {

absl::StatusOr<std::unique_ptr<ConsoleMirror>> ConsoleMirror::Create(const std::string& destination) {
  const size_t colon = destination.rfind(':');
  sockaddr_in address{};
  address.sin_family = AF_INET;
  uint32_t port = 0;
  if (colon == std::string::npos || inet_pton(AF_INET, destination.substr(0, colon).c_str(), &address.sin_addr) != 1 ||
      !absl::SimpleAtoi(destination.substr(colon + 1), &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrFormat("%s=\"%s\": expected IPV4:PORT, e.g. 127.0.0.1:9000", kConsoleMirrorEnv, destination));
  }
  address.sin_port = htons(static_cast<uint16_t>(port));
  // Non-blocking: a slow reader loses bytes instead of stalling the vCPU thread.
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return absl::InternalError(absl::StrFormat("%s: socket(AF_INET, SOCK_DGRAM): %s", kConsoleMirrorEnv,
                                               std::strerror(errno)));
  }
  return std::unique_ptr<ConsoleMirror>(new ConsoleMirror(fd, address));
}

ConsoleMirror::~ConsoleMirror() { close(fd_); }

void ConsoleMirror::OnPortIo(uint16_t port, bool is_write, const uint8_t* data, uint32_t size) {
  if (is_write && port == VEX_X86_CONSOLE_PORT && size >= 1) Send(data[0]);
}

void ConsoleMirror::OnMmio(uint64_t gpa, bool is_write, const uint8_t* data, uint32_t len) {
  if (is_write && gpa == VEX_ARM64_CONSOLE_MMIO && len >= 1) Send(data[0]);
}

void ConsoleMirror::Send(uint8_t byte) {
  // Errors are dropped on purpose (see the header): ECONNREFUSED while nobody listens, EAGAIN.
  (void)sendto(fd_, &byte, 1, MSG_DONTWAIT, reinterpret_cast<const sockaddr*>(&destination_), sizeof(destination_));
}

absl::StatusOr<std::unique_ptr<ConsoleMirror>> ConsoleMirrorFromEnvironment() {
  const char* value = std::getenv(kConsoleMirrorEnv);
  if (value == nullptr || *value == '\0') return std::unique_ptr<ConsoleMirror>();
  return ConsoleMirror::Create(value);
}

}  // namespace vexstate::worker
