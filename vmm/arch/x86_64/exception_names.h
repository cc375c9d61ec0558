// The x86 exception and interrupt vector table: names, mnemonics, whether the
// processor pushes an error code, and the exception type.
//
// Contract: pure lookups, safe from any thread; the table is constant data.
// Validation code relies on ExceptionHasErrorCode and ExceptionClass, so they
// follow the manuals exactly:
//   Intel SDM Vol. 3A §6.3.1 Table 6-1 "Protected-Mode Exceptions and
//   Interrupts" (vectors 0-21; 22-31 reserved; 32-255 user defined), and
//   AMD APM Vol. 2 §8.2 Table 8-1 for the AMD-only vectors 28 (#HV),
//   29 (#VC) and 30 (#SX), which Intel reserves.
//
// Error codes: the processor pushes one for 8 (#DF, always 0), 10 (#TS),
// 11 (#NP), 12 (#SS), 13 (#GP), 14 (#PF), 17 (#AC, always 0), 21 (#CP) and,
// on AMD, 29 (#VC) and 30 (#SX). Note for injection: unless
// IA32_VMX_BASIC[56] is 1, Intel VM entry requires "deliver error code" to
// be set exactly for 8, 10-14 and 17 (and 21 with CET) when CR0.PE=1 (SDM
// Vol. 3C "Checks on VM-Entry Control Fields"); 29/30 exist only on AMD.
#ifndef VEXSTATE_VMM_ARCH_X86_64_EXCEPTION_NAMES_H_
#define VEXSTATE_VMM_ARCH_X86_64_EXCEPTION_NAMES_H_

#include <cstdint>
#include <string>
#include <string_view>

namespace vexstate::x86 {

inline constexpr uint32_t kVectorDe = 0;   // #DE divide error
inline constexpr uint32_t kVectorDb = 1;   // #DB debug
inline constexpr uint32_t kVectorNmi = 2;  // NMI
inline constexpr uint32_t kVectorBp = 3;   // #BP breakpoint (INT3)
inline constexpr uint32_t kVectorOf = 4;   // #OF overflow (INTO)
inline constexpr uint32_t kVectorBr = 5;   // #BR BOUND range exceeded
inline constexpr uint32_t kVectorUd = 6;   // #UD invalid opcode
inline constexpr uint32_t kVectorNm = 7;   // #NM device not available
inline constexpr uint32_t kVectorDf = 8;   // #DF double fault
inline constexpr uint32_t kVectorTs = 10;  // #TS invalid TSS
inline constexpr uint32_t kVectorNp = 11;  // #NP segment not present
inline constexpr uint32_t kVectorSs = 12;  // #SS stack-segment fault
inline constexpr uint32_t kVectorGp = 13;  // #GP general protection
inline constexpr uint32_t kVectorPf = 14;  // #PF page fault
inline constexpr uint32_t kVectorMf = 16;  // #MF x87 floating-point error
inline constexpr uint32_t kVectorAc = 17;  // #AC alignment check
inline constexpr uint32_t kVectorMc = 18;  // #MC machine check
inline constexpr uint32_t kVectorXm = 19;  // #XM SIMD floating point (AMD #XF)
inline constexpr uint32_t kVectorVe = 20;  // #VE virtualization (Intel)
inline constexpr uint32_t kVectorCp = 21;  // #CP control protection
inline constexpr uint32_t kVectorHv = 28;  // #HV hypervisor injection (AMD)
inline constexpr uint32_t kVectorVc = 29;  // #VC VMM communication (AMD)
inline constexpr uint32_t kVectorSx = 30;  // #SX security (AMD)
inline constexpr uint32_t kFirstUserVector = 32;
inline constexpr uint32_t kMaxVector = 255;

// The "Type" column of SDM Table 6-1.
enum class ExceptionType {
  kFault,
  kTrap,
  kFaultOrTrap,  // #DB: instruction breakpoint/general detect fault; data,
                 // I/O breakpoint and single-step trap (SDM "Debug Exception
                 // Conditions")
  kAbort,
  kInterrupt,  // NMI and the user-defined vectors 32-255
  kReserved,   // 15, 22-27, 31: no type. 28-30 carry AMD's type (Intel
               // reserves them): check ExceptionInfo::defined_by.
  kInvalid,    // not a vector (> 255)
};

// Which vendor architecturally defines a vector.
enum class VectorVendor { kBoth, kIntelOnly, kAmdOnly, kNone };

struct ExceptionInfo {
  uint32_t vector;
  std::string_view mnemonic;  // "#PF", "NMI"; "" when the SDM has none
  std::string_view name;  // what ExceptionName returns, e.g. "#PF page fault"
  ExceptionType type;     // for 28-30, AMD's type (Intel reserves them)
  bool has_error_code;    // the processor pushes an error code
  VectorVendor defined_by;
};

// The table row for vectors 0-31; nullptr for 32 and above.
const ExceptionInfo* FindException(uint32_t vector);

// Human name:
//   0-31:   "<mnemonic> <description>", e.g. "#DE divide error",
//           "#MC machine check"; "NMI" for 2; vectors without a mnemonic
//           read "coprocessor segment overrun (reserved)" (9) or
//           "reserved (vector 15)"; AMD-only vectors end in " (AMD)",
//           e.g. "#VC VMM communication exception (AMD)".
//   32-255: "user-defined interrupt (vector 32)".
//   > 255:  "invalid vector 256".
std::string ExceptionName(uint32_t vector);

// "#PF", "NMI", ...; "" for vectors with no architectural mnemonic (9, the
// reserved vectors, 32 and above).
std::string_view ExceptionMnemonic(uint32_t vector);

// True when the processor pushes an error code for this vector when it is
// delivered as a hardware exception: 8, 10-14, 17, 21, 29, 30. False for
// everything else, including 32-255 and invalid vectors.
bool ExceptionHasErrorCode(uint32_t vector);

// The exception type: fault, trap, fault/trap, abort, interrupt, reserved,
// or invalid (> 255).
ExceptionType ExceptionClass(uint32_t vector);

// "fault", "trap", "fault/trap", "abort", "interrupt", "reserved", "invalid".
std::string_view ExceptionTypeName(ExceptionType type);

}  // namespace vexstate::x86

#endif  // VEXSTATE_VMM_ARCH_X86_64_EXCEPTION_NAMES_H_
