// The arm64 exception-state codec and rules, on every host (no KVM). The kernel
// behaviour the cases encode is in exception_state.h; the same rules run
// against real KVM in
// //tests/arm64:nested_kvm_test.
#include "vmm/arch/arm64/exception_state.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "vmm/arch/arm64/esr_decode.h"
#include "vmm/arch/arm64/reg_ids.h"

namespace vexstate::arm64 {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;

constexpr SerrorCaps kRas = {/*inject_serror_esr=*/true,
                             /*inject_ext_dabt=*/true};
constexpr SerrorCaps kNoRas = {/*inject_serror_esr=*/false,
                               /*inject_ext_dabt=*/true};

SerrorEvents Pending(std::optional<uint64_t> esr) {
  SerrorEvents e;
  e.serror_pending = true;
  e.serror_has_esr = esr.has_value();
  e.serror_esr = esr.value_or(0);
  return e;
}

v1::Arm64ExceptionState State(bool pending, bool has_esr, uint64_t esr,
                              uint64_t disr = 0) {
  v1::Arm64ExceptionState s;
  s.set_serror_pending(pending);
  s.set_serror_has_esr(has_esr);
  s.set_serror_esr(esr);
  s.set_disr_el1(disr);
  return s;
}

// -----------------------------------------------------------------------------
// encode

TEST(EncodeTest, HasEsrIsTheHostCapabilityNotAnEvent) {
  // GET on a FEAT_RAS host before any injection: pending=0 has_esr=1 esr=0
  // (observed on 6.1).
  SerrorEvents get;
  get.serror_has_esr = true;
  v1::Arm64ExceptionState s = EncodeExceptionState(get, 0);
  EXPECT_FALSE(s.serror_pending());
  EXPECT_TRUE(s.serror_has_esr());
  EXPECT_EQ(s.serror_esr(), 0u);
}

TEST(EncodeTest, EsrOnlyWhilePendingAndExtDabtNeverReported) {
  SerrorEvents get;
  get.serror_has_esr = true;
  get.serror_esr = 0x1234;  // stale: not pending
  get.ext_dabt_pending = true;
  v1::Arm64ExceptionState s = EncodeExceptionState(get, 0x80000000);
  EXPECT_EQ(s.serror_esr(), 0u);
  EXPECT_FALSE(s.ext_dabt_pending());
  EXPECT_EQ(s.disr_el1(), 0x80000000u);
  s = EncodeExceptionState(Pending(0x1234), 0);
  EXPECT_TRUE(s.serror_pending());
  EXPECT_EQ(s.serror_esr(), 0x1234u);
}

// -----------------------------------------------------------------------------
// restore

TEST(PlanRestoreTest, PendingWithEsrOnRasHost) {
  absl::StatusOr<ExceptionRestorePlan> plan = PlanExceptionRestore(
      State(true, true, 0x1234, 0x42), SerrorEvents{}, kRas, false, 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->set_events);
  EXPECT_TRUE(plan->events.serror_pending);
  EXPECT_TRUE(plan->events.serror_has_esr);
  EXPECT_EQ(plan->events.serror_esr, 0x1234u);
  EXPECT_EQ(plan->expected_iss, 0x1234u);
  EXPECT_EQ(plan->disr_el1, 0x42u);
  EXPECT_TRUE(plan->degradation.empty());
}

TEST(PlanRestoreTest, NothingPendingSetsNothing) {
  // What every capture on a RAS host holds: has_esr=1 (the capability), nothing
  // pending.
  absl::StatusOr<ExceptionRestorePlan> plan = PlanExceptionRestore(
      State(false, true, 0), SerrorEvents{}, kNoRas, false, 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->set_events);
}

TEST(PlanRestoreTest, NoEsrMeansKvmPicksIds) {
  absl::StatusOr<ExceptionRestorePlan> plan = PlanExceptionRestore(
      State(true, false, 0), SerrorEvents{}, kRas, false, 0);
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->events.serror_has_esr);
  EXPECT_EQ(plan->expected_iss, 0x1000000u);
  plan = PlanExceptionRestore(State(true, false, 0), SerrorEvents{}, kNoRas,
                              false, 0);
  ASSERT_TRUE(plan.ok());
  EXPECT_EQ(plan->expected_iss, std::nullopt);
}

TEST(PlanRestoreTest, EsrOutsideIssIsInvalid) {
  for (uint64_t esr :
       {uint64_t{1} << 25, uint64_t{1} << 63, uint64_t{0xbe001234}}) {
    absl::StatusOr<ExceptionRestorePlan> plan = PlanExceptionRestore(
        State(true, true, esr), SerrorEvents{}, kRas, false, 0);
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << esr;
    EXPECT_THAT(plan.status().message(), HasSubstr("outside ISS[24:0]"));
  }
}

TEST(PlanRestoreTest, EsrWithoutItsFlagsIsInvalid) {
  EXPECT_EQ(PlanExceptionRestore(State(true, false, 0x1234), SerrorEvents{},
                                 kRas, false, 0)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(PlanExceptionRestore(State(false, true, 0x1234), SerrorEvents{},
                                 kRas, false, 0)
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
}

TEST(PlanRestoreTest, NoRasDestinationRefusesByDefault) {
  absl::StatusOr<ExceptionRestorePlan> plan = PlanExceptionRestore(
      State(true, true, 0x1234), SerrorEvents{}, kNoRas, false, 3);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(
      plan.status().message(),
      AllOf(HasSubstr("vCPU 3"), HasSubstr("KVM_CAP_ARM_INJECT_SERROR_ESR"),
            HasSubstr("ISS 0x1234")));
}

TEST(PlanRestoreTest, NoRasDestinationDegradesWhenAllowed) {
  absl::StatusOr<ExceptionRestorePlan> plan = PlanExceptionRestore(
      State(true, true, 0x1234), SerrorEvents{}, kNoRas, true, 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_TRUE(plan->events.serror_pending);
  EXPECT_FALSE(plan->events.serror_has_esr);
  EXPECT_EQ(plan->expected_iss, std::nullopt);
  EXPECT_THAT(plan->degradation,
              AllOf(HasSubstr("without its syndrome"),
                    HasSubstr("KVM_CAP_ARM_INJECT_SERROR_ESR")));
}

TEST(PlanRestoreTest, ExtDabtNeedsTheCapability) {
  v1::Arm64ExceptionState s;
  s.set_ext_dabt_pending(true);
  SerrorCaps caps = kRas;
  caps.inject_ext_dabt = false;
  EXPECT_EQ(
      PlanExceptionRestore(s, SerrorEvents{}, caps, true, 0).status().code(),
      absl::StatusCode::kFailedPrecondition);
  absl::StatusOr<ExceptionRestorePlan> plan =
      PlanExceptionRestore(s, SerrorEvents{}, kRas, false, 0);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->set_events);
  EXPECT_TRUE(plan->events.ext_dabt_pending);
  EXPECT_FALSE(plan->events.serror_pending);
}

TEST(PlanRestoreTest, AnSerrorCannotBeCancelled) {
  absl::StatusOr<ExceptionRestorePlan> plan = PlanExceptionRestore(
      State(false, true, 0), Pending(0x1234), kRas, false, 0);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(), HasSubstr("cannot be cancelled"));
}

TEST(PlanRestoreTest, AnotherSyndromeIsNotOverwritten) {
  absl::StatusOr<ExceptionRestorePlan> plan = PlanExceptionRestore(
      State(true, true, 0x99), Pending(0x1234), kRas, false, 0);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(),
              AllOf(HasSubstr("ISS 0x1234"), HasSubstr("ISS 0x99")));
}

TEST(PlanRestoreTest, TheSameSerrorAgainChangesNothing) {
  absl::StatusOr<ExceptionRestorePlan> plan = PlanExceptionRestore(
      State(true, true, 0x1234, 7), Pending(0x1234), kRas, false, 0);
  ASSERT_TRUE(plan.ok()) << plan.status();
  EXPECT_FALSE(plan->set_events);
  EXPECT_EQ(plan->disr_el1, 7u);
}

// -----------------------------------------------------------------------------
// injection

SErrorRequest Request(std::optional<uint64_t> esr,
                      SErrorOverwrite on_pending = SErrorOverwrite::kRefuse) {
  SErrorRequest r;
  r.vcpu = 0;
  r.esr = esr;
  r.on_pending = on_pending;
  return r;
}

TEST(PlanInjectionTest, FreshVcpu) {
  absl::StatusOr<SerrorInjectionPlan> plan =
      PlanSerrorInjection(Request(0x1234), SerrorEvents{}, kRas);
  ASSERT_TRUE(plan.ok());
  EXPECT_TRUE(plan->set_events);
  EXPECT_EQ(plan->outcome, SErrorOutcome::kPending);
  EXPECT_EQ(plan->expected_iss, 0x1234u);
}

TEST(PlanInjectionTest, BadEsrIsInvalidBeforeAnythingElse) {
  for (uint64_t esr : {uint64_t{1} << 25, uint64_t{1} << 63}) {
    // Even on a host without RAS and with another SError pending: the value
    // itself is wrong.
    absl::StatusOr<SerrorInjectionPlan> plan =
        PlanSerrorInjection(Request(esr), Pending(0x1), kNoRas);
    EXPECT_EQ(plan.status().code(), absl::StatusCode::kInvalidArgument) << esr;
  }
}

TEST(PlanInjectionTest, EsrNeedsRas) {
  absl::StatusOr<SerrorInjectionPlan> plan =
      PlanSerrorInjection(Request(0x1234), SerrorEvents{}, kNoRas);
  EXPECT_EQ(plan.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(plan.status().message(),
              HasSubstr("KVM_CAP_ARM_INJECT_SERROR_ESR"));
  EXPECT_TRUE(
      PlanSerrorInjection(Request(std::nullopt), SerrorEvents{}, kNoRas).ok());
}

TEST(PlanInjectionTest, OverwritePolicies) {
  const SerrorEvents current = Pending(0x1234);
  absl::StatusOr<SerrorInjectionPlan> refuse =
      PlanSerrorInjection(Request(0x99), current, kRas);
  EXPECT_EQ(refuse.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(refuse.status().message(),
              AllOf(HasSubstr("ISS 0x1234"), HasSubstr("ISS 0x99")));

  absl::StatusOr<SerrorInjectionPlan> keep = PlanSerrorInjection(
      Request(0x99, SErrorOverwrite::kKeepPending), current, kRas);
  ASSERT_TRUE(keep.ok());
  EXPECT_FALSE(keep->set_events);
  EXPECT_EQ(keep->outcome, SErrorOutcome::kKeptPending);
  EXPECT_THAT(keep->detail, HasSubstr("nothing changed"));

  absl::StatusOr<SerrorInjectionPlan> replace = PlanSerrorInjection(
      Request(0x99, SErrorOverwrite::kReplace), current, kRas);
  ASSERT_TRUE(replace.ok());
  EXPECT_TRUE(replace->set_events);
  EXPECT_EQ(replace->outcome, SErrorOutcome::kReplaced);
  EXPECT_EQ(replace->events.serror_esr, 0x99u);
}

TEST(PlanInjectionTest, SameSyndromeIsAlreadyPending) {
  absl::StatusOr<SerrorInjectionPlan> plan =
      PlanSerrorInjection(Request(0x1234), Pending(0x1234), kRas);
  ASSERT_TRUE(plan.ok());
  EXPECT_FALSE(plan->set_events);
  EXPECT_EQ(plan->outcome, SErrorOutcome::kAlreadyPending);
  // No ESR requested on a RAS host = KVM's IDS syndrome, which differs from
  // 0x1234.
  EXPECT_EQ(PlanSerrorInjection(Request(std::nullopt), Pending(0x1234), kRas)
                .status()
                .code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(PlanSerrorInjection(Request(std::nullopt), Pending(0x1000000), kRas)
                ->outcome,
            SErrorOutcome::kAlreadyPending);
  // Without RAS neither syndrome is known: one SError either way.
  SerrorEvents no_ras;
  no_ras.serror_pending = true;
  EXPECT_EQ(PlanSerrorInjection(Request(std::nullopt), no_ras, kNoRas)->outcome,
            SErrorOutcome::kAlreadyPending);
}

// -----------------------------------------------------------------------------
// read-back after SET (Linux 6.17 may deliver during the SET)

constexpr uint64_t kVbar = 0x40100800;
constexpr uint64_t kPc = 0x40101234;

SerrorEntryView Before(bool masked) {
  SerrorEntryView v;
  v.pc = kPc;
  v.pstate = kPstateModeEl1h | kPstateD | kPstateI | kPstateF |
             (masked ? kPstateA : 0);
  v.vbar_el1 = kVbar;
  return v;
}

// The registers after KVM delivered the SError during the SET (Linux >= 6.17).
SerrorEntryView Delivered(uint64_t iss) {
  SerrorEntryView v;
  v.pc = kVbar + 0x380;
  v.pstate = kPstateModeEl1h | kPstateDaif;
  v.elr_el1 = kPc;
  v.spsr_el1 = Before(false).pstate;
  v.esr_el1 = SerrorEsrAsSeenByGuest(iss);
  v.vbar_el1 = kVbar;
  return v;
}

TEST(JudgeTest, PendingWithTheRightSyndrome) {
  EXPECT_EQ(
      *JudgeSerrorSet(0x1234, Before(true), Pending(0x1234), Before(true), 0),
      SErrorOutcome::kPending);
  // Unmasked but still pending: Linux < 6.17 keeps it until the next guest
  // entry.
  EXPECT_EQ(
      *JudgeSerrorSet(0x1234, Before(false), Pending(0x1234), Before(false), 0),
      SErrorOutcome::kPending);
  EXPECT_EQ(JudgeSerrorSet(0x1234, Before(true), Pending(0x99), Before(true), 0)
                .status()
                .code(),
            absl::StatusCode::kInternal);
}

TEST(JudgeTest, MaskedAndNotPendingIsLost) {
  absl::StatusOr<SErrorOutcome> outcome =
      JudgeSerrorSet(0x1234, Before(true), SerrorEvents{}, Before(true), 0);
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(outcome.status().message(),
              AllOf(HasSubstr("lost"), HasSubstr("PSTATE.A=1")));
}

TEST(JudgeTest, UnmaskedAndCommittedIsDelivered) {
  EXPECT_EQ(*JudgeSerrorSet(0x1234, Before(false), SerrorEvents{},
                            Delivered(0x1234), 0),
            SErrorOutcome::kDelivered);
  // Without a known syndrome only the entry itself is checked.
  EXPECT_EQ(*JudgeSerrorSet(std::nullopt, Before(false), SerrorEvents{},
                            Delivered(0x0), 0),
            SErrorOutcome::kDelivered);
}

TEST(JudgeTest, UnmaskedButNoEntryIsLost) {
  // Not pending, registers untouched: nobody holds the SError.
  absl::StatusOr<SErrorOutcome> outcome =
      JudgeSerrorSet(0x1234, Before(false), SerrorEvents{}, Before(false), 0);
  EXPECT_EQ(outcome.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(outcome.status().message(),
              HasSubstr("PC is not the SError vector"));

  SerrorEntryView wrong_iss = Delivered(0x99);
  EXPECT_THAT(
      JudgeSerrorSet(0x1234, Before(false), SerrorEvents{}, wrong_iss, 0)
          .status()
          .message(),
      HasSubstr("ISS is 0x99"));
  SerrorEntryView wrong_elr = Delivered(0x1234);
  wrong_elr.elr_el1 = 0;
  EXPECT_EQ(JudgeSerrorSet(0x1234, Before(false), SerrorEvents{}, wrong_elr, 0)
                .status()
                .code(),
            absl::StatusCode::kInternal);
  SerrorEntryView wrong_ec = Delivered(0x1234);
  wrong_ec.esr_el1 = 0x96000010;  // a data abort
  EXPECT_THAT(JudgeSerrorSet(0x1234, Before(false), SerrorEvents{}, wrong_ec, 0)
                  .status()
                  .message(),
              HasSubstr("not 0x2f"));
}

TEST(VectorTest, OffsetsByMode) {
  EXPECT_EQ(SerrorVectorAddress(0x1000, kPstateModeEl1t), 0x1180u);
  EXPECT_EQ(SerrorVectorAddress(0x1000, kPstateModeEl1h), 0x1380u);
  EXPECT_EQ(SerrorVectorAddress(0x1000, kPstateModeEl0t), 0x1580u);
  EXPECT_EQ(SerrorVectorAddress(0x1000, 0x10), 0x1780u);  // AArch32 user
  EXPECT_EQ(SerrorVectorAddress(0x1000, 0x9),
            std::nullopt);  // EL2h: not a guest EL1 entry
  EXPECT_EQ(SyncVectorAddress(0x1000, kPstateModeEl1h), 0x1200u);
}

TEST(ExternalAbortTest, EntryIsChecked) {
  SerrorEntryView before = Before(true);
  SerrorEntryView after;
  after.pc = kVbar + 0x200;
  after.elr_el1 = kPc;
  after.esr_el1 = (uint64_t{kEcDabtCur} << 26) | kEsrIl | 0x10;
  after.vbar_el1 = kVbar;
  EXPECT_TRUE(JudgeExternalAbortEntry(before, after, 0).ok());
  after.esr_el1 = (uint64_t{kEcDabtCur} << 26) | kEsrIl | 0x05;
  EXPECT_THAT(JudgeExternalAbortEntry(before, after, 0).message(),
              HasSubstr("DFSC is 0x5"));
  after = before;  // nothing happened
  EXPECT_EQ(JudgeExternalAbortEntry(before, after, 0).code(),
            absl::StatusCode::kInternal);
}

}  // namespace
}  // namespace vexstate::arm64
