// How long a migration link may stay silent before it is declared dead (data_service.h: HTTP/2
// keepalive on every migration channel, and the data stream's write watchdog).
//
// The defaults fail a cut link within seconds on real hosts. A host that is itself emulated
// (the nested arm64 tests: vexd inside qemu-system-aarch64 without acceleration) can stall a
// healthy process for longer than that, so the environment variable
// VEXSTATE_MIGRATION_LINK_SCALE=N (an integer, 1..1000) multiplies every timeout by N. vexd's
// workers inherit vexd's environment, so setting it for vexd covers both ends of a host.
#ifndef VEXSTATE_MIGRATION_LINK_TIMEOUTS_H_
#define VEXSTATE_MIGRATION_LINK_TIMEOUTS_H_

#include "absl/time/time.h"

namespace vexstate::migration {

inline constexpr char kLinkScaleEnv[] = "VEXSTATE_MIGRATION_LINK_SCALE";

struct LinkTimeouts {
  absl::Duration keepalive_time = absl::Seconds(1);     // a ping this often, also without calls
  absl::Duration keepalive_timeout = absl::Seconds(2);  // no answer within this closes the link
  absl::Duration write_timeout = absl::Seconds(5);      // one Write stuck this long cancels the stream
};

// The defaults scaled by `scale` (values below 1 count as 1).
LinkTimeouts ScaledLinkTimeouts(int scale);

// This process's timeouts: ScaledLinkTimeouts($VEXSTATE_MIGRATION_LINK_SCALE), read once. A value
// that is not an integer in 1..1000 is reported on stderr once and ignored.
const LinkTimeouts& MigrationLinkTimeouts();

}  // namespace vexstate::migration

#endif  // VEXSTATE_MIGRATION_LINK_TIMEOUTS_H_
