// The worker end to end on real KVM: the vexd_worker binary as vexd runs it, driven over its
// Unix socket, with the witness guest's own reports (through WatchEvents) as the judge.
#include <elf.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "guests/common/witness_abi.h"
#include "server/worker/worker_process_testing.h"

namespace vexstate::worker {
namespace {

using testing::Context;
using testing::EventWatcher;
using ::testing::HasSubstr;
using testing::IsInjection;
using testing::IsLifecycle;
using testing::IsReport;
using ::testing::MatchesRegex;
using testing::ScratchDir;
using testing::WorkerProcess;
using testing::WriteConfigFile;

// After a guest took an exception, how long we keep watching to be sure it took it only once.
constexpr absl::Duration kSettle = absl::Milliseconds(300);

// The uncorrected error used across vexstate's tests: VAL|UC|EN|MISCV|ADDRV, MCA code 0x9f;
// MCG_STATUS RIPV|MCIP.
constexpr uint64_t kMcStatus = 0xbc0000000000009full;
constexpr uint64_t kMcAddr = 0x12345000;
constexpr uint64_t kMcMisc = 0x86;
constexpr uint64_t kMcgStatus = 0x5;
constexpr uint32_t kVectorMc = 18;
constexpr uint32_t kVectorPf = 14;

class WorkerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // Real KVM or nothing: a missing /dev/kvm fails loudly, it never skips.
    ASSERT_EQ(access("/dev/kvm", R_OK | W_OK), 0) << "/dev/kvm is missing or not writable: this test needs real KVM";
  }

  static v1::VmConfig WitnessConfig(const std::string& name, uint64_t hold_mask = 0) {
    v1::VmConfig config;
    config.set_name(name);
    config.set_arch(v1::ARCH_X86_64);
    config.set_vcpu_count(1);
    config.set_memory_bytes(16ull << 20);
    config.mutable_guest()->set_bundled("witness");
    config.mutable_witness()->set_hold_mask(hold_mask);
    return config;
  }

  // A worker for a fresh witness VM; `extra` are more flags (e.g. --start).
  std::unique_ptr<WorkerProcess> StartWorker(const v1::VmConfig& config, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"--config_file", WriteConfigFile(dir_, config.name() + ".config", config)};
    args.insert(args.end(), extra.begin(), extra.end());
    std::unique_ptr<WorkerProcess> worker = WorkerProcess::Start(dir_, config.name() + ".sock", args);
    EXPECT_TRUE(worker->ready()) << "stdout: " << worker->Stdout() << "\nstderr: " << worker->Stderr();
    return worker;
  }

  static v1::WorkerStatus Status(WorkerProcess& worker) {
    v1::WorkerStatus status;
    grpc::Status s = worker.stub().GetStatus(Context().get(), {}, &status);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return status;
  }

  static void Resume(WorkerProcess& worker) {
    v1::VmInfo info;
    grpc::Status s = worker.stub().Resume(Context().get(), {}, &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(info.state(), v1::VM_RUNNING);
  }

  static void Pause(WorkerProcess& worker) {
    v1::VmInfo info;
    grpc::Status s = worker.stub().Pause(Context().get(), {}, &info);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(info.state(), v1::VM_PAUSED);
  }

  static v1::VmPending Query(WorkerProcess& worker) {
    v1::VmPending pending;
    grpc::Status s = worker.stub().QueryPending(Context().get(), {}, &pending);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return pending;
  }

  // Shuts the worker down through the RPC and checks it exits 0 and removes its socket.
  static v1::VmInfo Shutdown(WorkerProcess& worker) {
    v1::VmInfo info;
    grpc::Status s = worker.stub().Shutdown(Context().get(), {}, &info);
    EXPECT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(info.state(), v1::VM_STOPPED);
    EXPECT_EQ(worker.WaitExit(), 0) << worker.Stderr();
    struct stat ignored;
    EXPECT_NE(stat(worker.socket().c_str(), &ignored), 0) << "the socket is removed at exit";
    return info;
  }

  static v1::InjectMachineCheckRequest Bank3Error(bool pause_around) {
    v1::InjectMachineCheckRequest mc;
    mc.set_bank(3);
    mc.set_status(kMcStatus);
    mc.set_addr(kMcAddr);
    mc.set_misc(kMcMisc);
    mc.set_mcg_status(kMcgStatus);
    mc.set_pause_around(pause_around);
    return mc;
  }

  ScratchDir dir_;
};

TEST_F(WorkerTest, LifecycleFromCreatedToStopped) {
  auto worker = StartWorker(WitnessConfig("life"));
  v1::WorkerStatus status = Status(*worker);
  EXPECT_EQ(status.vm().name(), "life");
  EXPECT_EQ(status.vm().state(), v1::VM_CREATED) << "a fresh VM waits for Resume";
  EXPECT_EQ(status.vm().worker_pid(), worker->pid());
  EXPECT_EQ(status.vm().config().vcpu_count(), 1u);
  EXPECT_GT(status.vm().created_unix_ns(), 0);
  EXPECT_EQ(status.host().arch(), v1::ARCH_X86_64);
  EXPECT_EQ(worker->Stdout(), "vexd-worker: ready " + worker->socket() + "\n");
  struct stat socket_info;
  ASSERT_EQ(stat(worker->socket().c_str(), &socket_info), 0);
  EXPECT_EQ(socket_info.st_mode & 0777, 0600u) << "only vexd's user may connect";

  EventWatcher events(worker->stub(), /*replay=*/true);
  Resume(*worker);
  ASSERT_TRUE(events.WaitFor(IsReport("READY", {{"cpu", 0}}))) << worker->Stderr();
  Pause(*worker);
  Pause(*worker);  // pausing a paused VM changes nothing and succeeds
  Resume(*worker);

  v1::VmInfo final_info = Shutdown(*worker);
  EXPECT_EQ(events.WaitEnd().error_code(), grpc::StatusCode::OK) << "the stream ends with the worker";
  std::vector<v1::VmRunState> states;
  uint64_t last_sequence = 0;
  for (const v1::Event& event : events.Events()) {
    EXPECT_EQ(event.vm(), "life");
    EXPECT_EQ(event.sequence(), last_sequence + 1) << "replay starts at 1 and has no gaps";
    last_sequence = event.sequence();
    if (event.has_lifecycle()) states.push_back(event.lifecycle().state());
  }
  EXPECT_THAT(states,
              ::testing::ElementsAre(v1::VM_CREATED, v1::VM_RUNNING, v1::VM_PAUSED, v1::VM_RUNNING, v1::VM_STOPPED));
  EXPECT_EQ(final_info.guest_exception_reports(), 0u);
}

// Paused, injected, queried, resumed: the #MC shows as pending with its decoded registers,
// then the guest takes it exactly once.
TEST_F(WorkerTest, MachineCheckInjectedWhilePausedIsPendingThenTakenOnce) {
  auto worker = StartWorker(WitnessConfig("mc"), {"--start"});
  EventWatcher events(worker->stub(), /*replay=*/true);
  ASSERT_TRUE(events.WaitFor(IsReport("READY")));
  Pause(*worker);

  v1::InjectResponse injected;
  grpc::Status s = worker->stub().InjectMachineCheck(Context().get(), Bank3Error(false), &injected);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(injected.state().x86_64().exception().pending());
  EXPECT_EQ(injected.state().x86_64().exception().vector(), kVectorMc);

  v1::VmPending pending = Query(*worker);
  EXPECT_EQ(pending.vm(), "mc");
  EXPECT_EQ(pending.state(), v1::VM_PAUSED) << "a paused VM stays paused";
  EXPECT_GT(pending.read_unix_ns(), 0);
  ASSERT_EQ(pending.vcpus_size(), 1);
  EXPECT_THAT(pending.summary(),
              ::testing::ElementsAre("vCPU 0: #MC machine check pending; MCG_STATUS RIPV|MCIP; bank 3: "
                                     "VAL|UC|EN|MISCV|ADDRV mca=0x009f (memory controller error MMM=RD "
                                     "CCCC=unspecified) addr=0x12345000 misc=0x86"));
  auto injection = events.WaitFor(IsInjection());
  ASSERT_TRUE(injection);
  EXPECT_EQ(injection->injection().what(),
            "machine check bank 3 status 0xbc0000000000009f addr 0x12345000 misc 0x86 mcg_status 0x5");

  Resume(*worker);
  ASSERT_TRUE(events.WaitFor(IsReport("MCB", {{"bank", 3}, {"status", kMcStatus}}))) << "the guest reads the bank back";
  absl::SleepFor(kSettle);
  EXPECT_EQ(events.Count(IsReport("EXC", {{"vec", kVectorMc}})), 1u) << "taken exactly once";
  EXPECT_EQ(Status(*worker).vm().guest_exception_reports(), 1u);
  EXPECT_THAT(Query(*worker).summary(), ::testing::ElementsAre("vCPU 0: nothing pending"));
}

// pause_around on a running VM: paused, injected, resumed as one request. The guest holds in
// its #MC handler (hold_mask), so QueryPending sees the machine check in flight; releasing
// the hold through APPLY_SETTINGS lets it finish, and it was taken exactly once.
TEST_F(WorkerTest, PauseAroundInjectsIntoARunningVm) {
  auto worker = StartWorker(WitnessConfig("around", /*hold_mask=*/1ull << kVectorMc), {"--start"});
  EventWatcher events(worker->stub(), /*replay=*/true);
  ASSERT_TRUE(events.WaitFor(IsReport("READY")));

  v1::InjectResponse injected;
  grpc::Status s = worker->stub().InjectMachineCheck(Context().get(), Bank3Error(true), &injected);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_TRUE(injected.state().x86_64().exception().pending()) << "read back before the VM ran again";
  EXPECT_EQ(Status(*worker).vm().state(), v1::VM_RUNNING);

  ASSERT_TRUE(events.WaitFor(IsReport("HOLD", {{"vec", kVectorMc}}))) << "the guest took it and holds";
  v1::VmPending pending = Query(*worker);
  EXPECT_EQ(pending.state(), v1::VM_RUNNING) << "the query paused and resumed the VM";
  ASSERT_EQ(pending.summary_size(), 1);
  EXPECT_THAT(pending.summary(0), HasSubstr("vCPU 0: machine check in progress (guest in its #MC handler); "
                                            "MCG_STATUS RIPV|MCIP; bank 3: VAL|UC|EN|MISCV|ADDRV mca=0x009f"));

  v1::GuestCommandRequest release;
  release.set_command(v1::GUEST_COMMAND_APPLY_SETTINGS);
  release.mutable_settings()->set_hold_mask(0);
  v1::GuestCommandResponse released;
  s = worker->stub().SendGuestCommand(Context().get(), release, &released);
  ASSERT_TRUE(s.ok()) << s.error_message();
  // The handler clears MCG_STATUS once released: nothing is left in flight.
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (Query(*worker).summary(0) != "vCPU 0: nothing pending" && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_THAT(Query(*worker).summary(), ::testing::ElementsAre("vCPU 0: nothing pending"));
  absl::SleepFor(kSettle);
  EXPECT_EQ(events.Count(IsReport("EXC", {{"vec", kVectorMc}})), 1u) << "taken exactly once";
  EXPECT_EQ(events.Count(IsInjection()), 1u);
}

// Invariant 5: every bad request gets its precise status and the VM is untouched.
TEST_F(WorkerTest, BadRequestsGetPreciseStatusAndChangeNothing) {
  auto worker = StartWorker(WitnessConfig("bad"), {"--start"});
  EventWatcher events(worker->stub(), /*replay=*/true);
  ASSERT_TRUE(events.WaitFor(IsReport("READY")));
  v1::InjectResponse ignored;

  v1::InjectExceptionRequest interrupt;
  interrupt.set_vector(32);
  interrupt.set_pause_around(true);
  grpc::Status s = worker->stub().InjectException(Context().get(), interrupt, &ignored);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("vector 32"));

  s = worker->stub().InjectMachineCheck(Context().get(), Bank3Error(false), &ignored);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("pause_around"));

  v1::InjectNmiRequest nmi;
  nmi.set_vcpu(5);
  nmi.set_pause_around(true);
  s = worker->stub().InjectNmi(Context().get(), nmi, &ignored);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("vCPU 5"));

  v1::InjectExceptionRequest stray_code;
  stray_code.set_vector(6);
  stray_code.set_error_code(3);  // without has_error_code
  stray_code.set_pause_around(true);
  s = worker->stub().InjectException(Context().get(), stray_code, &ignored);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  v1::InjectSErrorRequest serror;  // arm64 only
  serror.set_pause_around(true);
  s = worker->stub().InjectSError(Context().get(), serror, &ignored);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNIMPLEMENTED) << s.error_message();

  v1::SaveSnapshotResponse saved;
  v1::SaveSnapshotRequest relative;
  relative.set_path("relative.vexsnap");
  relative.set_pause_around(true);
  s = worker->stub().SaveSnapshot(Context().get(), relative, &saved);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  v1::SaveSnapshotRequest running;
  running.set_path(dir_.File("running.vexsnap"));
  s = worker->stub().SaveSnapshot(Context().get(), running, &saved);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_NE(access(running.path().c_str(), F_OK), 0) << "no file written";

  v1::SetExceptionStateRequest set;
  set.add_vcpus()->mutable_x86_64();
  v1::SetExceptionStateResponse set_response;
  s = worker->stub().SetExceptionState(Context().get(), set, &set_response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();

  v1::GuestCommandRequest arm_only;
  arm_only.set_command(v1::GUEST_COMMAND_UNMASK_SERROR);
  v1::GuestCommandResponse command_response;
  s = worker->stub().SendGuestCommand(Context().get(), arm_only, &command_response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();

  v1::GetExceptionStateRequest unknown_vcpu;
  unknown_vcpu.add_vcpus(1);
  v1::GetExceptionStateResponse state_response;
  s = worker->stub().GetExceptionState(Context().get(), unknown_vcpu, &state_response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();

  // Nothing changed: still running, nothing pending, nothing injected, nothing taken.
  absl::SleepFor(kSettle);
  v1::VmPending pending = Query(*worker);
  EXPECT_EQ(pending.state(), v1::VM_RUNNING);
  EXPECT_THAT(pending.summary(), ::testing::ElementsAre("vCPU 0: nothing pending"));
  EXPECT_EQ(events.Count(IsInjection()), 0u);
  EXPECT_EQ(events.Count(IsReport("EXC")), 0u);
  EXPECT_EQ(Status(*worker).vm().guest_exception_reports(), 0u);
}

TEST_F(WorkerTest, MemcheckCommandReturnsTheGuestsReports) {
  v1::VmConfig config = WitnessConfig("cmd");
  config.mutable_witness()->set_workset_pages(16);
  config.mutable_witness()->set_dirty_pages_per_sec(2000);
  auto worker = StartWorker(config, {"--start"});
  EventWatcher events(worker->stub(), /*replay=*/false);
  v1::GuestCommandRequest memcheck;
  memcheck.set_command(v1::GUEST_COMMAND_MEMCHECK);
  memcheck.set_wait_ms(10000);
  v1::GuestCommandResponse response;
  grpc::Status s = worker->stub().SendGuestCommand(Context().get(), memcheck, &response);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_GE(response.reports_size(), 2);
  const v1::GuestReportEvent& check = response.reports(response.reports_size() - 2);
  EXPECT_EQ(check.kind(), "MEMCHECK") << check.line();
  EXPECT_EQ(check.fields().at("bad"), 0u) << check.line();
  EXPECT_EQ(response.reports(response.reports_size() - 1).kind(), "DONE");
  EXPECT_TRUE(events.WaitFor(IsReport("DONE", {{"cmd", VEX_CMD_MEMCHECK}}))) << "reports are events too";

  Pause(*worker);
  s = worker->stub().SendGuestCommand(Context().get(), memcheck, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << "a paused guest cannot run it";
}

// A pending #PF saved with the paused VM reaches a new worker restored from the file, and the
// guest there takes it exactly once, CR2 and error code intact.
TEST_F(WorkerTest, SnapshotCarriesAPendingPageFaultToANewWorker) {
  constexpr uint64_t kCr2 = 0xdead000;
  const std::string snapshot = dir_.File("pf.vexsnap");
  {
    auto source = StartWorker(WitnessConfig("source"), {"--start"});
    EventWatcher events(source->stub(), /*replay=*/true);
    ASSERT_TRUE(events.WaitFor(IsReport("READY")));
    Pause(*source);
    v1::InjectExceptionRequest pf;
    pf.set_vector(kVectorPf);
    pf.set_has_error_code(true);
    pf.set_error_code(0x2);
    pf.set_has_payload(true);
    pf.set_payload(kCr2);
    v1::InjectResponse injected;
    grpc::Status s = source->stub().InjectException(Context().get(), pf, &injected);
    ASSERT_TRUE(s.ok()) << s.error_message();
    v1::SaveSnapshotRequest save;
    save.set_path(snapshot);
    v1::SaveSnapshotResponse saved;
    s = source->stub().SaveSnapshot(Context().get(), save, &saved);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(saved.path(), snapshot);
    EXPECT_GT(saved.bytes(), 0u);
    EXPECT_GT(saved.memory_bytes_stored(), 0u);
    EXPECT_THAT(saved.sha256(), MatchesRegex("[0-9a-f]{64}"));
    EXPECT_EQ(Status(*source).vm().state(), v1::VM_PAUSED) << "saving does not resume";
    Shutdown(*source);
    EXPECT_EQ(events.Count(IsReport("EXC")), 0u) << "the source never ran again";
  }

  // Restored without --resume: paused, so the pending #PF can be inspected first.
  auto inspected = WorkerProcess::Start(dir_, "inspected.sock", {"--restore_file", snapshot, "--name", "copy"});
  ASSERT_TRUE(inspected->ready()) << inspected->Stderr();
  v1::WorkerStatus status = Status(*inspected);
  EXPECT_EQ(status.vm().name(), "copy");
  EXPECT_EQ(status.vm().state(), v1::VM_PAUSED);
  EXPECT_EQ(status.vm().restored_from(), snapshot);
  EXPECT_THAT(Query(*inspected).summary(),
              ::testing::ElementsAre("vCPU 0: #PF pending, error code 0x2, CR2 payload 0xdead000"));
  Shutdown(*inspected);

  auto dest = WorkerProcess::Start(dir_, "dest.sock", {"--restore_file", snapshot, "--resume"});
  ASSERT_TRUE(dest->ready()) << dest->Stderr();
  EventWatcher events(dest->stub(), /*replay=*/true);
  auto taken = events.WaitFor(IsReport("EXC", {{"vec", kVectorPf}}));
  ASSERT_TRUE(taken) << "the restored guest takes the #PF";
  EXPECT_EQ(taken->guest_report().fields().at("err"), 0x2u);
  EXPECT_EQ(taken->guest_report().fields().at("cr2"), kCr2);
  absl::SleepFor(kSettle);
  EXPECT_EQ(events.Count(IsReport("EXC")), 1u) << "exactly once";
  status = Status(*dest);
  EXPECT_EQ(status.vm().name(), "source") << "the snapshot's name unless --name";
  EXPECT_EQ(status.vm().state(), v1::VM_RUNNING);
  EXPECT_EQ(status.vm().guest_exception_reports(), 1u);
  auto restored = events.WaitFor(IsLifecycle(v1::VM_PAUSED));
  ASSERT_TRUE(restored);
  EXPECT_THAT(restored->lifecycle().reason(), HasSubstr("restored from " + snapshot));
}

// A guest image that faults with no IDT: the vCPU stops (triple fault -> KVM_EXIT_SHUTDOWN,
// or an emulation failure under PVM), so the VM is CRASHED with the reason.
std::string WriteFaultingGuest(const std::string& path) {
  constexpr uint32_t kLoad = 0x100000;
  constexpr uint32_t kCodeOffset = sizeof(Elf32_Ehdr) + sizeof(Elf32_Phdr) + 12;  // after the Multiboot header
  std::string image(kCodeOffset + 2, '\0');
  Elf32_Ehdr ehdr = {};
  std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
  ehdr.e_ident[EI_CLASS] = ELFCLASS32;
  ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
  ehdr.e_ident[EI_VERSION] = EV_CURRENT;
  ehdr.e_type = ET_EXEC;
  ehdr.e_machine = EM_386;
  ehdr.e_version = EV_CURRENT;
  ehdr.e_entry = kLoad + kCodeOffset;
  ehdr.e_phoff = sizeof(Elf32_Ehdr);
  ehdr.e_ehsize = sizeof(Elf32_Ehdr);
  ehdr.e_phentsize = sizeof(Elf32_Phdr);
  ehdr.e_phnum = 1;
  Elf32_Phdr phdr = {};
  phdr.p_type = PT_LOAD;
  phdr.p_vaddr = phdr.p_paddr = kLoad;
  phdr.p_filesz = phdr.p_memsz = image.size();
  phdr.p_flags = PF_R | PF_X;
  const uint32_t multiboot[3] = {0x1BADB002, 0, static_cast<uint32_t>(-(0x1BADB002))};
  std::memcpy(image.data(), &ehdr, sizeof(ehdr));
  std::memcpy(image.data() + sizeof(ehdr), &phdr, sizeof(phdr));
  std::memcpy(image.data() + sizeof(ehdr) + sizeof(phdr), multiboot, sizeof(multiboot));
  image[kCodeOffset] = '\x0f';  // ud2
  image[kCodeOffset + 1] = '\x0b';
  std::ofstream(path, std::ios::binary) << image;
  return path;
}

TEST_F(WorkerTest, VcpuStoppingWithAnErrorCrashesTheVm) {
  v1::VmConfig config = WitnessConfig("crash");
  config.mutable_guest()->set_path(WriteFaultingGuest(dir_.File("ud2.elf")));
  auto worker = StartWorker(config);
  EventWatcher events(worker->stub(), /*replay=*/true);
  v1::VmInfo resumed;
  grpc::Status resume = worker->stub().Resume(Context().get(), {}, &resumed);
  ASSERT_TRUE(resume.ok()) << resume.error_message();
  // The guest faults at its first instruction: the answer may already say CRASHED.
  EXPECT_THAT(resumed.state(), ::testing::AnyOf(v1::VM_RUNNING, v1::VM_CRASHED));
  auto crashed = events.WaitFor(IsLifecycle(v1::VM_CRASHED));
  ASSERT_TRUE(crashed) << "the vCPU stopped";
  EXPECT_THAT(crashed->lifecycle().reason(), HasSubstr("vCPU 0"));
  v1::VmInfo info = Status(*worker).vm();
  EXPECT_EQ(info.state(), v1::VM_CRASHED);
  EXPECT_EQ(info.error(), crashed->lifecycle().reason());

  v1::VmInfo ignored;
  grpc::Status s = worker->stub().Resume(Context().get(), {}, &ignored);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("crashed"));
  EXPECT_EQ(Query(*worker).state(), v1::VM_CRASHED) << "a crashed VM can still be inspected";
  v1::GuestCommandRequest memcheck;
  memcheck.set_command(v1::GUEST_COMMAND_MEMCHECK);
  v1::GuestCommandResponse response;
  s = worker->stub().SendGuestCommand(Context().get(), memcheck, &response);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << "not the witness: no control block";
  Shutdown(*worker);
}

TEST_F(WorkerTest, WatchEndsWhenTheClientCancels) {
  auto worker = StartWorker(WitnessConfig("cancel"));
  {
    EventWatcher events(worker->stub(), /*replay=*/true);
    ASSERT_TRUE(events.WaitFor(IsLifecycle(v1::VM_CREATED)));
    events.Cancel();
    EXPECT_EQ(events.WaitEnd().error_code(), grpc::StatusCode::CANCELLED);
  }
  EXPECT_EQ(Status(*worker).vm().state(), v1::VM_CREATED) << "the worker serves on";
}

TEST_F(WorkerTest, SigtermStopsTheVmAndExitsZero) {
  auto worker = StartWorker(WitnessConfig("term"), {"--start"});
  EventWatcher events(worker->stub(), /*replay=*/false);
  ASSERT_EQ(kill(worker->pid(), SIGHUP), 0);
  EXPECT_EQ(Status(*worker).vm().state(), v1::VM_RUNNING) << "SIGHUP (the parent's terminal going away) is ignored";
  ASSERT_EQ(kill(worker->pid(), SIGTERM), 0);
  EXPECT_EQ(worker->WaitExit(), 0) << worker->Stderr();
  auto stopped = events.WaitFor(IsLifecycle(v1::VM_STOPPED));
  ASSERT_TRUE(stopped);
  EXPECT_THAT(stopped->lifecycle().reason(), HasSubstr("SIGTERM"));
  EXPECT_EQ(events.WaitEnd().error_code(), grpc::StatusCode::OK);
}

// vexd turns the worker's one error line into the status of the request that started it.
TEST_F(WorkerTest, StartupFailuresPrintOneErrorLineAndExit2) {
  v1::VmConfig no_vcpus = WitnessConfig("novcpu");
  no_vcpus.set_vcpu_count(0);
  const std::string corrupt = dir_.File("corrupt.vexsnap");
  std::ofstream(corrupt, std::ios::binary) << std::string("VEXSNAP\0garbage", 15);
  struct Case {
    std::vector<std::string> args;
    std::string code;
    std::string message;
  };
  const std::vector<Case> cases = {
      {{"--config_file", WriteConfigFile(dir_, "novcpu.config", no_vcpus)}, "INVALID_ARGUMENT", "vcpu_count 0"},
      {{"--config_file", dir_.File("missing.config")}, "NOT_FOUND", "missing.config"},
      {{"--restore_file", corrupt}, "DATA_LOSS", "corrupt.vexsnap"},
      {{"--restore_file", dir_.File("missing.vexsnap")}, "NOT_FOUND", "missing.vexsnap"},
      {{}, "INVALID_ARGUMENT", "--config_file"},
      {{"--restore_file", corrupt, "--start"}, "INVALID_ARGUMENT", "--start"},
      {{"--config_file", WriteConfigFile(dir_, "ok.config", WitnessConfig("ok")), "unexpected"},
       "INVALID_ARGUMENT",
       "unexpected"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(absl::StrJoin(c.args, " "));
    auto worker = WorkerProcess::Start(dir_, "fail.sock", c.args);
    EXPECT_FALSE(worker->ready());
    EXPECT_EQ(worker->WaitExit(), 2);
    const std::string err = worker->Stderr();
    EXPECT_THAT(err, MatchesRegex("vexd-worker: error: " + c.code + ": [^\n]+\n")) << err;
    EXPECT_THAT(err, HasSubstr(c.message));
    EXPECT_EQ(worker->Stdout(), "");
  }
}

}  // namespace
}  // namespace vexstate::worker
