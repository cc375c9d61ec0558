// vexd's log: one line per event on stderr, "vexd <UTC time>: <message>".
//
// Abseil 20220623 has no absl/log; this is the whole logging facility of vexd. Lines are
// written with a single fprintf, so lines from different threads never interleave.
#ifndef VEXSTATE_SERVER_LOGGING_H_
#define VEXSTATE_SERVER_LOGGING_H_

#include <cstdio>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace vexstate::vexd {

template <typename... Args>
void Log(const absl::FormatSpec<Args...>& format, const Args&... args) {
  const std::string when = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  const std::string line = absl::StrFormat("vexd %s: %s\n", when, absl::StrFormat(format, args...));
  std::fputs(line.c_str(), stderr);
}

}  // namespace vexstate::vexd

#endif  // VEXSTATE_SERVER_LOGGING_H_
