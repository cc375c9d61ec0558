#include "vmm/arch/x86_64/exception_names.h"

#include <cstdint>
#include <set>
#include <string>

#include "gtest/gtest.h"

namespace vexstate::x86 {
namespace {

TEST(ExceptionNamesTest, NamesOfEveryArchitecturalVector) {
  const std::string kExpected[32] = {
      "#DE divide error",
      "#DB debug exception",
      "NMI",
      "#BP breakpoint",
      "#OF overflow",
      "#BR BOUND range exceeded",
      "#UD invalid opcode",
      "#NM device not available",
      "#DF double fault",
      "coprocessor segment overrun (reserved)",
      "#TS invalid TSS",
      "#NP segment not present",
      "#SS stack-segment fault",
      "#GP general protection",
      "#PF page fault",
      "reserved (vector 15)",
      "#MF x87 FPU floating-point error",
      "#AC alignment check",
      "#MC machine check",
      "#XM SIMD floating-point exception",
      "#VE virtualization exception",
      "#CP control protection exception",
      "reserved (vector 22)",
      "reserved (vector 23)",
      "reserved (vector 24)",
      "reserved (vector 25)",
      "reserved (vector 26)",
      "reserved (vector 27)",
      "#HV hypervisor injection exception (AMD)",
      "#VC VMM communication exception (AMD)",
      "#SX security exception (AMD)",
      "reserved (vector 31)",
  };
  for (uint32_t v = 0; v < 32; ++v) {
    SCOPED_TRACE(v);
    EXPECT_EQ(ExceptionName(v), kExpected[v]);
    ASSERT_NE(FindException(v), nullptr);
    EXPECT_EQ(FindException(v)->vector, v);
    EXPECT_EQ(FindException(v)->name, kExpected[v]);
  }
}

TEST(ExceptionNamesTest, UserDefinedAndInvalidVectors) {
  EXPECT_EQ(ExceptionName(32), "user-defined interrupt (vector 32)");
  EXPECT_EQ(ExceptionName(255), "user-defined interrupt (vector 255)");
  EXPECT_EQ(ExceptionName(256), "invalid vector 256");
  EXPECT_EQ(ExceptionName(0xffffffff), "invalid vector 4294967295");
  EXPECT_EQ(FindException(32), nullptr);
  EXPECT_EQ(ExceptionMnemonic(32), "");
  EXPECT_EQ(ExceptionMnemonic(1000), "");
}

TEST(ExceptionNamesTest, Mnemonics) {
  EXPECT_EQ(ExceptionMnemonic(kVectorDe), "#DE");
  EXPECT_EQ(ExceptionMnemonic(kVectorNmi), "NMI");
  EXPECT_EQ(ExceptionMnemonic(kVectorDf), "#DF");
  EXPECT_EQ(ExceptionMnemonic(9), "");
  EXPECT_EQ(ExceptionMnemonic(kVectorGp), "#GP");
  EXPECT_EQ(ExceptionMnemonic(kVectorPf), "#PF");
  EXPECT_EQ(ExceptionMnemonic(15), "");
  EXPECT_EQ(ExceptionMnemonic(kVectorMc), "#MC");
  EXPECT_EQ(ExceptionMnemonic(kVectorXm), "#XM");
  EXPECT_EQ(ExceptionMnemonic(kVectorCp), "#CP");
  EXPECT_EQ(ExceptionMnemonic(22), "");
  EXPECT_EQ(ExceptionMnemonic(kVectorVc), "#VC");
  EXPECT_EQ(ExceptionMnemonic(31), "");
}

// The error-code set is exact: validation rejects has_error_code elsewhere.
TEST(ExceptionNamesTest, ErrorCodeVectorsAreExactly) {
  const std::set<uint32_t> kWithErrorCode = {8,  10, 11, 12, 13,
                                             14, 17, 21, 29, 30};
  for (uint32_t v = 0; v <= 300; ++v) {
    SCOPED_TRACE(v);
    EXPECT_EQ(ExceptionHasErrorCode(v), kWithErrorCode.count(v) == 1);
  }
  EXPECT_FALSE(ExceptionHasErrorCode(0xffffffff));
}

TEST(ExceptionNamesTest, TypesPerSdmTable61) {
  EXPECT_EQ(ExceptionClass(kVectorDe), ExceptionType::kFault);
  EXPECT_EQ(ExceptionClass(kVectorDb), ExceptionType::kFaultOrTrap);
  EXPECT_EQ(ExceptionClass(kVectorNmi), ExceptionType::kInterrupt);
  EXPECT_EQ(ExceptionClass(kVectorBp), ExceptionType::kTrap);
  EXPECT_EQ(ExceptionClass(kVectorOf), ExceptionType::kTrap);
  EXPECT_EQ(ExceptionClass(kVectorBr), ExceptionType::kFault);
  EXPECT_EQ(ExceptionClass(kVectorUd), ExceptionType::kFault);
  EXPECT_EQ(ExceptionClass(kVectorNm), ExceptionType::kFault);
  EXPECT_EQ(ExceptionClass(kVectorDf), ExceptionType::kAbort);
  EXPECT_EQ(ExceptionClass(9), ExceptionType::kFault);
  for (uint32_t v : {kVectorTs, kVectorNp, kVectorSs, kVectorGp, kVectorPf,
                     kVectorMf, kVectorAc, kVectorXm, kVectorVe, kVectorCp}) {
    SCOPED_TRACE(v);
    EXPECT_EQ(ExceptionClass(v), ExceptionType::kFault);
  }
  EXPECT_EQ(ExceptionClass(kVectorMc), ExceptionType::kAbort);
  for (uint32_t v : {15u, 22u, 23u, 24u, 25u, 26u, 27u, 31u}) {
    SCOPED_TRACE(v);
    EXPECT_EQ(ExceptionClass(v), ExceptionType::kReserved);
    EXPECT_FALSE(ExceptionHasErrorCode(v));
    EXPECT_EQ(FindException(v)->defined_by, VectorVendor::kNone);
  }
  EXPECT_EQ(ExceptionClass(32), ExceptionType::kInterrupt);
  EXPECT_EQ(ExceptionClass(255), ExceptionType::kInterrupt);
  EXPECT_EQ(ExceptionClass(256), ExceptionType::kInvalid);
}

TEST(ExceptionNamesTest, VendorSpecificVectors) {
  EXPECT_EQ(FindException(kVectorVe)->defined_by, VectorVendor::kIntelOnly);
  EXPECT_EQ(FindException(kVectorHv)->defined_by, VectorVendor::kAmdOnly);
  EXPECT_EQ(FindException(kVectorVc)->defined_by, VectorVendor::kAmdOnly);
  EXPECT_EQ(FindException(kVectorSx)->defined_by, VectorVendor::kAmdOnly);
  EXPECT_EQ(FindException(kVectorMc)->defined_by, VectorVendor::kBoth);
  EXPECT_EQ(FindException(kVectorCp)->defined_by, VectorVendor::kBoth);
}

TEST(ExceptionNamesTest, TypeNames) {
  EXPECT_EQ(ExceptionTypeName(ExceptionType::kFault), "fault");
  EXPECT_EQ(ExceptionTypeName(ExceptionType::kTrap), "trap");
  EXPECT_EQ(ExceptionTypeName(ExceptionType::kFaultOrTrap), "fault/trap");
  EXPECT_EQ(ExceptionTypeName(ExceptionType::kAbort), "abort");
  EXPECT_EQ(ExceptionTypeName(ExceptionType::kInterrupt), "interrupt");
  EXPECT_EQ(ExceptionTypeName(ExceptionType::kReserved), "reserved");
  EXPECT_EQ(ExceptionTypeName(ExceptionType::kInvalid), "invalid");
  EXPECT_EQ(ExceptionTypeName(ExceptionClass(kVectorMc)), "abort");
}

}  // namespace
}  // namespace vexstate::x86
