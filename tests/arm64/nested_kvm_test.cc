// The arm64 exception state on real arm64 KVM (nested: Linux under
// qemu-system-aarch64 with EL2, tools/nested/), with the witness guest
// (guests/arm64) as the judge. A scenario passes only when the guest itself
// reports the exception ("VEX SERROR ... esr=", "VEX DISR ...", "VEX SYNC
// ..."), exactly once, with the syndrome injected; most have a negative control
// that must see nothing. Each prints one "[ RESULT   ]" line saying what the
// guest saw.
//
// Suites and the host they need (the BUILD targets pick them with
// --gtest_filter; a suite run on the wrong host skips with the reason):
//   SerrorRestoreTest, InjectionTest  -cpu max (FEAT_RAS:
//                                     KVM_CAP_ARM_INJECT_SERROR_ESR = 1)
//   NoRasHostTest                     -cpu cortex-a72 (no FEAT_RAS)
//   BadInputTest, VcpuInitTest        any host
//   CrossHostTest                     two separate boots, Phase1Export then
//                                     Phase2Import
//                                     (:nested_kvm_cross_host_test,
//                                     tools/nested/run_two_boots.sh)
#include <dirent.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "guests/common/witness_abi.h"
#include "tests/arm64/init_main.h"
#include "tests/testing/witness_vm.h"
#include "vexstate/v1/host.pb.h"
#include "vmm/arch/arch_vm.h"
#include "vmm/arch/arm64/esr_decode.h"
#include "vmm/arch/arm64/inject.h"
#include "vmm/arch/arm64/reg_ids.h"
#include "vmm/arch/arm64/vcpu_state.h"
#include "vmm/kvm/system.h"

namespace vexstate {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::Not;
using testing::WitnessOptions;
using testing::WitnessVm;

// Nested TCG is slow: generous waits for the guest, short settles to prove
// "only once".
constexpr absl::Duration kDeliveryTimeout = absl::Seconds(30);
constexpr absl::Duration kSettle = absl::Milliseconds(300);

constexpr uint64_t kIss = 0x1234;
constexpr uint64_t kOtherIss = 0x99;
// DISR_EL1 with A=1 (an SError was deferred), IDS=0, AET=UER (0b011),
// DFSC=0x11.
constexpr uint64_t kDisrValue = 0x80000c11;
// The snapshot file carried from CrossHostTest.Phase1Export's boot to
// Phase2Import's.
constexpr char kCrossHostFile[] = "cross_host_snapshot.bin";

#define ASSERT_OK(expr)                                    \
  do {                                                     \
    const absl::Status _status = (expr);                   \
    ASSERT_TRUE(_status.ok()) << #expr << ": " << _status; \
  } while (0)

#define ASSERT_OK_AND_ASSIGN(lhs, expr)                             \
  auto lhs##_or = (expr);                                           \
  ASSERT_TRUE(lhs##_or.ok()) << #expr << ": " << lhs##_or.status(); \
  auto lhs = std::move(*lhs##_or)

// One line per scenario for people and CI logs; also in the gtest XML as
// property "result".
void Result(const std::string& text) {
  const ::testing::TestInfo* info =
      ::testing::UnitTest::GetInstance()->current_test_info();
  std::printf("[ RESULT   ] %s.%s: %s\n", info->test_suite_name(), info->name(),
              text.c_str());
  std::fflush(stdout);
  ::testing::Test::RecordProperty("result", text);
}

absl::StatusOr<v1::HostCapabilities> Host() {
  absl::StatusOr<kvm::KvmSystem> kvm = kvm::KvmSystem::Open();
  if (!kvm.ok()) return kvm.status();
  return ProbeHost(*kvm);
}

// KVM VMs this process holds (fds on anon_inode:kvm-vm): proves a refused
// restore created none.
int KvmVmCount() {
  int count = 0;
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  while (dirent* entry = readdir(dir)) {
    char target[256] = {};
    const std::string path = absl::StrCat("/proc/self/fd/", entry->d_name);
    const ssize_t n = readlink(path.c_str(), target, sizeof(target) - 1);
    if (n > 0 && std::string(target, n) == "anon_inode:kvm-vm") ++count;
  }
  closedir(dir);
  return count;
}

std::string Serialize(const v1::Snapshot& snapshot) {
  std::string bytes;
  EXPECT_TRUE(snapshot.SerializeToString(&bytes));
  return bytes;
}

absl::StatusOr<v1::Snapshot> Parse(const std::string& bytes) {
  v1::Snapshot snapshot;
  if (!snapshot.ParseFromString(bytes))
    return absl::DataLossError("snapshot bytes do not parse");
  return snapshot;
}

absl::StatusOr<v1::Arm64ExceptionState> ExceptionState(WitnessVm& w,
                                                       uint32_t vcpu = 0) {
  absl::StatusOr<std::vector<v1::VcpuExceptionState>> states =
      w.vm().CaptureExceptionState();
  if (!states.ok()) return states.status();
  return (*states)[vcpu].arm64();
}

// Runs a witness command on vCPU 0 and waits for its DONE. COMMAND is published
// before COMMAND_SEQ with a release fence: the guest reads COMMAND_SEQ with
// LDAR (witness.S poll_command), and on arm64 two plain stores may otherwise be
// observed out of order.
absl::Status RunCommand(WitnessVm& w, uint64_t command) {
  absl::StatusOr<uint64_t> seq = w.ReadControl(VEX_CTL_COMMAND_SEQ);
  if (!seq.ok()) return seq.status();
  const size_t done_before =
      w.console().Find("DONE", 0, {{"cmd", command}}).size();
  if (absl::Status s = w.WriteControl(VEX_CTL_COMMAND, command); !s.ok())
    return s;
  if (absl::Status s = w.WriteControl(VEX_CTL_ARG, 0); !s.ok()) return s;
  std::atomic_thread_fence(std::memory_order_release);
  if (absl::Status s = w.WriteControl(VEX_CTL_COMMAND_SEQ, *seq + 1); !s.ok())
    return s;
  return w.console()
      .WaitFor("DONE", 0, {{"cmd", command}}, done_before + 1, kDeliveryTimeout)
      .status();
}

// Opens the guest's SError window twice: a pending SError is taken in the
// first; the second (after a settle) would show a duplicate. Returns every
// SERROR report of vCPU 0.
absl::StatusOr<std::vector<WitnessReport>> UnmaskTwice(WitnessVm& w) {
  if (absl::Status s = RunCommand(w, VEX_CMD_UNMASK_SERROR); !s.ok()) return s;
  absl::SleepFor(kSettle);
  if (absl::Status s = RunCommand(w, VEX_CMD_UNMASK_SERROR); !s.ok()) return s;
  return w.console().Find("SERROR", 0);
}

std::string Esrs(const std::vector<WitnessReport>& reports) {
  std::string out;
  for (const WitnessReport& r : reports)
    absl::StrAppendFormat(&out, "%s0x%x", out.empty() ? "" : ",", r.Get("esr"));
  return out.empty() ? "none" : out;
}

SErrorRequest Serror(std::optional<uint64_t> esr,
                     SErrorResult* result = nullptr,
                     SErrorOverwrite on_pending = SErrorOverwrite::kRefuse) {
  SErrorRequest request;
  request.vcpu = 0;
  request.esr = esr;
  request.on_pending = on_pending;
  request.result = result;
  return request;
}

// The witness, booted and paused (ready for injection and capture).
absl::StatusOr<std::unique_ptr<WitnessVm>> BootPaused(uint32_t vcpus = 1) {
  WitnessOptions options;
  options.name = "nested-witness";
  options.vcpus = vcpus;
  absl::StatusOr<std::unique_ptr<WitnessVm>> w =
      WitnessVm::Boot(options, kDeliveryTimeout);
  if (!w.ok()) return w.status();
  if (absl::Status s = (*w)->vm().Pause(); !s.ok()) return s;
  return w;
}

class RasHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<v1::HostCapabilities> host = Host();
    ASSERT_TRUE(host.ok()) << host.status();
    host_ = *host;
    if (!host_.arm_inject_serror_esr()) {
      GTEST_SKIP() << "needs KVM_CAP_ARM_INJECT_SERROR_ESR (FEAT_RAS: run with "
                      "-cpu max); this host ("
                   << nested::NestedCpuModel() << ") lacks it";
    }
  }
  v1::HostCapabilities host_;
};

using SerrorRestoreTest = RasHostTest;
using InjectionTest = RasHostTest;

// -----------------------------------------------------------------------------
// SerrorRestoreTest

// The core promise: a pending SError the guest has masked is captured, survives
// serialisation and the destruction of its VM, and is taken exactly once by the
// guest in a brand-new VM.
TEST_F(SerrorRestoreTest, MaskedSerrorSurvivesRestoreIntoNewVm) {
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  SErrorResult result;
  ASSERT_OK(w->vm().InjectSError(Serror(kIss, &result)));
  EXPECT_EQ(result.outcome, SErrorOutcome::kPending) << result.detail;
  ASSERT_OK_AND_ASSIGN(state, ExceptionState(*w));
  EXPECT_TRUE(state.serror_pending());
  EXPECT_TRUE(state.serror_has_esr());
  EXPECT_EQ(state.serror_esr(), kIss);
  ASSERT_OK_AND_ASSIGN(snapshot, w->vm().Capture());
  const std::string bytes = Serialize(snapshot);
  w.reset();  // the source VM is gone: only the bytes remain

  ASSERT_OK_AND_ASSIGN(parsed, Parse(bytes));
  ASSERT_OK_AND_ASSIGN(restored, WitnessVm::Restore(parsed));
  ASSERT_OK(restored->vm().Resume());
  absl::SleepFor(kSettle);
  EXPECT_TRUE(restored->console().Find("SERROR").empty())
      << "taken while the guest had SError masked";
  ASSERT_OK_AND_ASSIGN(taken, UnmaskTwice(*restored));
  ASSERT_EQ(taken.size(), 1u) << "SERROR reports: " << Esrs(taken) << "\n"
                              << restored->console().Transcript();
  EXPECT_EQ(taken[0].Get("esr"), arm64::SerrorEsrAsSeenByGuest(kIss));
  EXPECT_EQ(taken[0].Get("esr"), 0xbe001234u);
  Result(absl::StrFormat(
      "snapshot %u bytes; guest took 1 SError, esr=0x%x (%s)", bytes.size(),
      taken[0].Get("esr"), arm64::DescribeEsr(taken[0].Get("esr"))));
}

// Control: the same snapshot restored without its exception state gives the
// guest nothing.
TEST_F(SerrorRestoreTest, ControlWithoutExceptionStateNothingIsTaken) {
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  ASSERT_OK(w->vm().InjectSError(Serror(kIss)));
  ASSERT_OK_AND_ASSIGN(snapshot, w->vm().Capture());
  const std::string bytes = Serialize(snapshot);
  w.reset();
  ASSERT_OK_AND_ASSIGN(parsed, Parse(bytes));
  RestorePolicy policy;
  policy.skip_exception_state = true;
  ASSERT_OK_AND_ASSIGN(restored, WitnessVm::Restore(parsed, policy));
  ASSERT_OK_AND_ASSIGN(state, ExceptionState(*restored));
  EXPECT_FALSE(state.serror_pending());
  ASSERT_OK(restored->vm().Resume());
  ASSERT_OK_AND_ASSIGN(taken, UnmaskTwice(*restored));
  EXPECT_TRUE(taken.empty()) << "SERROR reports: " << Esrs(taken);
  Result(
      absl::StrFormat("restored with skip_exception_state: guest took %u "
                      "SErrors (alive: 2 x DONE)",
                      taken.size()));
}

// Without an ESR KVM picks the syndrome (ISS 0x1000000, IDS); the guest takes
// it once.
TEST_F(SerrorRestoreTest, NoEsrSerrorDeliveredOnceWithKvmSyndrome) {
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  SErrorResult result;
  ASSERT_OK(w->vm().InjectSError(Serror(std::nullopt, &result)));
  ASSERT_OK_AND_ASSIGN(state, ExceptionState(*w));
  EXPECT_TRUE(state.serror_pending());
  const uint64_t kvm_iss = state.serror_esr();
  ASSERT_OK_AND_ASSIGN(snapshot, w->vm().Capture());
  w.reset();
  ASSERT_OK_AND_ASSIGN(parsed, Parse(Serialize(snapshot)));
  ASSERT_OK_AND_ASSIGN(restored, WitnessVm::Restore(parsed));
  ASSERT_OK(restored->vm().Resume());
  ASSERT_OK_AND_ASSIGN(taken, UnmaskTwice(*restored));
  ASSERT_EQ(taken.size(), 1u) << "SERROR reports: " << Esrs(taken);
  const uint64_t esr = taken[0].Get("esr");
  EXPECT_EQ(arm64::DecodeEsr(esr).ec, arm64::kEcSerror);
  EXPECT_EQ(esr, arm64::SerrorEsrAsSeenByGuest(kvm_iss));
  EXPECT_EQ(kvm_iss, arm64::kSerrorIssIds) << "Linux 6.1 picks IDS";
  EXPECT_EQ(esr, 0xbf000000u);
  Result(
      absl::StrFormat("KVM chose ISS 0x%x; guest took 1 SError, esr=0x%x (%s)",
                      kvm_iss, esr, arm64::DescribeEsr(esr)));
}

// DISR_EL1 set through the exception state before the save is what the guest
// reads after the restore; without the exception state (control) the guest
// reads 0.
TEST_F(SerrorRestoreTest, DisrSetBeforeSaveIsReadByGuestAfterRestore) {
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  v1::VcpuExceptionState set;
  set.set_vcpu_index(0);
  set.mutable_arm64()->set_disr_el1(kDisrValue);
  ASSERT_OK(w->vm().SetExceptionState(set));
  ASSERT_OK_AND_ASSIGN(snapshot, w->vm().Capture());
  EXPECT_EQ(snapshot.vcpus(0).exception().arm64().disr_el1(), kDisrValue);
  for (const v1::Arm64Register& reg : snapshot.vcpus(0).arm64().registers()) {
    EXPECT_NE(reg.id(), arm64::kRegDisrEl1)
        << "DISR_EL1 must have one place: the exception state";
  }
  const std::string bytes = Serialize(snapshot);
  w.reset();

  uint64_t seen[2] = {};
  for (bool skip : {false, true}) {
    ASSERT_OK_AND_ASSIGN(parsed, Parse(bytes));
    RestorePolicy policy;
    policy.skip_exception_state = skip;
    ASSERT_OK_AND_ASSIGN(restored, WitnessVm::Restore(parsed, policy));
    ASSERT_OK(restored->vm().Resume());
    ASSERT_OK(RunCommand(*restored, VEX_CMD_READ_DISR));
    std::vector<WitnessReport> disr = restored->console().Find("DISR", 0);
    ASSERT_EQ(disr.size(), 1u);
    seen[skip] = disr[0].Get("disr");
    EXPECT_TRUE(restored->console().Find("SERROR").empty());
  }
  EXPECT_EQ(seen[0], kDisrValue);
  EXPECT_EQ(seen[1], 0u)
      << "control: DISR_EL1 is exception state, left out with it";
  Result(
      absl::StrFormat("guest read DISR_EL1=0x%x after restore (%s); control "
                      "without exception state: 0x%x",
                      seen[0], arm64::DescribeDisr(seen[0]), seen[1]));
}

// A pending SError carried by the snapshot and deferred by the guest's `esb`
// (SError masked) lands in DISR_EL1 in the new VM: A=1 with the syndrome from
// VSESR_EL2 (Arm ARM AArch64.vESBOperation), and is never taken as an exception
// afterwards.
TEST_F(SerrorRestoreTest, EsbDeferredSerrorReachesDisrAfterRestore) {
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  ASSERT_OK(w->vm().InjectSError(Serror(kIss)));
  ASSERT_OK_AND_ASSIGN(snapshot, w->vm().Capture());
  w.reset();
  ASSERT_OK_AND_ASSIGN(parsed, Parse(Serialize(snapshot)));
  ASSERT_OK_AND_ASSIGN(restored, WitnessVm::Restore(parsed));
  ASSERT_OK(restored->vm().Resume());
  ASSERT_OK(RunCommand(*restored, VEX_CMD_ESB_READ_DISR));
  std::vector<WitnessReport> disr = restored->console().Find("DISR", 0);
  ASSERT_EQ(disr.size(), 1u);
  const uint64_t value = disr[0].Get("disr");
  EXPECT_EQ(value, arm64::kDisrA | kIss);
  ASSERT_OK(restored->vm().Pause());
  ASSERT_OK_AND_ASSIGN(after, ExceptionState(*restored));
  EXPECT_FALSE(after.serror_pending()) << "esb consumed the pending SError";
  ASSERT_OK(restored->vm().Resume());
  ASSERT_OK_AND_ASSIGN(taken, UnmaskTwice(*restored));
  EXPECT_TRUE(taken.empty())
      << "deferred by esb, then taken again: " << Esrs(taken);
  Result(
      absl::StrFormat("guest's esb deferred it: DISR_EL1=0x%x (%s); SErrors "
                      "taken afterwards: %u",
                      value, arm64::DescribeDisr(value), taken.size()));
}

// Exception state is per vCPU: an SError pending on vCPU 1 of two is restored
// on vCPU 1 and taken there once; vCPU 0 takes nothing (every vCPU opens its
// SError window on the command).
TEST_F(SerrorRestoreTest, SerrorOnSecondVcpuStaysOnIt) {
  ASSERT_OK_AND_ASSIGN(w, BootPaused(/*vcpus=*/2));
  SErrorRequest request = Serror(kIss);
  request.vcpu = 1;
  ASSERT_OK(w->vm().InjectSError(request));
  ASSERT_OK_AND_ASSIGN(snapshot, w->vm().Capture());
  EXPECT_FALSE(snapshot.vcpus(0).exception().arm64().serror_pending());
  EXPECT_TRUE(snapshot.vcpus(1).exception().arm64().serror_pending());
  w.reset();
  ASSERT_OK_AND_ASSIGN(parsed, Parse(Serialize(snapshot)));
  ASSERT_OK_AND_ASSIGN(restored, WitnessVm::Restore(parsed));
  ASSERT_OK(restored->vm().Resume());
  ASSERT_OK(RunCommand(*restored, VEX_CMD_UNMASK_SERROR));
  ASSERT_OK(restored->console()
                .WaitFor("DONE", 1, {{"cmd", VEX_CMD_UNMASK_SERROR}}, 1,
                         kDeliveryTimeout)
                .status());
  absl::SleepFor(kSettle);
  ASSERT_OK(RunCommand(*restored, VEX_CMD_UNMASK_SERROR));
  ASSERT_OK(restored->console()
                .WaitFor("DONE", 1, {{"cmd", VEX_CMD_UNMASK_SERROR}}, 2,
                         kDeliveryTimeout)
                .status());
  const std::vector<WitnessReport> on0 = restored->console().Find("SERROR", 0);
  const std::vector<WitnessReport> on1 = restored->console().Find("SERROR", 1);
  EXPECT_TRUE(on0.empty()) << "vCPU 0 took: " << Esrs(on0);
  ASSERT_EQ(on1.size(), 1u) << "vCPU 1 took: " << Esrs(on1);
  EXPECT_EQ(on1[0].Get("esr"), arm64::SerrorEsrAsSeenByGuest(kIss));
  Result(absl::StrFormat("vCPU 1 took 1 SError esr=0x%x; vCPU 0 took %u",
                         on1[0].Get("esr"), on0.size()));
}

// -----------------------------------------------------------------------------
// InjectionTest

TEST_F(InjectionTest, OverwritePoliciesNeverLoseTheFirstSyndromeSilently) {
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  SErrorResult result;
  ASSERT_OK(w->vm().InjectSError(Serror(kIss, &result)));
  EXPECT_EQ(result.outcome, SErrorOutcome::kPending);

  const absl::Status refused = w->vm().InjectSError(Serror(kOtherIss));
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(refused.message(),
              AllOf(HasSubstr("ISS 0x1234"), HasSubstr("ISS 0x99")));
  ASSERT_OK_AND_ASSIGN(state, ExceptionState(*w));
  EXPECT_EQ(state.serror_esr(), kIss);

  ASSERT_OK(w->vm().InjectSError(
      Serror(kOtherIss, &result, SErrorOverwrite::kKeepPending)));
  EXPECT_EQ(result.outcome, SErrorOutcome::kKeptPending);
  EXPECT_THAT(result.detail, HasSubstr("nothing changed"));
  ASSERT_OK_AND_ASSIGN(kept, ExceptionState(*w));
  EXPECT_EQ(kept.serror_esr(), kIss);

  ASSERT_OK(w->vm().InjectSError(Serror(kIss, &result)));
  EXPECT_EQ(result.outcome, SErrorOutcome::kAlreadyPending);

  ASSERT_OK(w->vm().InjectSError(
      Serror(kOtherIss, &result, SErrorOverwrite::kReplace)));
  EXPECT_EQ(result.outcome, SErrorOutcome::kReplaced);
  ASSERT_OK_AND_ASSIGN(replaced, ExceptionState(*w));
  EXPECT_EQ(replaced.serror_esr(), kOtherIss);

  ASSERT_OK(w->vm().Resume());
  ASSERT_OK_AND_ASSIGN(taken, UnmaskTwice(*w));
  ASSERT_EQ(taken.size(), 1u) << "SERROR reports: " << Esrs(taken);
  EXPECT_EQ(taken[0].Get("esr"), arm64::SerrorEsrAsSeenByGuest(kOtherIss));
  Result(
      absl::StrFormat("refuse -> FAILED_PRECONDITION, keep -> 0x%x kept, "
                      "replace -> guest took 1 SError "
                      "esr=0x%x",
                      kept.serror_esr(), taken[0].Get("esr")));
}

// An SError cannot be cancelled: a state without it, set over a pending one, is
// refused.
TEST_F(InjectionTest, PendingSerrorCannotBeCancelled) {
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  ASSERT_OK(w->vm().InjectSError(Serror(kIss)));
  v1::VcpuExceptionState clear;
  clear.set_vcpu_index(0);
  clear.mutable_arm64()->set_serror_has_esr(true);
  const absl::Status status = w->vm().SetExceptionState(clear);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(), HasSubstr("cannot be cancelled"));
  ASSERT_OK_AND_ASSIGN(state, ExceptionState(*w));
  EXPECT_TRUE(state.serror_pending());
  EXPECT_EQ(state.serror_esr(), kIss);
  ASSERT_OK(w->vm().Resume());
  ASSERT_OK_AND_ASSIGN(taken, UnmaskTwice(*w));
  ASSERT_EQ(taken.size(), 1u);
  Result(absl::StrFormat("clear refused (%s); guest took 1 SError esr=0x%x",
                         absl::StatusCodeToString(status.code()),
                         taken[0].Get("esr")));
}

// A synchronous external abort is set-only in KVM; vexstate commits it into the
// registers at once, so a snapshot taken right after carries it, and the guest
// takes it once after restore.
TEST_F(InjectionTest, ExternalAbortCommittedSurvivesRestore) {
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  ExternalAbortRequest request;
  request.vcpu = 0;
  ASSERT_OK(w->vm().InjectExternalAbort(request));
  ASSERT_OK_AND_ASSIGN(state, ExceptionState(*w));
  EXPECT_FALSE(state.ext_dabt_pending()) << "KVM never reports it";
  ASSERT_OK_AND_ASSIGN(snapshot, w->vm().Capture());
  w.reset();
  ASSERT_OK_AND_ASSIGN(parsed, Parse(Serialize(snapshot)));
  ASSERT_OK_AND_ASSIGN(restored, WitnessVm::Restore(parsed));
  ASSERT_OK(restored->vm().Resume());
  ASSERT_OK(
      restored->console().WaitFor("SYNC", 0, {}, 1, kDeliveryTimeout).status());
  ASSERT_OK(
      RunCommand(*restored, VEX_CMD_NONE));  // the guest is alive and past it
  absl::SleepFor(kSettle);
  const std::vector<WitnessReport> sync = restored->console().Find("SYNC", 0);
  ASSERT_EQ(sync.size(), 1u);
  // Only EC and DFSC are checked: Linux 6.1 builds this ESR from int shifts
  // (ESR_ELx_EC_*ABT_* << ESR_ELx_EC_SHIFT in arch/arm64/kvm/inject_fault.c),
  // which sign-extend, so the guest reads bits 63:32 all ones
  // (0xffffffff96000010 here) where the architecture has ISS2 and RES0.
  const arm64::EsrFields esr = arm64::DecodeEsr(sync[0].Get("esr"));
  EXPECT_EQ(esr.ec, arm64::kEcDabtCur);
  EXPECT_EQ(esr.iss & 0x3f, 0x10u);
  Result(absl::StrFormat(
      "guest took 1 sync exception: esr=0x%x (%s) far=0x%x", sync[0].Get("esr"),
      arm64::DescribeEsr(sync[0].Get("esr")), sync[0].Get("far")));
}

// -----------------------------------------------------------------------------
// BadInputTest

// An ESR outside ISS[24:0] is refused by vexstate (KVM never sees it) and
// nothing changes; an unknown vCPU is NOT_FOUND.
TEST(BadInputTest, EsrOutsideIssAndUnknownVcpuChangeNothing) {
  ASSERT_OK_AND_ASSIGN(host, Host());
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  // With a pending SError (RAS host) or none: either way the state must not
  // move.
  if (host.arm_inject_serror_esr())
    ASSERT_OK(w->vm().InjectSError(Serror(kIss)));
  ASSERT_OK_AND_ASSIGN(before, ExceptionState(*w));
  std::string codes;
  for (uint64_t esr : {uint64_t{1} << 25, uint64_t{1} << 63}) {
    for (SErrorOverwrite policy :
         {SErrorOverwrite::kRefuse, SErrorOverwrite::kReplace}) {
      const absl::Status status =
          w->vm().InjectSError(Serror(esr, nullptr, policy));
      EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument) << status;
      EXPECT_THAT(status.message(),
                  AllOf(HasSubstr("outside ISS[24:0]"),
                        Not(HasSubstr("KVM_SET_VCPU_EVENTS"))));
      if (policy == SErrorOverwrite::kRefuse) {
        absl::StrAppendFormat(&codes, "esr 0x%x -> %s; ", esr,
                              absl::StatusCodeToString(status.code()));
      }
    }
    v1::VcpuExceptionState set;
    set.set_vcpu_index(0);
    set.mutable_arm64()->set_serror_pending(true);
    set.mutable_arm64()->set_serror_has_esr(true);
    set.mutable_arm64()->set_serror_esr(esr);
    EXPECT_EQ(w->vm().SetExceptionState(set).code(),
              absl::StatusCode::kInvalidArgument);
  }
  ASSERT_OK_AND_ASSIGN(after, ExceptionState(*w));
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(before, after))
      << "before: " << before.ShortDebugString()
      << "\nafter: " << after.ShortDebugString();

  SErrorRequest unknown = Serror(kIss);
  unknown.vcpu = 7;
  const absl::Status not_found = w->vm().InjectSError(unknown);
  EXPECT_EQ(not_found.code(), absl::StatusCode::kNotFound) << not_found;
  ExternalAbortRequest abort_unknown;
  abort_unknown.vcpu = 7;
  EXPECT_EQ(w->vm().InjectExternalAbort(abort_unknown).code(),
            absl::StatusCode::kNotFound);
  v1::VcpuExceptionState set_unknown;
  set_unknown.set_vcpu_index(7);
  set_unknown.mutable_arm64();
  EXPECT_EQ(w->vm().SetExceptionState(set_unknown).code(),
            absl::StatusCode::kNotFound);
  Result(absl::StrCat(codes, "vCPU 7 -> ",
                      absl::StatusCodeToString(not_found.code()),
                      "; state unchanged"));
}

// -----------------------------------------------------------------------------
// VcpuInitTest

// Before KVM_ARM_VCPU_INIT a vCPU has no architectural state: vexstate's
// capture and injection fail on it (and KVM's own answer to the events ioctls
// is printed).
TEST(VcpuInitTest, EventsBeforeVcpuInitFail) {
  ASSERT_OK_AND_ASSIGN(kvm, kvm::KvmSystem::Open());
  ASSERT_OK_AND_ASSIGN(host, ProbeHost(kvm));
  ASSERT_OK_AND_ASSIGN(vm, kvm.CreateVm(0));
  ASSERT_OK_AND_ASSIGN(vcpu, vm.CreateVcpu(0));
  arm64::SerrorCaps caps;
  caps.inject_serror_esr = host.arm_inject_serror_esr();
  caps.inject_ext_dabt = host.arm_inject_ext_dabt();

  kvm_vcpu_events raw = {};
  const absl::Status raw_get = vcpu.GetVcpuEvents(&raw);
  // KVM answers ENOEXEC, which the ioctl layer reports as FAILED_PRECONDITION
  // naming the cause.
  EXPECT_EQ(raw_get.code(), absl::StatusCode::kFailedPrecondition) << raw_get;
  EXPECT_THAT(raw_get.message(), HasSubstr("KVM_ARM_VCPU_INIT"));
  const absl::Status inject =
      arm64::InjectSError(vcpu, Serror(std::nullopt), caps);
  EXPECT_EQ(inject.code(), absl::StatusCode::kFailedPrecondition) << inject;
  const absl::Status abort =
      arm64::InjectExternalAbort(vcpu, ExternalAbortRequest{}, caps);
  EXPECT_EQ(abort.code(), absl::StatusCode::kFailedPrecondition) << abort;
  const absl::StatusOr<uint64_t> pstate =
      arm64::GetU64(vcpu, arm64::kRegPstate);
  EXPECT_EQ(pstate.status().code(), absl::StatusCode::kFailedPrecondition)
      << pstate.status();
  kvm_vcpu_events raw_set = {};
  raw_set.exception.serror_pending = 1;
  const absl::Status raw_set_status = vcpu.SetVcpuEvents(raw_set);
  EXPECT_EQ(raw_set_status.code(), absl::StatusCode::kFailedPrecondition)
      << raw_set_status;

  kvm_vcpu_init init = {};
  ASSERT_OK(vm.ArmPreferredTarget(&init));
  init.features[0] = 1u << KVM_ARM_VCPU_PSCI_0_2;
  ASSERT_OK(vcpu.ArmVcpuInit(init));
  ASSERT_OK_AND_ASSIGN(events, arm64::GetSerrorEvents(vcpu));
  EXPECT_FALSE(events.serror_pending)
      << "KVM_ARM_VCPU_INIT resets whatever was set before it";
  SErrorResult result;
  ASSERT_OK(arm64::InjectSError(vcpu, Serror(std::nullopt, &result), caps));
  EXPECT_EQ(result.outcome, SErrorOutcome::kPending);
  Result(absl::StrFormat(
      "before KVM_ARM_VCPU_INIT: KVM_SET_VCPU_EVENTS -> %s; vexstate inject -> "
      "%s; after it: "
      "inject OK, nothing left over from before",
      raw_set_status.ToString(), absl::StatusCodeToString(inject.code())));
}

// -----------------------------------------------------------------------------
// NoRasHostTest

// A destination without FEAT_RAS (-cpu cortex-a72) and a snapshot with a
// pending SError that has an ESR. Such a snapshot comes from a FEAT_RAS host; a
// whole snapshot of a `max` vCPU cannot be restored on a cortex-a72 (other ID
// registers: KVM refuses them), so the snapshot is this host's own with the
// exception state a RAS source would have written.
class NoRasHostTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<v1::HostCapabilities> host = Host();
    ASSERT_TRUE(host.ok()) << host.status();
    if (host->arm_inject_serror_esr()) {
      GTEST_SKIP() << "needs a host without KVM_CAP_ARM_INJECT_SERROR_ESR (run "
                      "with -cpu cortex-a72)";
    }
  }

  // The witness's snapshot, with "pending SError, ESR ISS 0x1234" as a RAS
  // source captures it.
  void SnapshotWithEsr(std::string* bytes) {
    ASSERT_OK_AND_ASSIGN(w, BootPaused());
    ASSERT_OK_AND_ASSIGN(snapshot, w->vm().Capture());
    v1::Arm64ExceptionState* e =
        snapshot.mutable_vcpus(0)->mutable_exception()->mutable_arm64();
    EXPECT_FALSE(e->serror_has_esr()) << "this host reports no ESR capability";
    e->set_serror_pending(true);
    e->set_serror_has_esr(true);
    e->set_serror_esr(kIss);
    *bytes = Serialize(snapshot);
  }
};

TEST_F(NoRasHostTest, SerrorWithEsrRefusedByDefaultBeforeAnythingIsCreated) {
  std::string bytes;
  ASSERT_NO_FATAL_FAILURE(SnapshotWithEsr(&bytes));
  ASSERT_OK_AND_ASSIGN(parsed, Parse(bytes));
  const int vms_before = KvmVmCount();
  absl::StatusOr<std::unique_ptr<WitnessVm>> restored =
      WitnessVm::Restore(parsed);
  ASSERT_FALSE(restored.ok());
  const absl::Status status = restored.status();
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition) << status;
  EXPECT_THAT(status.message(),
              AllOf(HasSubstr("KVM_CAP_ARM_INJECT_SERROR_ESR"),
                    HasSubstr("vCPU 0"), HasSubstr("ISS 0x1234")));
  EXPECT_EQ(KvmVmCount(), vms_before)
      << "a refused restore must create nothing";
  Result(absl::StrCat("refused: ", status.ToString()));
}

TEST_F(NoRasHostTest, SerrorWithEsrDeliveredWithoutItWhenDegradeAllowed) {
  std::string bytes;
  ASSERT_NO_FATAL_FAILURE(SnapshotWithEsr(&bytes));
  ASSERT_OK_AND_ASSIGN(parsed, Parse(bytes));
  RestorePolicy policy;
  policy.allow_degrade = true;
  RestoreReport report;
  ASSERT_OK_AND_ASSIGN(restored, WitnessVm::Restore(parsed, policy, &report));
  ASSERT_EQ(report.degradations.size(), 1u);
  EXPECT_THAT(report.degradations[0],
              AllOf(HasSubstr("vCPU 0"), HasSubstr("without its syndrome"),
                    HasSubstr("KVM_CAP_ARM_INJECT_SERROR_ESR")));
  ASSERT_OK_AND_ASSIGN(state, ExceptionState(*restored));
  EXPECT_TRUE(state.serror_pending());
  EXPECT_FALSE(state.serror_has_esr());
  ASSERT_OK(restored->vm().Resume());
  ASSERT_OK_AND_ASSIGN(taken, UnmaskTwice(*restored));
  ASSERT_EQ(taken.size(), 1u) << "SERROR reports: " << Esrs(taken);
  EXPECT_EQ(arm64::DecodeEsr(taken[0].Get("esr")).ec, arm64::kEcSerror);
  Result(absl::StrFormat("degraded (%s); guest took 1 SError, esr=0x%x (%s)",
                         report.degradations[0], taken[0].Get("esr"),
                         arm64::DescribeEsr(taken[0].Get("esr"))));
}

TEST_F(NoRasHostTest, InjectWithEsrRefusedWithoutEsrDeliveredOnce) {
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  const absl::Status refused = w->vm().InjectSError(Serror(kIss));
  EXPECT_EQ(refused.code(), absl::StatusCode::kFailedPrecondition) << refused;
  EXPECT_THAT(refused.message(), HasSubstr("KVM_CAP_ARM_INJECT_SERROR_ESR"));
  ASSERT_OK_AND_ASSIGN(state, ExceptionState(*w));
  EXPECT_FALSE(state.serror_pending());
  SErrorResult result;
  ASSERT_OK(w->vm().InjectSError(Serror(std::nullopt, &result)));
  EXPECT_EQ(result.outcome, SErrorOutcome::kPending);
  ASSERT_OK(w->vm().Resume());
  ASSERT_OK_AND_ASSIGN(taken, UnmaskTwice(*w));
  ASSERT_EQ(taken.size(), 1u) << "SERROR reports: " << Esrs(taken);
  EXPECT_EQ(arm64::DecodeEsr(taken[0].Get("esr")).ec, arm64::kEcSerror);
  Result(absl::StrFormat(
      "ESR refused (%s); without ESR the guest took 1 SError, esr=0x%x (%s)",
      absl::StatusCodeToString(refused.code()), taken[0].Get("esr"),
      arm64::DescribeEsr(taken[0].Get("esr"))));
}

// -----------------------------------------------------------------------------
// CrossHostTest
// Two boots of the nested host, driven by tools/nested/run_two_boots.sh:
// Phase1Export captures a pending SError and hands the snapshot to the host
// (ExportFile: base64 over the console); Phase2Import runs in a second boot
// (another kernel instance, /dev/kvm created afresh) with that file in its
// initramfs, restores it and lets the guest take the SError.

TEST(CrossHostTest, Phase1Export) {
  ASSERT_OK_AND_ASSIGN(host, Host());
  if (!host.arm_inject_serror_esr())
    GTEST_SKIP() << "needs FEAT_RAS (-cpu max)";
  ASSERT_OK_AND_ASSIGN(w, BootPaused());
  ASSERT_OK(w->vm().InjectSError(Serror(kIss)));
  ASSERT_OK_AND_ASSIGN(snapshot, w->vm().Capture());
  const std::string bytes = Serialize(snapshot);
  ASSERT_OK(nested::ExportFile(kCrossHostFile, bytes));
  std::ifstream boot_id("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(boot_id, id);
  Result(absl::StrFormat("exported %s (%u bytes) from boot %s", kCrossHostFile,
                         bytes.size(), id));
}

TEST(CrossHostTest, Phase2Import) {
  const std::string path =
      absl::StrCat(nested::kImportDir, "/", kCrossHostFile);
  std::ifstream in(path, std::ios::binary);
  ASSERT_TRUE(in) << path
                  << " is missing: run Phase1Export in a first boot "
                     "(//tests/arm64:nested_kvm_cross_host_test)";
  std::stringstream buffer;
  buffer << in.rdbuf();
  ASSERT_OK_AND_ASSIGN(parsed, Parse(buffer.str()));
  ASSERT_OK_AND_ASSIGN(restored, WitnessVm::Restore(parsed));
  ASSERT_OK(restored->vm().Resume());
  ASSERT_OK_AND_ASSIGN(taken, UnmaskTwice(*restored));
  ASSERT_EQ(taken.size(), 1u) << "SERROR reports: " << Esrs(taken);
  EXPECT_EQ(taken[0].Get("esr"), arm64::SerrorEsrAsSeenByGuest(kIss));
  std::ifstream boot_id("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(boot_id, id);
  Result(
      absl::StrFormat("boot %s restored %u bytes from another boot; guest took "
                      "1 SError, esr=0x%x",
                      id, buffer.str().size(), taken[0].Get("esr")));
}

}  // namespace
}  // namespace vexstate
