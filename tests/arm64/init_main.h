// The main() of a GoogleTest binary that runs as /init of a nested-KVM boot.
//
// Link //tests/arm64:init_main instead of gtest_main. The binary then works two ways:
//  - As PID 1 inside `tools/nested/run_nested.sh` (an arm64 Linux under qemu-system-aarch64):
//    it mounts devtmpfs on /dev, proc on /proc and sysfs on /sys, makes /dev/console its
//    stdin/stdout/stderr, runs the tests, exports the gtest XML report to the host (see
//    ExportFile), prints the sentinel line
//        VEXSTATE-INIT-EXIT <status>
//    (0 = all tests passed) and powers the machine off. PID 1 must never exit: the kernel
//    panics when init dies ("Attempted to kill init!").
//  - Otherwise (e.g. under qemu-aarch64-static, or natively): exactly like gtest_main.
//
// The harness passes the QEMU -cpu model as the environment variable VEXSTATE_NESTED_CPU
// (a kernel command-line `name=value` that the kernel hands to init as environment).
//
// Not thread-safe: call these from the test's main thread only.
#ifndef VEXSTATE_TESTS_ARM64_INIT_MAIN_H_
#define VEXSTATE_TESTS_ARM64_INIT_MAIN_H_

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace vexstate::nested {

// The sentinel the harness waits for; followed by a space and the decimal exit status.
inline constexpr absl::string_view kExitSentinel = "VEXSTATE-INIT-EXIT";

// Directory (inside the nested boot) that holds the files given to the harness with --file.
inline constexpr absl::string_view kImportDir = "/files";

// True when this process is /init (PID 1) of a nested boot.
bool RunningAsInit();

// The QEMU -cpu model of the nested boot (VEXSTATE_NESTED_CPU), or "" outside it.
std::string NestedCpuModel();

// Hands `contents` to the host as the file `name` ([A-Za-z0-9._-]+, no '/').
// As PID 1: writes it to the console, framed and base64-encoded with its size and POSIX
// `cksum`, so the harness can rebuild it in its --export-dir and detect any corruption (e.g.
// a kernel message interleaved with a line). Otherwise: writes it to
// $TEST_UNDECLARED_OUTPUTS_DIR/<name> (Bazel keeps those files), or fails if that is unset.
absl::Status ExportFile(absl::string_view name, absl::string_view contents);

}  // namespace vexstate::nested

#endif  // VEXSTATE_TESTS_ARM64_INIT_MAIN_H_
