#include "vmm/arch/x86_64/mce_decode.h"

#include <cstdint>

#include "gtest/gtest.h"

namespace vexstate::x86 {
namespace {

// ---------------------------------------------------------------------------
// IA32_MCi_STATUS

// An uncorrected memory read error without S/AR: UCNA on a SER_P host.
// 0xbc = 1011'1100: VAL, UC, EN, MISCV, ADDRV; PCC (57) and S (56) clear.
TEST(McStatusTest, UncorrectedMemoryReadWithoutPcc) {
  constexpr uint64_t kStatus = 0xbc0000000000009f;
  const McStatusFields f = DecodeMcStatus(kStatus);
  EXPECT_TRUE(f.val);
  EXPECT_FALSE(f.over);
  EXPECT_TRUE(f.uc);
  EXPECT_TRUE(f.en);
  EXPECT_TRUE(f.miscv);
  EXPECT_TRUE(f.addrv);
  EXPECT_FALSE(f.pcc);
  EXPECT_FALSE(f.s);
  EXPECT_FALSE(f.ar);
  EXPECT_EQ(f.mca_error_code, 0x009fu);
  EXPECT_EQ(f.model_specific_code, 0u);
  EXPECT_EQ(f.other_info, 0u);
  EXPECT_EQ(f.corrected_error_count, 0u);

  EXPECT_TRUE(IsUncorrected(kStatus));
  EXPECT_EQ(ClassifyMcStatus(kStatus), McSeverity::kUcna);
  EXPECT_EQ(DescribeMcStatus(kStatus),
            "VAL|UC|EN|MISCV|ADDRV mca=0x009f (memory controller error "
            "MMM=RD CCCC=unspecified)");
}

// 0xfe = 1111'1110: VAL, OVER, UC, EN, MISCV, ADDRV, PCC.
TEST(McStatusTest, FatalL1DataReadWithOverflow) {
  constexpr uint64_t kStatus = 0xfe00000000000135;
  const McStatusFields f = DecodeMcStatus(kStatus);
  EXPECT_TRUE(f.val);
  EXPECT_TRUE(f.over);
  EXPECT_TRUE(f.uc);
  EXPECT_TRUE(f.pcc);
  EXPECT_FALSE(f.s);
  EXPECT_EQ(f.mca_error_code, 0x0135u);

  EXPECT_TRUE(IsUncorrected(kStatus));
  EXPECT_EQ(ClassifyMcStatus(kStatus), McSeverity::kFatal);
  EXPECT_EQ(DescribeMcStatus(kStatus),
            "VAL|OVER|UC|EN|MISCV|ADDRV|PCC mca=0x0135 (cache hierarchy error "
            "TT=D LL=L1 RRRR=DRD)");
}

// A recoverable data-load error as Linux sees it: S=1, AR=1 (SRAR).
TEST(McStatusTest, SrarDataLoad) {
  constexpr uint64_t kStatus = 0xbd80000000100134;
  const McStatusFields f = DecodeMcStatus(kStatus);
  EXPECT_TRUE(f.s);
  EXPECT_TRUE(f.ar);
  EXPECT_FALSE(f.pcc);
  EXPECT_EQ(f.model_specific_code, 0x0010u);
  EXPECT_EQ(ClassifyMcStatus(kStatus), McSeverity::kSrar);
  EXPECT_EQ(DescribeMcStatus(kStatus),
            "VAL|UC|EN|MISCV|ADDRV|S|AR mca=0x0134 (cache hierarchy error "
            "TT=D LL=L0 RRRR=DRD) mscod=0x0010");
}

// Patrol scrub found an uncorrected error: S=1, AR=0 (SRAO, SDM §16.6.3).
TEST(McStatusTest, SraoScrubAndItsMeaningWithoutSerP) {
  constexpr uint64_t kStatus = 0xbd000000000000c3;
  EXPECT_EQ(ClassifyMcStatus(kStatus), McSeverity::kSrao);
  EXPECT_EQ(DescribeMcStatus(kStatus),
            "VAL|UC|EN|MISCV|ADDRV|S mca=0x00c3 (memory controller error "
            "MMM=MS CCCC=3)");
  // Without SER_P bit 56 is model-specific "other information".
  EXPECT_EQ(ClassifyMcStatus(kStatus, /*mcg_cap=*/0), McSeverity::kUncorrected);
  EXPECT_EQ(DescribeMcStatus(kStatus, /*mcg_cap=*/0),
            "VAL|UC|EN|MISCV|ADDRV mca=0x00c3 (memory controller error "
            "MMM=MS CCCC=3) other=0x1000000");
}

TEST(McStatusTest, ArWithoutSIsNotAUcrClass) {
  constexpr uint64_t kStatus = kMciStatusVal | kMciStatusUc | kMciStatusAr;
  EXPECT_EQ(ClassifyMcStatus(kStatus), McSeverity::kInvalid);
}

// A corrected memory read error with a corrected-error count of 1 (CMCI_P).
TEST(McStatusTest, CorrectedErrorWithCount) {
  constexpr uint64_t kStatus = 0x9c0000400001009f;
  const McStatusFields f = DecodeMcStatus(kStatus);
  EXPECT_TRUE(f.val);
  EXPECT_FALSE(f.uc);
  EXPECT_FALSE(f.pcc);
  EXPECT_EQ(f.corrected_error_count, 1u);
  EXPECT_EQ(f.other_info, 0x40u);  // bit 38 is bit 6 of bits 56:32
  EXPECT_EQ(f.model_specific_code, 0x0001u);

  EXPECT_FALSE(IsUncorrected(kStatus));
  EXPECT_EQ(ClassifyMcStatus(kStatus), McSeverity::kCorrected);
  EXPECT_EQ(DescribeMcStatus(kStatus),
            "VAL|EN|MISCV|ADDRV mca=0x009f (memory controller error MMM=RD "
            "CCCC=unspecified) mscod=0x0001 cec=1");
  // Without CMCI_P the same bits are model-specific.
  EXPECT_EQ(DescribeMcStatus(kStatus, kMcgCapSerP),
            "VAL|EN|MISCV|ADDRV mca=0x009f (memory controller error MMM=RD "
            "CCCC=unspecified) mscod=0x0001 other=0x40");
}

TEST(McStatusTest, CorrectedErrorCountOverflow) {
  constexpr uint64_t kStatus = 0x9c1fffc000000005;  // bits 52:38 all set
  EXPECT_EQ(DecodeMcStatus(kStatus).corrected_error_count, 0x7fffu);
  EXPECT_EQ(DescribeMcStatus(kStatus),
            "VAL|EN|MISCV|ADDRV mca=0x0005 (internal parity error) "
            "cec=16383 (overflow)");
}

TEST(McStatusTest, ThresholdStatusOnlyWithTesPAndUcClear) {
  // VAL|EN, threshold 0b10 (yellow), count 3, generic L2 cache error.
  constexpr uint64_t kStatus = 0x904000c00000000e;
  EXPECT_EQ(DecodeMcStatus(kStatus).threshold_status, 2u);
  EXPECT_EQ(DescribeMcStatus(kStatus, kMcgCapTesP | kMcgCapCmciP),
            "VAL|EN mca=0x000e (generic cache hierarchy error LL=L2) cec=3 "
            "threshold=yellow");
  EXPECT_EQ(DescribeMcStatus(kStatus),  // default: no TES_P
            "VAL|EN mca=0x000e (generic cache hierarchy error LL=L2) cec=3 "
            "other=0x400000");
  // With UC=1 bits 54:53 are undefined: neither decoded nor "other".
  EXPECT_EQ(DescribeMcStatus(kStatus | kMciStatusUc, kMcgCapTesP),
            "VAL|UC|EN mca=0x000e (generic cache hierarchy error LL=L2) "
            "other=0xc0");
}

TEST(McStatusTest, ModelSpecificOtherInfoBits) {
  // Bits 37 and 32 are always model-specific.
  EXPECT_EQ(DescribeMcStatus(0x8000002100000001),
            "VAL mca=0x0001 (unclassified) other=0x21");
}

TEST(McStatusTest, NotValid) {
  EXPECT_EQ(DescribeMcStatus(0), "VAL=0 (no valid error)");
  EXPECT_FALSE(IsUncorrected(0));
  EXPECT_EQ(ClassifyMcStatus(0), McSeverity::kNoError);

  // UC and friends mean nothing while VAL is clear.
  constexpr uint64_t kStale = 0x3c0000000000009f;
  EXPECT_FALSE(DecodeMcStatus(kStale).val);
  EXPECT_TRUE(DecodeMcStatus(kStale).uc);
  EXPECT_FALSE(IsUncorrected(kStale));
  EXPECT_EQ(ClassifyMcStatus(kStale), McSeverity::kNoError);
  EXPECT_EQ(DescribeMcStatus(kStale),
            "VAL=0 (no valid error) raw=0x3c0000000000009f");
}

TEST(McStatusTest, SeverityNames) {
  EXPECT_EQ(McSeverityName(McSeverity::kNoError), "none");
  EXPECT_EQ(McSeverityName(McSeverity::kCorrected), "CE");
  EXPECT_EQ(McSeverityName(McSeverity::kUcna), "UCNA");
  EXPECT_EQ(McSeverityName(McSeverity::kSrao), "SRAO");
  EXPECT_EQ(McSeverityName(McSeverity::kSrar), "SRAR");
  EXPECT_EQ(McSeverityName(McSeverity::kUncorrected), "UC");
  EXPECT_EQ(McSeverityName(McSeverity::kFatal), "UC/PCC");
  EXPECT_EQ(McSeverityName(McSeverity::kInvalid), "invalid");
}

TEST(McStatusTest, BitConstantsMatchTheSdm) {
  EXPECT_EQ(kMciStatusVal, 0x8000000000000000u);
  EXPECT_EQ(kMciStatusUc, 0x2000000000000000u);
  EXPECT_EQ(kMciStatusPcc, 0x0200000000000000u);
  EXPECT_EQ(kMciStatusS, 0x0100000000000000u);
  EXPECT_EQ(kMciStatusAr, 0x0080000000000000u);
  EXPECT_EQ(kMciStatusCecMask, 0x001fffc000000000u);
  EXPECT_EQ(kMciStatusOtherInfoMask, 0x01ffffff00000000u);
}

// ---------------------------------------------------------------------------
// MCA error code (SDM Tables 16-7 and 16-8)

TEST(McaErrorCodeTest, SimpleCodes) {
  EXPECT_EQ(DescribeMcaErrorCode(0x0000), "no error");
  EXPECT_EQ(DescribeMcaErrorCode(0x0001), "unclassified");
  EXPECT_EQ(DescribeMcaErrorCode(0x0002), "microcode ROM parity error");
  EXPECT_EQ(DescribeMcaErrorCode(0x0003), "external error");
  EXPECT_EQ(DescribeMcaErrorCode(0x0004), "FRC error");
  EXPECT_EQ(DescribeMcaErrorCode(0x0005), "internal parity error");
  EXPECT_EQ(DescribeMcaErrorCode(0x0006), "SMM handler code access violation");
  EXPECT_EQ(DescribeMcaErrorCode(0x0400), "internal timer error");
  EXPECT_EQ(DescribeMcaErrorCode(0x0401), "internal unclassified error");
  EXPECT_EQ(DescribeMcaErrorCode(0x07ff), "internal unclassified error");
  // 0x0e0b fits the bus form too; the SDM lists it as the simple I/O error.
  EXPECT_EQ(DescribeMcaErrorCode(0x0e0b), "I/O error");
  EXPECT_EQ(DecodeMcaErrorCode(0x0e0b).error_class, McaErrorClass::kIo);
  EXPECT_FALSE(DecodeMcaErrorCode(0x0005).compound);
}

TEST(McaErrorCodeTest, GenericCacheHierarchy) {
  EXPECT_EQ(DescribeMcaErrorCode(0x000c),
            "generic cache hierarchy error LL=L0");
  EXPECT_EQ(DescribeMcaErrorCode(0x000f),
            "generic cache hierarchy error LL=LG");
  EXPECT_EQ(DescribeMcaErrorCode(0x100f),
            "generic cache hierarchy error LL=LG F=1");
}

TEST(McaErrorCodeTest, Tlb) {
  EXPECT_EQ(DescribeMcaErrorCode(0x0014), "TLB error TT=D LL=L0");
  EXPECT_EQ(DescribeMcaErrorCode(0x0011), "TLB error TT=I LL=L1");
  EXPECT_EQ(DescribeMcaErrorCode(0x001d), "TLB error TT=reserved(3) LL=L1");
}

TEST(McaErrorCodeTest, MemoryController) {
  const McaErrorCode r = DecodeMcaErrorCode(0x009f);
  EXPECT_EQ(r.error_class, McaErrorClass::kMemoryController);
  EXPECT_TRUE(r.compound);
  EXPECT_FALSE(r.filtered);
  EXPECT_EQ(r.mmm, 1u);
  EXPECT_EQ(r.cccc, 0xfu);
  EXPECT_EQ(DescribeMcaErrorCode(0x0080),
            "memory controller error MMM=GEN CCCC=0");
  EXPECT_EQ(DescribeMcaErrorCode(0x00ae),
            "memory controller error MMM=WR CCCC=14");
  EXPECT_EQ(DescribeMcaErrorCode(0x00b1),
            "memory controller error MMM=AC CCCC=1");
  EXPECT_EQ(DescribeMcaErrorCode(0x00f2),
            "memory controller error MMM=reserved(7) CCCC=2");
}

TEST(McaErrorCodeTest, CacheHierarchy) {
  const McaErrorCode r = DecodeMcaErrorCode(0x0135);
  EXPECT_EQ(r.error_class, McaErrorClass::kCacheHierarchy);
  EXPECT_EQ(r.rrrr, 3u);
  EXPECT_EQ(r.tt, 1u);
  EXPECT_EQ(r.ll, 1u);
  EXPECT_EQ(DescribeMcaErrorCode(0x0150),
            "cache hierarchy error TT=I LL=L0 RRRR=IRD");
  EXPECT_EQ(DescribeMcaErrorCode(0x017a),
            "cache hierarchy error TT=G LL=L2 RRRR=EVICT");
  EXPECT_EQ(DescribeMcaErrorCode(0x0183),
            "cache hierarchy error TT=I LL=LG RRRR=SNOOP");
  EXPECT_EQ(DescribeMcaErrorCode(0x01a6),
            "cache hierarchy error TT=D LL=L2 RRRR=reserved(10)");
}

TEST(McaErrorCodeTest, ExtendedMemory) {
  EXPECT_EQ(DescribeMcaErrorCode(0x0281),
            "extended memory error MMM=GEN CCCC=1");
  EXPECT_EQ(DescribeMcaErrorCode(0x12a5),
            "extended memory error MMM=WR CCCC=5 F=1");
}

TEST(McaErrorCodeTest, BusInterconnect) {
  const McaErrorCode r = DecodeMcaErrorCode(0x0c13);
  EXPECT_EQ(r.error_class, McaErrorClass::kBusInterconnect);
  EXPECT_EQ(r.pp, 2u);
  EXPECT_EQ(r.t, 0u);
  EXPECT_EQ(r.rrrr, 1u);
  EXPECT_EQ(r.ii, 0u);
  EXPECT_EQ(r.ll, 3u);
  EXPECT_EQ(DescribeMcaErrorCode(0x0c13),
            "bus/interconnect error PP=OBS T=NOTIMEOUT RRRR=RD II=M LL=LG");
  EXPECT_EQ(DescribeMcaErrorCode(0x0e0f),
            "bus/interconnect error PP=GEN T=NOTIMEOUT RRRR=ERR II=OTHER "
            "LL=LG");
  EXPECT_EQ(DescribeMcaErrorCode(0x0905),
            "bus/interconnect error PP=SRC T=TIMEOUT RRRR=ERR II=reserved(1) "
            "LL=L1");
  EXPECT_EQ(DescribeMcaErrorCode(0x0a28),
            "bus/interconnect error PP=RES T=NOTIMEOUT RRRR=WR II=IO LL=L0");
  // With F set 0x0e0b is no longer the simple I/O error code.
  EXPECT_EQ(DescribeMcaErrorCode(0x1e0b),
            "bus/interconnect error PP=GEN T=NOTIMEOUT RRRR=ERR II=IO LL=LG "
            "F=1");
}

TEST(McaErrorCodeTest, UnknownEncodings) {
  for (uint32_t code : {0x0007u, 0x000bu, 0x0020u, 0x0200u, 0x0300u, 0x1005u,
                        0x1400u, 0x2000u, 0x8135u}) {
    SCOPED_TRACE(code);
    const McaErrorCode r = DecodeMcaErrorCode(code);
    EXPECT_EQ(r.error_class, McaErrorClass::kUnknown);
    EXPECT_FALSE(r.compound);
    EXPECT_FALSE(r.filtered);
    EXPECT_EQ(DescribeMcaErrorCode(code), "unknown error code");
  }
  // Only bits 15:0 are the error code.
  EXPECT_EQ(DecodeMcaErrorCode(0x10135).error_class,
            McaErrorClass::kCacheHierarchy);
}

// ---------------------------------------------------------------------------
// IA32_MCG_STATUS

TEST(McgStatusTest, RipvMcip) {
  const McgStatusFields f = DecodeMcgStatus(0x5);
  EXPECT_TRUE(f.ripv);
  EXPECT_FALSE(f.eipv);
  EXPECT_TRUE(f.mcip);
  EXPECT_FALSE(f.lmce_s);
  EXPECT_EQ(f.reserved, 0u);
  EXPECT_EQ(DescribeMcgStatus(0x5), "RIPV|MCIP");
}

TEST(McgStatusTest, AllAndNoneAndReserved) {
  EXPECT_EQ(DescribeMcgStatus(0), "none");
  EXPECT_EQ(DescribeMcgStatus(0xf), "RIPV|EIPV|MCIP|LMCE_S");
  EXPECT_EQ(DescribeMcgStatus(0x16), "EIPV|MCIP reserved=0x10");
  EXPECT_EQ(DecodeMcgStatus(0x8000000000000006).reserved, 0x8000000000000000u);
}

// ---------------------------------------------------------------------------
// IA32_MCG_CAP

TEST(McgCapTest, ThirtyTwoBanksWithCtl) {
  const McgCapFields f = DecodeMcgCap(0x120);
  EXPECT_EQ(f.count, 32u);
  EXPECT_TRUE(f.ctl_p);
  EXPECT_FALSE(f.ser_p);
  EXPECT_FALSE(f.cmci_p);
  EXPECT_EQ(DescribeMcgCap(0x120), "count=32 CTL_P");
}

TEST(McgCapTest, SerP) {
  const McgCapFields f = DecodeMcgCap(0x1000100);
  EXPECT_EQ(f.count, 0u);
  EXPECT_TRUE(f.ctl_p);
  EXPECT_TRUE(f.ser_p);
  EXPECT_EQ(DescribeMcgCap(0x1000100), "count=0 CTL_P|SER_P");
  EXPECT_EQ(DescribeMcgCap(0x100010a), "count=10 CTL_P|SER_P");  // QEMU's
  // KVM_MCE_CAP_SUPPORTED (CTL_P|CMCI_P|SER_P|LMCE_P) with 32 banks.
  EXPECT_EQ(DescribeMcgCap(0x9000520), "count=32 CTL_P|CMCI_P|SER_P|LMCE_P");
}

TEST(McgCapTest, ExtendedRegistersAndAllFlags) {
  const McgCapFields f = DecodeMcgCap(0x0a0209);
  EXPECT_EQ(f.count, 9u);
  EXPECT_TRUE(f.ext_p);
  EXPECT_EQ(f.ext_cnt, 10u);
  EXPECT_EQ(DescribeMcgCap(0x0a0209), "count=9 EXT_P ext_cnt=10");
  EXPECT_EQ(DescribeMcgCap(0x0f000f00),
            "count=0 CTL_P|EXT_P|CMCI_P|TES_P|SER_P|EMC_P|ELOG_P|LMCE_P "
            "ext_cnt=0");
  const McgCapFields all = DecodeMcgCap(0x0f000f00);
  EXPECT_TRUE(all.tes_p && all.emc_p && all.elog_p && all.lmce_p);
}

TEST(McgCapTest, ReservedBits) {
  EXPECT_EQ(DescribeMcgCap(0x1000f000), "count=0 reserved=0x1000f000");
  EXPECT_EQ(DecodeMcgCap(0x1000f000).reserved, 0x1000f000u);
}

}  // namespace
}  // namespace vexstate::x86
