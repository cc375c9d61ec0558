#include "vmm/arch/arm64/esr_decode.h"

#include <cstdint>
#include <set>

#include "gtest/gtest.h"

namespace vexstate::arm64 {
namespace {

// ---------------------------------------------------------------------------
// ESR_ELx top-level fields

TEST(EsrTest, DecodeSplitsEveryField) {
  const EsrFields all = DecodeEsr(0xffffffffffffffff);
  EXPECT_EQ(all.ec, 0x3fu);
  EXPECT_TRUE(all.il);
  EXPECT_EQ(all.iss, 0x1ffffffu);
  EXPECT_EQ(all.iss2, 0xffffffu);
  EXPECT_EQ(all.res0, 0xffu);

  const EsrFields serror = DecodeEsr(0xbe001234);
  EXPECT_EQ(serror.ec, kEcSerror);
  EXPECT_TRUE(serror.il);
  EXPECT_EQ(serror.iss, 0x001234u);
  EXPECT_EQ(serror.iss2, 0u);
  EXPECT_EQ(serror.res0, 0u);
}

TEST(EsrTest, EcNamesAndAllocation) {
  EXPECT_EQ(EcName(0x00), "Unknown reason");
  EXPECT_EQ(EcName(0x15), "SVC in AArch64");
  EXPECT_EQ(EcName(0x18), "Trapped MSR, MRS or System instruction");
  EXPECT_EQ(EcName(0x20), "Instruction Abort from a lower EL");
  EXPECT_EQ(EcName(0x21), "Instruction Abort, same EL");
  EXPECT_EQ(EcName(0x24), "Data Abort from a lower EL");
  EXPECT_EQ(EcName(0x25), "Data Abort, same EL");
  EXPECT_EQ(EcName(0x2f), "SError interrupt");
  EXPECT_EQ(EcName(0x3c), "BRK in AArch64");
  EXPECT_EQ(EcName(0x02), "unallocated");
  EXPECT_EQ(EcName(0x6f), "SError interrupt");  // only bits 5:0 count

  const std::set<uint32_t> kAllocated = {
      0x00, 0x01, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a,
      0x0c, 0x0d, 0x0e, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
      0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f, 0x20, 0x21,
      0x22, 0x24, 0x25, 0x26, 0x27, 0x28, 0x2c, 0x2d, 0x2f, 0x30,
      0x31, 0x32, 0x33, 0x34, 0x35, 0x38, 0x3a, 0x3c, 0x3d};
  for (uint32_t ec = 0; ec < 64; ++ec) {
    SCOPED_TRACE(ec);
    EXPECT_EQ(IsAllocatedEc(ec), kAllocated.count(ec) == 1);
    EXPECT_EQ(EcName(ec) == "unallocated", kAllocated.count(ec) == 0);
  }
}

// ---------------------------------------------------------------------------
// SError

TEST(EsrSerrorTest, ArchitecturalSyndromeWithReservedCodes) {
  // The ESR a guest sees for KVM_SET_VCPU_EVENTS serror_esr = 0x1234.
  const SerrorIss s = DecodeSerrorIss(0x1234);
  EXPECT_FALSE(s.ids);
  EXPECT_FALSE(s.iesb);
  EXPECT_EQ(s.aet, 4u);
  EXPECT_TRUE(s.ea);
  EXPECT_EQ(s.dfsc, 0x34u);
  EXPECT_EQ(s.wu, 0u);
  EXPECT_EQ(s.res0, 0u);
  // DFSC 0x34 is not 0x11, so AET's bits are shown without a meaning.
  EXPECT_EQ(DescribeEsr(0xbe001234),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x001234 IDS=0 IESB=0 "
            "AET=0b100 EA=1 DFSC=0x34 (reserved)");
}

TEST(EsrSerrorTest, ImplementationDefinedSyndrome) {
  // KVM's default when no ESR is given: ISS = IDS.
  const SerrorIss s = DecodeSerrorIss(0x1000000);
  EXPECT_TRUE(s.ids);
  EXPECT_EQ(s.impdef_syndrome, 0u);
  EXPECT_EQ(DescribeEsr(0xbf000000),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x1000000 IDS=1 "
            "(IMPLEMENTATION DEFINED syndrome 0x000000)");
  EXPECT_EQ(DecodeSerrorIss(0x1abcdef).impdef_syndrome, 0xabcdefu);
  EXPECT_EQ(DescribeEsr(0xbfabcdef),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x1abcdef IDS=1 "
            "(IMPLEMENTATION DEFINED syndrome 0xabcdef)");
}

TEST(EsrSerrorTest, AsynchronousErrorTypes) {
  EXPECT_EQ(DescribeEsr(0xbe000c11),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x000c11 IDS=0 IESB=0 "
            "AET=0b011 (UER: recoverable state) EA=0 DFSC=0x11 (asynchronous "
            "SError interrupt)");
  EXPECT_EQ(DescribeEsr(0xbe002211),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x002211 IDS=0 IESB=1 "
            "AET=0b000 (UC: uncontainable) EA=1 DFSC=0x11 (asynchronous "
            "SError interrupt)");
  EXPECT_EQ(DescribeEsr(0xbe000411),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x000411 IDS=0 IESB=0 "
            "AET=0b001 (UEU: unrecoverable state) EA=0 DFSC=0x11 "
            "(asynchronous SError interrupt)");
  EXPECT_EQ(DescribeEsr(0xbe000811),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x000811 IDS=0 IESB=0 "
            "AET=0b010 (UEO: restartable state) EA=0 DFSC=0x11 "
            "(asynchronous SError interrupt)");
  EXPECT_EQ(DescribeEsr(0xbe001811),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x001811 IDS=0 IESB=0 "
            "AET=0b110 (CE: corrected) EA=0 DFSC=0x11 (asynchronous SError "
            "interrupt)");
  EXPECT_EQ(DescribeEsr(0xbe001011),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x001011 IDS=0 IESB=0 "
            "AET=0b100 (reserved) EA=0 DFSC=0x11 (asynchronous SError "
            "interrupt)");
}

TEST(EsrSerrorTest, Uncategorized) {
  EXPECT_EQ(DescribeEsr(0xbe000000),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x000000 IDS=0 IESB=0 "
            "AET=0b000 EA=0 DFSC=0x00 (uncategorized)");
}

TEST(EsrSerrorTest, RasV2FieldsAndRes0) {
  const SerrorIss s = DecodeSerrorIss(0x100d1);
  EXPECT_EQ(s.wu, 1u);
  EXPECT_TRUE(s.wnrv);
  EXPECT_TRUE(s.wnr);
  EXPECT_EQ(DescribeEsr(0xbe0100d1),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x0100d1 IDS=0 WU=0b01 "
            "IESB=0 AET=0b000 (UC: uncontainable) EA=0 WnRV=1 WnR=1 "
            "DFSC=0x11 (asynchronous SError interrupt)");
  EXPECT_EQ(DecodeSerrorIss(0x40111).res0, 0x40100u);
  EXPECT_EQ(DescribeEsr(0xbe040111),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x040111 IDS=0 IESB=0 "
            "AET=0b000 (UC: uncontainable) EA=0 DFSC=0x11 (asynchronous "
            "SError interrupt) RES0=0x40100");
}

TEST(EsrSerrorTest, NameTables) {
  EXPECT_EQ(AetName(0), "UC");
  EXPECT_EQ(AetName(1), "UEU");
  EXPECT_EQ(AetName(2), "UEO");
  EXPECT_EQ(AetName(3), "UER");
  EXPECT_EQ(AetName(4), "");
  EXPECT_EQ(AetName(5), "");
  EXPECT_EQ(AetName(6), "CE");
  EXPECT_EQ(AetName(7), "");
  EXPECT_EQ(AetDescription(2), "restartable state");
  EXPECT_EQ(AetDescription(7), "reserved");
  EXPECT_EQ(SerrorDfscName(0x00), "uncategorized");
  EXPECT_EQ(SerrorDfscName(0x11), "asynchronous SError interrupt");
  EXPECT_EQ(SerrorDfscName(0x10), "reserved");
}

// ---------------------------------------------------------------------------
// Data and instruction aborts

TEST(EsrAbortTest, KernelWriteTranslationFault) {
  const AbortIss a = DecodeAbortIss(0x45);
  EXPECT_FALSE(a.isv);
  EXPECT_TRUE(a.wnr);
  EXPECT_EQ(a.fsc, 0x05u);
  EXPECT_EQ(DescribeEsr(0x96000045),
            "EC=0x25 (Data Abort, same EL) IL=1 ISS=0x000045 ISV=0 FnV=0 "
            "EA=0 CM=0 S1PTW=0 WnR=1 DFSC=0x05 (translation fault, level 1)");
}

TEST(EsrAbortTest, SynchronousExternalAbortFromLowerEl) {
  const AbortIss a = DecodeAbortIss(0x10);
  EXPECT_FALSE(a.wnr);
  EXPECT_EQ(a.set, 0u);
  EXPECT_EQ(a.fsc, 0x10u);
  EXPECT_EQ(DescribeEsr(0x92000010),
            "EC=0x24 (Data Abort from a lower EL) IL=1 ISS=0x000010 ISV=0 "
            "SET=0b00 (UER: recoverable state) FnV=0 EA=0 CM=0 S1PTW=0 WnR=0 "
            "DFSC=0x10 (synchronous external abort)");
  EXPECT_EQ(DescribeEsr(0x96001210),
            "EC=0x25 (Data Abort, same EL) IL=1 ISS=0x001210 ISV=0 "
            "SET=0b10 (UC: uncontainable) FnV=0 EA=1 CM=0 S1PTW=0 WnR=0 "
            "DFSC=0x10 (synchronous external abort)");
}

TEST(EsrAbortTest, MmioStoreWithValidSyndrome) {
  // What KVM sees for a guest `str x3, [mmio]` hitting an unmapped IPA.
  const AbortIss a = DecodeAbortIss(0x1c38046);
  EXPECT_TRUE(a.isv);
  EXPECT_EQ(a.sas, 3u);
  EXPECT_FALSE(a.sse);
  EXPECT_EQ(a.srt, 3u);
  EXPECT_TRUE(a.sf);
  EXPECT_FALSE(a.ar);
  EXPECT_TRUE(a.wnr);
  EXPECT_EQ(a.fsc, 0x06u);
  EXPECT_EQ(DescribeEsr(0x93c38046),
            "EC=0x24 (Data Abort from a lower EL) IL=1 ISS=0x1c38046 ISV=1 "
            "SAS=0b11 (doubleword) SSE=0 SRT=3 SF=1 AR=0 FnV=0 EA=0 CM=0 "
            "S1PTW=0 WnR=1 DFSC=0x06 (translation fault, level 2)");
}

TEST(EsrAbortTest, OtherDataAbortFields) {
  EXPECT_EQ(DescribeEsr(0x9200048f),
            "EC=0x24 (Data Abort from a lower EL) IL=1 ISS=0x00048f ISV=0 "
            "FnV=1 EA=0 CM=0 S1PTW=1 WnR=0 DFSC=0x0f (permission fault, "
            "level 3)");
  EXPECT_EQ(DescribeEsr(0x96002004),
            "EC=0x25 (Data Abort, same EL) IL=1 ISS=0x002004 ISV=0 VNCR=1 "
            "FnV=0 EA=0 CM=0 S1PTW=0 WnR=0 DFSC=0x04 (translation fault, "
            "level 0)");
  EXPECT_EQ(DescribeEsr(0x96000121),
            "EC=0x25 (Data Abort, same EL) IL=1 ISS=0x000121 ISV=0 FnV=0 "
            "EA=0 CM=1 S1PTW=0 WnR=0 DFSC=0x21 (alignment fault)");
}

TEST(EsrAbortTest, InstructionAborts) {
  EXPECT_EQ(DescribeEsr(0x8600000f),
            "EC=0x21 (Instruction Abort, same EL) IL=1 ISS=0x00000f FnV=0 "
            "EA=0 S1PTW=0 IFSC=0x0f (permission fault, level 3)");
  EXPECT_EQ(DescribeEsr(0x82000014),
            "EC=0x20 (Instruction Abort from a lower EL) IL=1 ISS=0x000014 "
            "SET=0b00 (UER: recoverable state) FnV=0 EA=0 S1PTW=0 IFSC=0x14 "
            "(synchronous external abort on translation table walk, level "
            "0)");
  // Alignment faults exist only for data accesses.
  EXPECT_EQ(DescribeEsr(0x86000021),
            "EC=0x21 (Instruction Abort, same EL) IL=1 ISS=0x000021 FnV=0 "
            "EA=0 S1PTW=0 IFSC=0x21 (reserved)");
}

TEST(EsrAbortTest, FaultStatusNames) {
  EXPECT_EQ(FaultStatusName(0x00, true),
            "address size fault, level 0 or translation table base "
            "register");
  EXPECT_EQ(FaultStatusName(0x07, true), "translation fault, level 3");
  EXPECT_EQ(FaultStatusName(0x0b, true), "access flag fault, level 3");
  EXPECT_EQ(FaultStatusName(0x0c, false), "permission fault, level 0");
  EXPECT_EQ(FaultStatusName(0x11, true), "synchronous tag check fault");
  EXPECT_EQ(FaultStatusName(0x11, false), "reserved");
  EXPECT_EQ(FaultStatusName(0x18, false), "synchronous parity or ECC error");
  EXPECT_EQ(FaultStatusName(0x28, true), "granule protection fault");
  EXPECT_EQ(FaultStatusName(0x29, true), "address size fault, level -1");
  EXPECT_EQ(FaultStatusName(0x2a, true), "translation fault, level -2");
  EXPECT_EQ(FaultStatusName(0x2b, true), "translation fault, level -1");
  EXPECT_EQ(FaultStatusName(0x2c, true), "address size fault, level -2");
  EXPECT_EQ(FaultStatusName(0x30, false), "TLB conflict abort");
  EXPECT_EQ(FaultStatusName(0x35, false), "reserved");
  for (uint32_t fsc : {0x19u, 0x1au, 0x20u, 0x2du, 0x2eu, 0x2fu, 0x32u, 0x33u,
                       0x36u, 0x3cu, 0x3fu}) {
    SCOPED_TRACE(fsc);
    EXPECT_EQ(FaultStatusName(fsc, true), "reserved");
  }
  EXPECT_TRUE(IsSynchronousExternalAbort(0x10));
  EXPECT_FALSE(IsSynchronousExternalAbort(0x11));
  for (uint32_t fsc = 0x12; fsc <= 0x17; ++fsc) {
    EXPECT_TRUE(IsSynchronousExternalAbort(fsc)) << fsc;
  }
  EXPECT_FALSE(IsSynchronousExternalAbort(0x18));
  EXPECT_EQ(SetName(1), "reserved");
  EXPECT_EQ(SetName(3), "UEO: restartable state");
}

// ---------------------------------------------------------------------------
// Other exception classes

TEST(EsrOtherTest, CallsTrapsAndUnknown) {
  EXPECT_EQ(DescribeEsr(0x56000000),
            "EC=0x15 (SVC in AArch64) IL=1 ISS=0x000000 imm16=0x0000");
  EXPECT_EQ(DescribeEsr(0x5a004242),
            "EC=0x16 (HVC in AArch64) IL=1 ISS=0x004242 imm16=0x4242");
  EXPECT_EQ(DescribeEsr(0xf2000800),
            "EC=0x3c (BRK in AArch64) IL=1 ISS=0x000800 comment=0x0800");
  // mrs x1, DISR_EL1 trapped: S3_0_C12_C1_1, read.
  EXPECT_EQ(DescribeEsr(0x62323023),
            "EC=0x18 (Trapped MSR, MRS or System instruction) IL=1 "
            "ISS=0x323023 sysreg=S3_0_C12_C1_1 Rt=1 dir=read");
  EXPECT_EQ(DescribeEsr(0x06000000),
            "EC=0x01 (Trapped WF* instruction) IL=1 ISS=0x000000 TI=WFI");
  EXPECT_EQ(DescribeEsr(0x06000001),
            "EC=0x01 (Trapped WF* instruction) IL=1 ISS=0x000001 TI=WFE");
  EXPECT_EQ(DescribeEsr(0x02000000),
            "EC=0x00 (Unknown reason) IL=1 ISS=0x000000");
  EXPECT_EQ(DescribeEsr(0), "EC=0x00 (Unknown reason) IL=0 ISS=0x000000");
  EXPECT_EQ(DescribeEsr(0xfe000000), "EC=0x3f (unallocated) IL=1 ISS=0x000000");
}

TEST(EsrOtherTest, Iss2AndRes0AreShownWhenSet) {
  EXPECT_EQ(DescribeEsr(0x0000000596000045),
            "EC=0x25 (Data Abort, same EL) IL=1 ISS=0x000045 ISV=0 FnV=0 "
            "EA=0 CM=0 S1PTW=0 WnR=1 DFSC=0x05 (translation fault, level 1) "
            "ISS2=0x5");
  EXPECT_EQ(DescribeEsr(0x80000000bf000000),
            "EC=0x2f (SError interrupt) IL=1 ISS=0x1000000 IDS=1 "
            "(IMPLEMENTATION DEFINED syndrome 0x000000) RES0[63:56]=0x80");
}

// ---------------------------------------------------------------------------
// DISR_EL1

TEST(DisrTest, Describe) {
  EXPECT_EQ(DescribeDisr(0), "A=0 (no SError deferred)");
  EXPECT_EQ(DescribeDisr(0x11), "A=0 (no SError deferred) raw=0x11");
  EXPECT_EQ(DescribeDisr(0x80000c11),
            "A=1 IDS=0 AET=0b011 (UER: recoverable state) EA=0 DFSC=0x11 "
            "(asynchronous SError interrupt)");
  EXPECT_EQ(DescribeDisr(0x81000000),
            "A=1 IDS=1 (IMPLEMENTATION DEFINED syndrome 0x000000)");
  EXPECT_EQ(DescribeDisr(0x81001234),
            "A=1 IDS=1 (IMPLEMENTATION DEFINED syndrome 0x001234)");
  // DISR has no IESB: bit 13 is RES0 there.
  EXPECT_EQ(DescribeDisr(0x80002211),
            "A=1 IDS=0 AET=0b000 (UC: uncontainable) EA=1 DFSC=0x11 "
            "(asynchronous SError interrupt) RES0=0x2000");
  EXPECT_EQ(DescribeDisr(0x180000011),
            "A=1 IDS=0 AET=0b000 (UC: uncontainable) EA=0 DFSC=0x11 "
            "(asynchronous SError interrupt) RES0=0x100000000");
}

// ---------------------------------------------------------------------------
// KVM_SET_VCPU_EVENTS serror_esr helpers

TEST(SerrorIssTest, ValidityFollowsKvm) {
  EXPECT_EQ(kVsesrIssMask, 0x1ffffffu);
  EXPECT_TRUE(IsValidSerrorIss(0));
  EXPECT_TRUE(IsValidSerrorIss(0x1234));
  EXPECT_TRUE(IsValidSerrorIss(0x1000000));  // IDS, bit 24
  EXPECT_TRUE(IsValidSerrorIss(0x1ffffff));
  EXPECT_FALSE(IsValidSerrorIss(0x2000000));  // bit 25: EINVAL
  EXPECT_FALSE(IsValidSerrorIss(0x2001234));
  EXPECT_FALSE(IsValidSerrorIss(uint64_t{1} << 63));
  static_assert(IsValidSerrorIss(0x1234), "usable in constant expressions");
}

TEST(SerrorIssTest, EsrAsSeenByGuest) {
  EXPECT_EQ(SerrorEsrAsSeenByGuest(0x1234), 0xbe001234u);
  EXPECT_EQ(SerrorEsrAsSeenByGuest(kSerrorIssIds), 0xbf000000u);
  EXPECT_EQ(SerrorEsrAsSeenByGuest(0), 0xbe000000u);
  EXPECT_EQ(SerrorEsrAsSeenByGuest(0x1ffffff), 0xbfffffffu);
  // Bits KVM would refuse are dropped, never smeared into IL or EC.
  EXPECT_EQ(SerrorEsrAsSeenByGuest(0x2001234), 0xbe001234u);
  static_assert(SerrorEsrAsSeenByGuest(0x1234) == 0xbe001234,
                "usable in constant expressions");
  // Round trip through the decoder.
  EXPECT_EQ(DecodeEsr(SerrorEsrAsSeenByGuest(0xc11)).ec, kEcSerror);
  EXPECT_EQ(DecodeEsr(SerrorEsrAsSeenByGuest(0xc11)).iss, 0xc11u);
}

}  // namespace
}  // namespace vexstate::arm64
