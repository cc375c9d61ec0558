#include "migration/link_timeouts.h"

#include <cstdio>
#include <cstdlib>

#include "absl/strings/numbers.h"

namespace vexstate::migration {

LinkTimeouts ScaledLinkTimeouts(int scale) {
  LinkTimeouts timeouts;
  if (scale <= 1) return timeouts;
  timeouts.keepalive_time *= scale;
  timeouts.keepalive_timeout *= scale;
  timeouts.write_timeout *= scale;
  return timeouts;
}

const LinkTimeouts& MigrationLinkTimeouts() {
  static const LinkTimeouts timeouts = [] {
    const char* value = std::getenv(kLinkScaleEnv);
    if (value == nullptr || *value == '\0') return LinkTimeouts();
    int scale = 0;
    if (!absl::SimpleAtoi(value, &scale) || scale < 1 || scale > 1000) {
      std::fprintf(stderr, "%s=%s: not an integer in 1..1000; using the default link timeouts\n", kLinkScaleEnv,
                   value);
      return LinkTimeouts();
    }
    return ScaledLinkTimeouts(scale);
  }();
  return timeouts;
}

}  // namespace vexstate::migration
