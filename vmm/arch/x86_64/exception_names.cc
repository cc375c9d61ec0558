#include "vmm/arch/x86_64/exception_names.h"

#include <cstdint>
#include <string>
#include <string_view>

#include "absl/strings/str_format.h"

namespace vexstate::x86 {
namespace {

using T = ExceptionType;
using V = VectorVendor;

// SDM Vol. 3A Table 6-1, plus AMD APM Vol. 2 Table 8-1 for 28-30. Rows are
// indexed by vector; the static_assert below keeps them in order.
constexpr ExceptionInfo kTable[32] = {
    {0, "#DE", "#DE divide error", T::kFault, false, V::kBoth},
    {1, "#DB", "#DB debug exception", T::kFaultOrTrap, false, V::kBoth},
    {2, "NMI", "NMI", T::kInterrupt, false, V::kBoth},
    {3, "#BP", "#BP breakpoint", T::kTrap, false, V::kBoth},
    {4, "#OF", "#OF overflow", T::kTrap, false, V::kBoth},
    {5, "#BR", "#BR BOUND range exceeded", T::kFault, false, V::kBoth},
    {6, "#UD", "#UD invalid opcode", T::kFault, false, V::kBoth},
    {7, "#NM", "#NM device not available", T::kFault, false, V::kBoth},
    {8, "#DF", "#DF double fault", T::kAbort, true, V::kBoth},
    // Processors after the Intel386 do not generate vector 9.
    {9, "", "coprocessor segment overrun (reserved)", T::kFault, false,
     V::kBoth},
    {10, "#TS", "#TS invalid TSS", T::kFault, true, V::kBoth},
    {11, "#NP", "#NP segment not present", T::kFault, true, V::kBoth},
    {12, "#SS", "#SS stack-segment fault", T::kFault, true, V::kBoth},
    {13, "#GP", "#GP general protection", T::kFault, true, V::kBoth},
    {14, "#PF", "#PF page fault", T::kFault, true, V::kBoth},
    {15, "", "reserved (vector 15)", T::kReserved, false, V::kNone},
    {16, "#MF", "#MF x87 FPU floating-point error", T::kFault, false, V::kBoth},
    {17, "#AC", "#AC alignment check", T::kFault, true, V::kBoth},
    {18, "#MC", "#MC machine check", T::kAbort, false, V::kBoth},
    {19, "#XM", "#XM SIMD floating-point exception", T::kFault, false,
     V::kBoth},
    {20, "#VE", "#VE virtualization exception", T::kFault, false,
     V::kIntelOnly},
    {21, "#CP", "#CP control protection exception", T::kFault, true, V::kBoth},
    {22, "", "reserved (vector 22)", T::kReserved, false, V::kNone},
    {23, "", "reserved (vector 23)", T::kReserved, false, V::kNone},
    {24, "", "reserved (vector 24)", T::kReserved, false, V::kNone},
    {25, "", "reserved (vector 25)", T::kReserved, false, V::kNone},
    {26, "", "reserved (vector 26)", T::kReserved, false, V::kNone},
    {27, "", "reserved (vector 27)", T::kReserved, false, V::kNone},
    {28, "#HV", "#HV hypervisor injection exception (AMD)", T::kFault, false,
     V::kAmdOnly},
    {29, "#VC", "#VC VMM communication exception (AMD)", T::kFault, true,
     V::kAmdOnly},
    {30, "#SX", "#SX security exception (AMD)", T::kFault, true, V::kAmdOnly},
    {31, "", "reserved (vector 31)", T::kReserved, false, V::kNone},
};

constexpr bool TableIsIndexedByVector() {
  for (uint32_t i = 0; i < 32; ++i) {
    if (kTable[i].vector != i) return false;
  }
  return true;
}
static_assert(TableIsIndexedByVector(), "kTable rows out of order");

}  // namespace

const ExceptionInfo* FindException(uint32_t vector) {
  return vector < 32 ? &kTable[vector] : nullptr;
}

std::string ExceptionName(uint32_t vector) {
  if (vector < 32) return std::string(kTable[vector].name);
  if (vector <= kMaxVector) {
    return absl::StrFormat("user-defined interrupt (vector %u)", vector);
  }
  return absl::StrFormat("invalid vector %u", vector);
}

std::string_view ExceptionMnemonic(uint32_t vector) {
  return vector < 32 ? kTable[vector].mnemonic : std::string_view();
}

bool ExceptionHasErrorCode(uint32_t vector) {
  return vector < 32 && kTable[vector].has_error_code;
}

ExceptionType ExceptionClass(uint32_t vector) {
  if (vector < 32) return kTable[vector].type;
  return vector <= kMaxVector ? ExceptionType::kInterrupt
                              : ExceptionType::kInvalid;
}

std::string_view ExceptionTypeName(ExceptionType type) {
  switch (type) {
    case ExceptionType::kFault:
      return "fault";
    case ExceptionType::kTrap:
      return "trap";
    case ExceptionType::kFaultOrTrap:
      return "fault/trap";
    case ExceptionType::kAbort:
      return "abort";
    case ExceptionType::kInterrupt:
      return "interrupt";
    case ExceptionType::kReserved:
      return "reserved";
    case ExceptionType::kInvalid:
      return "invalid";
  }
  return "invalid";
}

}  // namespace vexstate::x86
