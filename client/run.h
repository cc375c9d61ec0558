// Carries out a parsed vexctl command line on a VexClient and prints the
// result.
//
// Output: human text (format_*.h) or, with --json, one line of JSON per
// response (format_json.h; events: one line per event; migrate: one line per
// progress message, the last one carrying the result). Errors: "vexctl:
// <CODE>: <message>" on `err`, CODE being the gRPC status name (NOT_FOUND,
// UNAUTHENTICATED, ...); a migration that ends FAILED or CANCELLED: "vexctl:
// migration <OUTCOME>: <error>".
//
// migrate's human progress: with `out_is_terminal`, one bar redrawn in place
// ("\r" and erase-line), else one line per progress message; then the result.
//
// Contract: blocks until the call ends (events --follow: until vexd ends the
// stream; migrate: until the migration ends). Thread-compatible: one
// RunInvocation per pair of streams at a time.
#ifndef VEXSTATE_CLIENT_RUN_H_
#define VEXSTATE_CLIENT_RUN_H_

#include <ostream>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "client/invocation.h"

namespace vexstate::client {

// `events` without --follow stops once vexd has been quiet this long after its
// replay.
inline constexpr absl::Duration kReplayQuietPeriod = absl::Milliseconds(500);

// Returns the exit status: 0 success, 1 the call failed (migrate: or did not
// end COMPLETED). `invocation.rpc` is not kHelp.
int RunInvocation(const Invocation& invocation, const VexClient& client,
                  std::ostream& out, std::ostream& err,
                  bool out_is_terminal = false);

// Prints "vexctl: <CODE>: <message>" and returns 1.
int ReportError(const absl::Status& status, std::ostream& err);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_RUN_H_
