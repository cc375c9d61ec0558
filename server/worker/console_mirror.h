// ConsoleMirror: a copy of every byte the guest writes to its witness console, sent as one UDP
// datagram per byte to an IPv4 address on this host, so that a benchmark can timestamp the
// guest's heartbeat on arrival (bench/sections/migration.py, restore.py). QEMU's
// `-chardev udp` serial port sends its bytes the same way, so both stacks are read alike.
//
// Off unless the environment names a destination: VEXSTATE_CONSOLE_UDP=IPV4:PORT, set on a
// vexd and inherited by its workers (a benchmark gives the source and the destination vexd
// different ports). Best effort by design: a send that fails or would block is dropped, so the
// guest never waits for the reader; the console's own reports do not depend on it.
//
// Thread-safety: OnPortIo/OnMmio may be called concurrently by vCPU threads (one sendto each).
#ifndef VEXSTATE_SERVER_WORKER_CONSOLE_MIRROR_H_
#define VEXSTATE_SERVER_WORKER_CONSOLE_MIRROR_H_

#include <netinet/in.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"

namespace vexstate::worker {

inline constexpr char kConsoleMirrorEnv[] = "VEXSTATE_CONSOLE_UDP";

class ConsoleMirror {
 public:
  // A mirror to `destination` ("IPV4:PORT"), or INVALID_ARGUMENT naming what is wrong.
  static absl::StatusOr<std::unique_ptr<ConsoleMirror>> Create(const std::string& destination);
  ~ConsoleMirror();
  ConsoleMirror(const ConsoleMirror&) = delete;
  ConsoleMirror& operator=(const ConsoleMirror&) = delete;

  // Forward console writes (x86_64 COM1 data port, arm64 console MMIO byte); ignore the rest.
  void OnPortIo(uint16_t port, bool is_write, const uint8_t* data, uint32_t size);
  void OnMmio(uint64_t gpa, bool is_write, const uint8_t* data, uint32_t len);

 private:
  ConsoleMirror(int fd, sockaddr_in destination) : fd_(fd), destination_(destination) {}
  void Send(uint8_t byte);

  const int fd_;
  const sockaddr_in destination_;
};

// The mirror the environment asks for: nullptr when VEXSTATE_CONSOLE_UDP is unset; an error
// when it is set but unusable (the worker reports it rather than silently not mirroring).
absl::StatusOr<std::unique_ptr<ConsoleMirror>> ConsoleMirrorFromEnvironment();

}  // namespace vexstate::worker

#endif  // VEXSTATE_SERVER_WORKER_CONSOLE_MIRROR_H_
