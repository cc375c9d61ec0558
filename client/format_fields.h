// Small renderings shared by vexctl's human output: enum names, times, sizes.
//
// Contract: pure functions, safe from any thread.
#ifndef VEXSTATE_CLIENT_FORMAT_FIELDS_H_
#define VEXSTATE_CLIENT_FORMAT_FIELDS_H_

#include <cstdint>
#include <string>

#include "vexstate/v1/control.pb.h"

namespace vexstate::client {

// VM_RUNNING -> "RUNNING"; an unknown number -> "STATE(<n>)".
std::string VmStateName(v1::VmRunState state);
// ARCH_X86_64 -> "x86_64", ARCH_ARM64 -> "arm64", unset -> "-".
std::string ArchName(v1::Arch arch);
// Unix nanoseconds as UTC with milliseconds: "2026-11-23T16:22:00.123Z"; 0 ->
// "-".
std::string FormatUnixNs(int64_t unix_ns);
// "64 MiB" when a whole number of MiB, else "<n> bytes".
std::string FormatMemory(uint64_t bytes);
// "1.5 MiB (1572864 bytes)"; below 1 KiB just "<n> bytes".
std::string FormatSize(uint64_t bytes);
// "witness (bundled)", "/path/guest.elf", "-".
std::string FormatGuest(const v1::GuestImage& guest);

}  // namespace vexstate::client

#endif  // VEXSTATE_CLIENT_FORMAT_FIELDS_H_
