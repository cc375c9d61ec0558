// The x86_64 exception state on real KVM, with the witness guest as the judge: every
// scenario passes only when the guest itself reports the exception, exactly once, with the
// values injected; each has a negative control that must see nothing.
#include <string>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "guests/common/witness_abi.h"
#include "tests/testing/witness_vm.h"

namespace vexstate {
namespace {

using ::testing::HasSubstr;
using testing::WitnessOptions;
using testing::WitnessVm;

// How long a guest gets to take a pending exception after resume, and how long we keep
// watching afterwards to be sure it was taken only once.
constexpr absl::Duration kDeliveryTimeout = absl::Seconds(10);
constexpr absl::Duration kSettle = absl::Milliseconds(300);

// The uncorrected error used throughout: VAL|UC|EN|MISCV|ADDRV, MCA code 0x9f
// (generic cache hierarchy, data read); MCG_STATUS = RIPV|MCIP.
constexpr uint64_t kMcStatus = 0xbc0000000000009full;
constexpr uint64_t kMcAddr = 0x12345000;
constexpr uint64_t kMcMisc = 0x86;
constexpr uint64_t kMcgStatus = 0x5;
constexpr uint64_t kMcgStatusMcip = 0x4;

#define ASSERT_OK(expr)                                      \
  do {                                                       \
    const absl::Status _s = (expr);                          \
    ASSERT_TRUE(_s.ok()) << #expr << ": " << _s.ToString(); \
  } while (0)

template <typename T>
T ValueOrDie(absl::StatusOr<T> v) {
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  return std::move(*v);
}

// Serialises to bytes and parses back: a restore sees nothing but the bytes.
v1::Snapshot ThroughBytes(const v1::Snapshot& snapshot) {
  std::string bytes;
  EXPECT_TRUE(snapshot.SerializeToString(&bytes));
  v1::Snapshot parsed;
  EXPECT_TRUE(parsed.ParseFromString(bytes));
  return parsed;
}

MachineCheckRequest Bank3Error(uint32_t vcpu = 0) {
  MachineCheckRequest mc;
  mc.vcpu = vcpu;
  mc.bank = 3;
  mc.status = kMcStatus;
  mc.addr = kMcAddr;
  mc.misc = kMcMisc;
  mc.mcg_status = kMcgStatus;
  return mc;
}

ExceptionRequest PageFault(uint32_t vcpu, uint64_t cr2) {
  ExceptionRequest pf;
  pf.vcpu = vcpu;
  pf.vector = 14;
  pf.error_code = 0x2;  // write to a non-present page
  pf.payload = cr2;
  return pf;
}

// Boots a 1-vCPU witness, pauses it, runs `inject`, captures, destroys the VM, and returns
// the snapshot as it came back from bytes.
v1::Snapshot InjectAndSnapshot(const WitnessOptions& options,
                               const std::function<void(Vm&)>& inject) {
  auto source = ValueOrDie(WitnessVm::Boot(options));
  EXPECT_TRUE(source->vm().Pause().ok());
  inject(source->vm());
  v1::Snapshot snapshot = ValueOrDie(source->vm().Capture());
  // The source never runs again: it is destroyed here, before the restore.
  return ThroughBytes(snapshot);
}

// The restored guest's reports of `kind`, after waiting for `expected` of them (or the
// timeout when `expected` is 0) and then watching a little longer.
std::vector<WitnessReport> ReportsAfterResume(WitnessVm& w, const std::string& kind, size_t expected) {
  EXPECT_TRUE(w.vm().Resume().ok());
  if (expected > 0) {
    auto got = w.console().WaitFor(kind, std::nullopt, {}, expected, kDeliveryTimeout);
    EXPECT_TRUE(got.ok()) << got.status();
  }
  absl::SleepFor(expected > 0 ? kSettle : absl::Seconds(1));
  EXPECT_TRUE(w.console().vcpu_error().ok()) << w.console().vcpu_error();
  return w.console().Find(kind);
}

TEST(ExceptionWitness, MachineCheckSurvivesRestoreIntoNewVm) {
  v1::Snapshot snapshot = InjectAndSnapshot({}, [](Vm& vm) { ASSERT_OK(vm.InjectMachineCheck(Bank3Error())); });
  const auto& pending = snapshot.vcpus(0).exception().x86_64();
  EXPECT_TRUE(pending.exception().pending());
  EXPECT_EQ(pending.exception().vector(), 18u);

  auto dest = ValueOrDie(WitnessVm::Restore(snapshot));
  std::vector<WitnessReport> exc = ReportsAfterResume(*dest, "EXC", 1);
  ASSERT_EQ(exc.size(), 1u) << dest->console().Transcript();
  EXPECT_EQ(exc[0].Get("vec"), 18u);
  std::vector<WitnessReport> mce = dest->console().Find("MCE");
  ASSERT_EQ(mce.size(), 1u);
  EXPECT_EQ(mce[0].Get("mcg_status") & kMcgStatusMcip, kMcgStatusMcip) << mce[0].line;
  std::vector<WitnessReport> banks = dest->console().Find("MCB");
  ASSERT_EQ(banks.size(), 1u) << dest->console().Transcript();
  EXPECT_EQ(banks[0].Get("bank"), 3u);
  EXPECT_EQ(banks[0].Get("status"), kMcStatus);
  EXPECT_EQ(banks[0].Get("addr"), kMcAddr);
  EXPECT_EQ(banks[0].Get("misc"), kMcMisc);
}

TEST(ExceptionWitness, MachineCheckControlWithoutExceptionStateIsNotTaken) {
  v1::Snapshot snapshot = InjectAndSnapshot({}, [](Vm& vm) { ASSERT_OK(vm.InjectMachineCheck(Bank3Error())); });
  RestorePolicy skip;
  skip.skip_exception_state = true;
  auto dest = ValueOrDie(WitnessVm::Restore(snapshot, skip));
  EXPECT_THAT(ReportsAfterResume(*dest, "EXC", 0), ::testing::IsEmpty()) << dest->console().Transcript();
  // The guest is alive (it would have reported anything pending by now).
  EXPECT_EQ(dest->vm().vcpu_state(0), VcpuRunState::kRunning);
}

TEST(ExceptionWitness, PendingPageFaultKeepsPayloadAndErrorCode) {
  constexpr uint64_t kCr2 = 0xdead000;
  v1::Snapshot snapshot = InjectAndSnapshot({}, [](Vm& vm) { ASSERT_OK(vm.InjectException(PageFault(0, kCr2))); });
  // The payload is deferred: CR2 is not yet written in the captured registers.
  EXPECT_NE(snapshot.vcpus(0).x86_64().cr2(), kCr2);
  const auto& pf = snapshot.vcpus(0).exception().x86_64().exception();
  EXPECT_TRUE(pf.pending());
  EXPECT_TRUE(pf.has_payload());
  EXPECT_EQ(pf.payload(), kCr2);

  auto dest = ValueOrDie(WitnessVm::Restore(snapshot));
  std::vector<WitnessReport> exc = ReportsAfterResume(*dest, "EXC", 1);
  ASSERT_EQ(exc.size(), 1u) << dest->console().Transcript();
  EXPECT_EQ(exc[0].Get("vec"), 14u);
  EXPECT_EQ(exc[0].Get("err"), 0x2u);
  EXPECT_EQ(exc[0].Get("cr2"), kCr2);
}

TEST(ExceptionWitness, PendingPageFaultControlWithoutExceptionStateIsNotTaken) {
  v1::Snapshot snapshot =
      InjectAndSnapshot({}, [](Vm& vm) { ASSERT_OK(vm.InjectException(PageFault(0, 0xdead000))); });
  RestorePolicy skip;
  skip.skip_exception_state = true;
  auto dest = ValueOrDie(WitnessVm::Restore(snapshot, skip));
  EXPECT_THAT(ReportsAfterResume(*dest, "EXC", 0), ::testing::IsEmpty()) << dest->console().Transcript();
}

// The guest holds inside its first NMI handler (NMIs blocked until IRETQ); a second NMI made
// pending then must survive the restore and be taken once after the handler returns.
class NmiWhileMasked : public ::testing::TestWithParam<bool> {};

TEST_P(NmiWhileMasked, SecondNmiSurvivesRestore) {
  const bool restore_exception_state = GetParam();
  WitnessOptions options;
  options.hold_mask = 1u << 2;
  auto source = ValueOrDie(WitnessVm::Boot(options));
  ASSERT_OK(source->vm().Pause());
  ASSERT_OK(source->vm().InjectNmi({0}));
  ASSERT_OK(source->vm().Resume());
  ASSERT_TRUE(source->console().WaitFor("HOLD", 0, {{"vec", 2}}, 1, kDeliveryTimeout).ok())
      << source->console().Transcript();
  ASSERT_OK(source->vm().Pause());
  auto before = ValueOrDie(source->vm().CaptureExceptionState());
  EXPECT_TRUE(before[0].x86_64().nmi().masked()) << "the guest is in its NMI handler";
  EXPECT_FALSE(before[0].x86_64().nmi().pending());
  ASSERT_OK(source->vm().InjectNmi({0}));
  auto after = ValueOrDie(source->vm().CaptureExceptionState());
  EXPECT_TRUE(after[0].x86_64().nmi().pending());
  EXPECT_TRUE(after[0].x86_64().nmi().masked());
  v1::Snapshot snapshot = ThroughBytes(ValueOrDie(source->vm().Capture()));
  source.reset();

  RestorePolicy policy;
  policy.skip_exception_state = !restore_exception_state;
  auto dest = ValueOrDie(WitnessVm::Restore(snapshot, policy));
  ASSERT_OK(dest->WriteControl(VEX_CTL_HOLD_MASK, 0));  // release the first handler
  std::vector<WitnessReport> exc = ReportsAfterResume(*dest, "EXC", restore_exception_state ? 1 : 0);
  if (restore_exception_state) {
    ASSERT_EQ(exc.size(), 1u) << dest->console().Transcript();
    EXPECT_EQ(exc[0].Get("vec"), 2u);
    EXPECT_EQ(exc[0].Get("seq"), 2u) << "the second exception this vCPU has taken since boot";
  } else {
    EXPECT_THAT(exc, ::testing::IsEmpty()) << dest->console().Transcript();
  }
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutExceptionState, NmiWhileMasked, ::testing::Bool(),
                         [](const auto& info) { return info.param ? "Restored" : "ControlNotRestored"; });

TEST(ExceptionWitness, EachVcpuReportsItsOwnPendingException) {
  WitnessOptions options;
  options.vcpus = 2;
  auto source = ValueOrDie(WitnessVm::Boot(options));
  ASSERT_OK(source->vm().Pause());
  ASSERT_OK(source->vm().InjectException(PageFault(0, 0xa000)));
  MachineCheckRequest mc = Bank3Error(1);
  mc.bank = 5;
  ASSERT_OK(source->vm().InjectMachineCheck(mc));
  v1::Snapshot snapshot = ThroughBytes(ValueOrDie(source->vm().Capture()));
  source.reset();

  auto dest = ValueOrDie(WitnessVm::Restore(snapshot));
  std::vector<WitnessReport> exc = ReportsAfterResume(*dest, "EXC", 2);
  ASSERT_EQ(exc.size(), 2u) << dest->console().Transcript();
  auto cpu0 = dest->console().Find("EXC", 0);
  auto cpu1 = dest->console().Find("EXC", 1);
  ASSERT_EQ(cpu0.size(), 1u);
  ASSERT_EQ(cpu1.size(), 1u);
  EXPECT_EQ(cpu0[0].Get("vec"), 14u);
  EXPECT_EQ(cpu0[0].Get("cr2"), 0xa000u);
  EXPECT_EQ(cpu1[0].Get("vec"), 18u);
  auto banks = dest->console().Find("MCB", 1);
  ASSERT_EQ(banks.size(), 1u);
  EXPECT_EQ(banks[0].Get("bank"), 5u);
  EXPECT_THAT(dest->console().Find("MCB", 0), ::testing::IsEmpty());
}

// Volatile fields (documented tolerance): the TSC and kvmclock advance between two captures
// of different VMs; capture times differ. Everything else must be equal.
constexpr uint32_t kMsrTsc = 0x10;
constexpr uint64_t kTscTolerance = 1ull << 40;  // far above any test's duration, far below a reset

void StripVolatile(v1::Snapshot& s) {
  s.clear_captured_unix_ns();
  s.mutable_vm()->mutable_x86_64()->clear_kvmclock_ns();
  for (auto& vcpu : *s.mutable_vcpus()) {
    for (auto& msr : *vcpu.mutable_x86_64()->mutable_msrs()) {
      if (msr.index() == kMsrTsc) msr.set_value(0);
    }
  }
}

uint64_t Tsc(const v1::Snapshot& s, int vcpu) {
  for (const auto& msr : s.vcpus(vcpu).x86_64().msrs()) {
    if (msr.index() == kMsrTsc) return msr.value();
  }
  return 0;
}

TEST(ExceptionWitness, CaptureRestoreCaptureRoundTrip) {
  WitnessOptions options;
  options.vcpus = 2;
  auto source = ValueOrDie(WitnessVm::Boot(options));
  ASSERT_OK(source->vm().Pause());
  ASSERT_OK(source->vm().InjectMachineCheck(Bank3Error(0)));
  ASSERT_OK(source->vm().InjectException(PageFault(1, 0xb000)));
  v1::Snapshot first = ValueOrDie(source->vm().Capture());
  auto copy = ValueOrDie(WitnessVm::Restore(ThroughBytes(first)));
  v1::Snapshot second = ValueOrDie(copy->vm().Capture());
  for (int i = 0; i < 2; ++i) {
    EXPECT_NE(Tsc(first, i), 0u);
    EXPECT_LT(Tsc(second, i) > Tsc(first, i) ? Tsc(second, i) - Tsc(first, i) : Tsc(first, i) - Tsc(second, i),
              kTscTolerance);
  }
  StripVolatile(first);
  StripVolatile(second);
  google::protobuf::util::MessageDifferencer differ;
  std::string diff;
  differ.ReportDifferencesToString(&diff);
  EXPECT_TRUE(differ.Compare(first, second)) << diff;
}

// Bad input: the precise status, and the vCPU's state identical before and after.
class BadInput : public ::testing::Test {
 protected:
  void SetUp() override {
    WitnessOptions options;
    options.vcpus = 2;
    witness_ = ValueOrDie(WitnessVm::Boot(options));
    ASSERT_OK(witness_->vm().Pause());
  }

  v1::Snapshot State() {
    v1::Snapshot s = ValueOrDie(witness_->vm().Capture(/*with_memory=*/false));
    StripVolatile(s);
    return s;
  }

  void ExpectRefused(const std::function<absl::Status(Vm&)>& request, absl::StatusCode code,
                     const std::string& message_part) {
    v1::Snapshot before = State();
    absl::Status status = request(witness_->vm());
    EXPECT_EQ(status.code(), code) << status;
    EXPECT_THAT(std::string(status.message()), HasSubstr(message_part));
    v1::Snapshot after = State();
    google::protobuf::util::MessageDifferencer differ;
    std::string diff;
    differ.ReportDifferencesToString(&diff);
    EXPECT_TRUE(differ.Compare(before, after)) << "state changed by a refused request: " << diff;
  }

  std::unique_ptr<WitnessVm> witness_;
};

TEST_F(BadInput, VectorAbove31) {
  ExpectRefused([](Vm& vm) { return vm.InjectException({0, 32}); }, absl::StatusCode::kInvalidArgument,
                "not an exception vector");
}

TEST_F(BadInput, VectorTwoIsTheNmi) {
  ExpectRefused([](Vm& vm) { return vm.InjectException({0, 2}); }, absl::StatusCode::kInvalidArgument, "NMI");
}

TEST_F(BadInput, MissingErrorCode) {
  ExpectRefused([](Vm& vm) { return vm.InjectException({0, 13}); }, absl::StatusCode::kInvalidArgument,
                "pushes an error code");
}

TEST_F(BadInput, BankOutOfRange) {
  const uint32_t banks = witness_->vm().host().mce_banks();
  ExpectRefused(
      [banks](Vm& vm) {
        MachineCheckRequest mc = Bank3Error();
        mc.bank = banks;
        return vm.InjectMachineCheck(mc);
      },
      absl::StatusCode::kInvalidArgument, "out of range");
}

TEST_F(BadInput, StatusWithoutVal) {
  ExpectRefused(
      [](Vm& vm) {
        MachineCheckRequest mc = Bank3Error();
        mc.status &= ~(1ull << 63);
        return vm.InjectMachineCheck(mc);
      },
      absl::StatusCode::kInvalidArgument, "VAL");
}

TEST_F(BadInput, UnknownVcpu) {
  ExpectRefused([](Vm& vm) { return vm.InjectMachineCheck(Bank3Error(7)); }, absl::StatusCode::kNotFound,
                "does not exist");
}

TEST_F(BadInput, SecondExceptionWhileOneIsPending) {
  ASSERT_OK(witness_->vm().InjectException(PageFault(0, 0x1000)));
  ExpectRefused([](Vm& vm) { return vm.InjectMachineCheck(Bank3Error()); }, absl::StatusCode::kFailedPrecondition,
                "already has exception 14");
}

TEST_F(BadInput, RunningVcpu) {
  ASSERT_OK(witness_->vm().Resume());
  absl::Status status = witness_->vm().InjectMachineCheck(Bank3Error());
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(std::string(status.message()), HasSubstr("is running"));
  ASSERT_OK(witness_->vm().Pause());
  // Nothing was injected: the guest reported nothing, and nothing is pending.
  EXPECT_THAT(witness_->console().Find("EXC"), ::testing::IsEmpty());
  auto state = ValueOrDie(witness_->vm().CaptureExceptionState());
  EXPECT_FALSE(state[0].x86_64().exception().pending());
  for (const auto& bank : state[0].x86_64().machine_check().banks()) EXPECT_EQ(bank.status(), 0u);
}

}  // namespace
}  // namespace vexstate
