// main() for GoogleTest binaries that run as /init of a nested-KVM boot; see init_main.h.
#include "tests/arm64/init_main.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gtest/gtest.h"

namespace vexstate::nested {
namespace {

// Where the gtest XML report goes inside the nested boot before it is exported.
constexpr char kReportPath[] = "/tmp/gtest-report.xml";
// Base64 characters per exported line: short enough that a line is rarely split by a
// kernel message, and the harness rejects the file (cksum) when one is.
constexpr size_t kExportLineChars = 76;

// POSIX `cksum` (IEEE Std 1003.1, cksum: CRC-32 with polynomial 0x04C11DB7, MSB first,
// over the data and then the length in as few bytes as needed, least significant first,
// complemented), so the host can check an exported file with the stock `cksum` tool.
uint32_t PosixCksum(absl::string_view data) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i << 24;
      for (int bit = 0; bit < 8; ++bit) c = (c & 0x80000000u) ? (c << 1) ^ 0x04C11DB7u : c << 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0;
  auto feed = [&](uint8_t byte) { crc = (crc << 8) ^ table[(crc >> 24) ^ byte]; };
  for (unsigned char byte : data) feed(byte);
  for (uint64_t n = data.size(); n != 0; n >>= 8) feed(static_cast<uint8_t>(n & 0xff));
  return ~crc;
}

std::string Base64(absl::string_view data) {
  static constexpr char kAlphabet[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  for (size_t i = 0; i < data.size(); i += 3) {
    const size_t n = std::min<size_t>(3, data.size() - i);
    uint32_t v = static_cast<uint8_t>(data[i]) << 16;
    if (n > 1) v |= static_cast<uint8_t>(data[i + 1]) << 8;
    if (n > 2) v |= static_cast<uint8_t>(data[i + 2]);
    out += kAlphabet[(v >> 18) & 63];
    out += kAlphabet[(v >> 12) & 63];
    out += n > 1 ? kAlphabet[(v >> 6) & 63] : '=';
    out += n > 2 ? kAlphabet[v & 63] : '=';
  }
  return out;
}

bool ValidExportName(absl::string_view name) {
  if (name.empty() || name == "." || name == "..") return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// Mounting is best effort: a test that needs /proc fails on its own with a clearer message
// than init could give, and the sentinel must still be printed.
void MountOrWarn(const char* source, const char* target, const char* type) {
  mkdir(target, 0755);  // usually present in the cpio; EEXIST is fine
  if (mount(source, target, type, 0, nullptr) != 0 && errno != EBUSY) {
    std::fprintf(stderr, "init: mount %s on %s: %s\n", type, target, std::strerror(errno));
  }
}

// Makes /dev/console fds 0, 1 and 2. The kernel opened it for init already when the cpio has
// a /dev/console node; reopening after devtmpfs is mounted also covers a cpio without one.
void ReopenConsole() {
  const int fd = open("/dev/console", O_RDWR | O_NOCTTY);
  if (fd < 0) return;  // nothing to report to; keep whatever the kernel gave us
  for (int target = 0; target <= 2; ++target) dup2(fd, target);
  if (fd > 2) close(fd);
}

void SetUpAsInit() {
  MountOrWarn("devtmpfs", "/dev", "devtmpfs");  // CONFIG_DEVTMPFS_MOUNT is off in Debian's arm64
  MountOrWarn("proc", "/proc", "proc");
  MountOrWarn("sysfs", "/sys", "sysfs");
  mkdir("/tmp", 01777);
  ReopenConsole();
  // The kernel starts init with only HOME=/ and TERM=linux (plus command-line name=value).
  setenv("PATH", "/bin:/sbin:/usr/bin:/usr/sbin", /*overwrite=*/0);
  setenv("TEST_TMPDIR", "/tmp", /*overwrite=*/0);
}

// write(2) until done: a signal or a short write must not lose the sentinel.
void WriteAll(int fd, absl::string_view text) {
  while (!text.empty()) {
    const ssize_t n = write(fd, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
    text.remove_prefix(static_cast<size_t>(n));
  }
}

[[noreturn]] void PowerOff(int status) {
  std::fflush(stdout);
  std::fflush(stderr);
  // On a line of its own even if the last test output did not end with a newline.
  WriteAll(STDOUT_FILENO, absl::StrFormat("\n%s %d\n", kExitSentinel, status));
  // The UART sends asynchronously: without draining, power-off can cut the console's tail
  // (and with it the sentinel).
  tcdrain(STDOUT_FILENO);
  sync();
  reboot(RB_POWER_OFF);
  // reboot() only returns on error; init must not exit, so wait for the harness's timeout.
  std::fprintf(stderr, "init: reboot(RB_POWER_OFF): %s\n", std::strerror(errno));
  for (;;) pause();
}

int RunAsInit(int argc, char** argv) {
  SetUpAsInit();
  // Before InitGoogleTest: it installs the XML listener, and argv may still override these.
  // The console is a tty, but the harness parses it: no colour escapes.
  GTEST_FLAG_SET(output, absl::StrCat("xml:", kReportPath));
  GTEST_FLAG_SET(color, "no");
  testing::InitGoogleTest(&argc, argv);
  const int status = RUN_ALL_TESTS();
  std::ifstream report(kReportPath, std::ios::binary);
  if (report) {
    std::stringstream buffer;
    buffer << report.rdbuf();
    const absl::Status exported = ExportFile("test.xml", buffer.str());
    if (!exported.ok()) std::fprintf(stderr, "init: %s\n", exported.ToString().c_str());
  } else {
    std::fprintf(stderr, "init: gtest wrote no report at %s\n", kReportPath);
  }
  PowerOff(status);
}

}  // namespace

bool RunningAsInit() { return getpid() == 1; }

std::string NestedCpuModel() {
  const char* cpu = std::getenv("VEXSTATE_NESTED_CPU");
  return cpu != nullptr ? cpu : "";
}

absl::Status ExportFile(absl::string_view name, absl::string_view contents) {
  if (!ValidExportName(name)) {
    return absl::InvalidArgumentError(
        absl::StrFormat("ExportFile: name \"%s\" must match [A-Za-z0-9._-]+", name));
  }
  if (!RunningAsInit()) {
    const char* dir = std::getenv("TEST_UNDECLARED_OUTPUTS_DIR");
    if (dir == nullptr) {
      return absl::FailedPreconditionError(absl::StrFormat(
          "ExportFile(%s): not /init of a nested boot and TEST_UNDECLARED_OUTPUTS_DIR is unset",
          name));
    }
    const std::string path = absl::StrCat(dir, "/", name);
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(contents.data(), contents.size());
    out.close();
    if (!out) return absl::InternalError(absl::StrFormat("ExportFile: cannot write %s", path));
    return absl::OkStatus();
  }
  // Framing read by tools/nested/run_nested.sh (extract_exports).
  const std::string encoded = Base64(contents);
  std::fflush(stdout);
  std::printf("\nVEXSTATE-FILE-BEGIN name=%s size=%zu cksum=%u\n", std::string(name).c_str(),
              contents.size(), PosixCksum(contents));
  for (size_t i = 0; i < encoded.size(); i += kExportLineChars) {
    std::printf("VXF %s\n", encoded.substr(i, kExportLineChars).c_str());
  }
  std::printf("VEXSTATE-FILE-END name=%s\n", std::string(name).c_str());
  std::fflush(stdout);
  if (std::ferror(stdout)) {
    return absl::UnavailableError(absl::StrFormat("ExportFile(%s): console write failed", name));
  }
  return absl::OkStatus();
}

}  // namespace vexstate::nested

int main(int argc, char** argv) {
  if (vexstate::nested::RunningAsInit()) return vexstate::nested::RunAsInit(argc, argv);
  testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
