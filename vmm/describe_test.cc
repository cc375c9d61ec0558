#include "vmm/describe.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace vexstate {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

// The uncorrected error used across vexstate's tests: VAL|UC|EN|MISCV|ADDRV, MCA code 0x9f.
constexpr uint64_t kMcStatus = 0xbc0000000000009full;

v1::VcpuExceptionState X86(uint32_t vcpu = 0) {
  v1::VcpuExceptionState state;
  state.set_vcpu_index(vcpu);
  state.mutable_x86_64();
  return state;
}

v1::VcpuExceptionState Arm64(uint32_t vcpu = 0) {
  v1::VcpuExceptionState state;
  state.set_vcpu_index(vcpu);
  state.mutable_arm64();
  return state;
}

v1::X86MachineCheckBank* AddBank(v1::X86MachineCheckState* mc, uint32_t index, uint64_t status, uint64_t addr,
                                 uint64_t misc) {
  v1::X86MachineCheckBank* bank = mc->add_banks();
  bank->set_index(index);
  bank->set_ctl(~0ull);
  bank->set_status(status);
  bank->set_addr(addr);
  bank->set_misc(misc);
  return bank;
}

TEST(DescribeExceptionState, EmptyStatesSayNothingPending) {
  EXPECT_THAT(DescribeExceptionState(X86(0)), ElementsAre("vCPU 0: nothing pending"));
  EXPECT_THAT(DescribeExceptionState(Arm64(3)), ElementsAre("vCPU 3: nothing pending"));
  v1::VcpuExceptionState no_arch;
  no_arch.set_vcpu_index(1);
  EXPECT_THAT(DescribeExceptionState(no_arch), ElementsAre("vCPU 1: nothing pending"));
}

TEST(DescribeExceptionState, PendingMachineCheckShowsMcgStatusAndValidBanksOnly) {
  v1::VcpuExceptionState state = X86();
  v1::X86ExceptionState* x = state.mutable_x86_64();
  x->mutable_exception()->set_pending(true);
  x->mutable_exception()->set_vector(18);
  v1::X86MachineCheckState* mc = x->mutable_machine_check();
  mc->set_mcg_cap(0x120);  // 32 banks | MCG_CTL_P, as this host's KVM sets it up
  mc->set_mcg_status(0x5);
  AddBank(mc, 2, 0, 0, 0);  // VAL clear: not shown
  AddBank(mc, 3, kMcStatus, 0x12345000, 0x86);
  EXPECT_THAT(DescribeExceptionState(state),
              ElementsAre("vCPU 0: #MC machine check pending; MCG_STATUS RIPV|MCIP; bank 3: VAL|UC|EN|MISCV|ADDRV "
                          "mca=0x009f (memory controller error MMM=RD CCCC=unspecified) addr=0x12345000 misc=0x86"));
}

TEST(DescribeExceptionState, MachineCheckWithoutValidBankSaysSo) {
  v1::VcpuExceptionState state = X86();
  state.mutable_x86_64()->mutable_exception()->set_pending(true);
  state.mutable_x86_64()->mutable_exception()->set_vector(18);
  state.mutable_x86_64()->mutable_machine_check()->set_mcg_status(0x5);
  EXPECT_THAT(DescribeExceptionState(state),
              ElementsAre("vCPU 0: #MC machine check pending; MCG_STATUS RIPV|MCIP; no bank holds a valid error"));
}

// The guest took the #MC and holds in its handler: MCIP stays set, the bank still reports.
TEST(DescribeExceptionState, MachineCheckInProgressIsAnInFlightItem) {
  v1::VcpuExceptionState state = X86(1);
  v1::X86MachineCheckState* mc = state.mutable_x86_64()->mutable_machine_check();
  mc->set_mcg_status(0x5);
  AddBank(mc, 3, kMcStatus, 0x12345000, 0x86);
  std::vector<std::string> lines = DescribeExceptionState(state);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr("vCPU 1: machine check in progress (guest in its #MC handler); "
                                  "MCG_STATUS RIPV|MCIP; bank 3: VAL|UC|EN|MISCV|ADDRV"));
}

TEST(DescribeExceptionState, LoggedBankWithoutMcipIsShown) {
  v1::VcpuExceptionState state = X86();
  // A corrected error (UC clear): logged, never signalled as #MC.
  AddBank(state.mutable_x86_64()->mutable_machine_check(), 0, 0x9000000000000135ull, 0, 0);
  std::vector<std::string> lines = DescribeExceptionState(state);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr("vCPU 0: machine-check banks hold logged errors (no #MC in progress); bank 0: "
                                  "VAL|EN mca=0x0135"));
  EXPECT_THAT(lines[0], ::testing::Not(HasSubstr("addr=")));
}

TEST(DescribeExceptionState, PendingPageFaultShowsErrorCodeAndCr2Payload) {
  v1::VcpuExceptionState state = X86();
  v1::X86Exception* ex = state.mutable_x86_64()->mutable_exception();
  ex->set_pending(true);
  ex->set_vector(14);
  ex->set_has_error_code(true);
  ex->set_error_code(0x2);
  ex->set_has_payload(true);
  ex->set_payload(0xdead000);
  EXPECT_THAT(DescribeExceptionState(state), ElementsAre("vCPU 0: #PF pending, error code 0x2, CR2 payload 0xdead000"));
}

TEST(DescribeExceptionState, InjectedExceptionAndDebugPayload) {
  v1::VcpuExceptionState state = X86();
  v1::X86Exception* ex = state.mutable_x86_64()->mutable_exception();
  ex->set_injected(true);
  ex->set_vector(13);
  ex->set_has_error_code(true);
  ex->set_error_code(0x18);
  EXPECT_THAT(DescribeExceptionState(state), ElementsAre("vCPU 0: #GP being delivered (injected), error code 0x18"));
  ex->Clear();
  ex->set_pending(true);
  ex->set_vector(1);
  ex->set_has_payload(true);
  ex->set_payload(0x4000);
  EXPECT_THAT(DescribeExceptionState(state), ElementsAre("vCPU 0: #DB pending, DR6 payload 0x4000"));
}

TEST(DescribeExceptionState, VectorWithoutMnemonicUsesItsName) {
  v1::VcpuExceptionState state = X86();
  state.mutable_x86_64()->mutable_exception()->set_pending(true);
  state.mutable_x86_64()->mutable_exception()->set_vector(15);
  EXPECT_THAT(DescribeExceptionState(state), ElementsAre("vCPU 0: reserved (vector 15) pending"));
}

TEST(DescribeExceptionState, NmiStates) {
  v1::VcpuExceptionState state = X86();
  v1::X86Nmi* nmi = state.mutable_x86_64()->mutable_nmi();
  nmi->set_pending(true);
  EXPECT_THAT(DescribeExceptionState(state), ElementsAre("vCPU 0: NMI pending"));
  nmi->set_masked(true);
  EXPECT_THAT(DescribeExceptionState(state),
              ElementsAre("vCPU 0: NMI pending (NMIs masked: guest in its NMI handler)"));
  nmi->set_pending(false);
  EXPECT_THAT(DescribeExceptionState(state), ElementsAre("vCPU 0: NMIs masked (guest in its NMI handler until IRET)"));
  nmi->set_masked(false);
  nmi->set_injected(true);
  EXPECT_THAT(DescribeExceptionState(state), ElementsAre("vCPU 0: NMI being delivered (injected)"));
}

TEST(DescribeExceptionState, EveryX86ItemGetsItsOwnLine) {
  v1::VcpuExceptionState state = X86(2);
  v1::X86ExceptionState* x = state.mutable_x86_64();
  x->mutable_exception()->set_pending(true);
  x->mutable_exception()->set_vector(6);
  x->mutable_interrupt()->set_injected(true);
  x->mutable_interrupt()->set_vector(32);
  x->mutable_nmi()->set_pending(true);
  x->set_has_sipi_vector(true);
  x->set_sipi_vector(0x10);
  x->mutable_smi()->set_pending(true);
  x->set_triple_fault_pending(true);
  EXPECT_THAT(DescribeExceptionState(state),
              ElementsAre("vCPU 2: #UD pending", "vCPU 2: interrupt 32 being delivered (injected)",
                          "vCPU 2: NMI pending", "vCPU 2: SIPI vector 0x10 latched", "vCPU 2: SMI pending",
                          "vCPU 2: triple fault pending (the vCPU will shut down)"));
}

TEST(DescribeExceptionState, PendingSErrorWithEsrIsDecodedAsTheGuestWillSeeIt) {
  v1::VcpuExceptionState state = Arm64();
  v1::Arm64ExceptionState* a = state.mutable_arm64();
  a->set_serror_pending(true);
  a->set_serror_has_esr(true);
  a->set_serror_esr(0x1234);
  EXPECT_THAT(DescribeExceptionState(state),
              ElementsAre("vCPU 0: SError pending, ESR 0xbe001234: EC=0x2f (SError interrupt) IL=1 ISS=0x001234 "
                          "IDS=0 IESB=0 AET=0b100 EA=1 DFSC=0x34 (reserved)"));
}

TEST(DescribeExceptionState, PendingSErrorWithoutEsrNamesTheImplementationDefinedSyndrome) {
  v1::VcpuExceptionState state = Arm64();
  state.mutable_arm64()->set_serror_pending(true);
  std::vector<std::string> lines = DescribeExceptionState(state);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr("vCPU 0: SError pending, no syndrome recorded (KVM picks ISS 0x1000000, IDS), "
                                  "ESR 0xbf000000: EC=0x2f (SError interrupt)"));
}

TEST(DescribeExceptionState, SErrorEsrOutsideIssIsFlagged) {
  v1::VcpuExceptionState state = Arm64();
  state.mutable_arm64()->set_serror_pending(true);
  state.mutable_arm64()->set_serror_has_esr(true);
  state.mutable_arm64()->set_serror_esr(0x2000000);
  std::vector<std::string> lines = DescribeExceptionState(state);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_THAT(lines[0], HasSubstr("serror_esr 0x2000000 has bits above ISS[24:0]"));
}

TEST(DescribeExceptionState, DisrAndExternalAbortLines) {
  v1::VcpuExceptionState state = Arm64(1);
  state.mutable_arm64()->set_ext_dabt_pending(true);
  state.mutable_arm64()->set_disr_el1(0x80000c11);
  EXPECT_THAT(DescribeExceptionState(state),
              ElementsAre("vCPU 1: synchronous external data abort pending (KVM_ARM_INJECT_EXT_DABT)",
                          "vCPU 1: DISR_EL1 0x80000c11: A=1 IDS=0 AET=0b011 (UER: recoverable state) EA=0 "
                          "DFSC=0x11 (asynchronous SError interrupt)"));
}

}  // namespace
}  // namespace vexstate
