// vexctl --json: a response proto as one line of JSON, and back.
//
// Choices (stable, so scripts can rely on them): protobuf's canonical proto3
// JSON mapping (google::protobuf::util::MessageToJsonString) with
//  - proto field names (preserve_proto_field_names): "serror_pending", not
//    "serrorPending";
//  - every primitive field printed, zero values included
//    (always_print_primitive_fields): "serror_pending": false is there to
//    read; unset oneof members and unset messages stay out;
//  - enums by name ("VM_RUNNING"), 64-bit integers as decimal strings
//    ("memory_bytes": "67108864"), as the mapping says;
//  - no whitespace: one object per line.
// JsonStringToMessage reads it back exactly.
//
// Contract: pure functions, safe from any thread.
#ifndef VEXSTATE_CLIENT_FORMAT_JSON_H_
#define VEXSTATE_CLIENT_FORMAT_JSON_H_

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/message.h"

namespace vexstate::client {

// One line of JSON, without the newline. INTERNAL if protobuf cannot print the
// message.
absl::StatusOr<std::string> ToJsonLine(
    const google::protobuf::Message& message);

// Parses JSON (as ToJsonLine prints it, or any canonical proto3 JSON) into
// `message`. INVALID_ARGUMENT for malformed JSON and for unknown fields.
absl::Status FromJson(absl::string_view json,
                      google::protobuf::Message* message);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_FORMAT_JSON_H_
