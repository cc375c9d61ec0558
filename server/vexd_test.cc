// End-to-end tests of vexd: the real vexd binary, real vexd_worker processes and real KVM,
// driven over vexd's Unix socket with bearer tokens, as vexctl or an orchestrator would.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "google/protobuf/descriptor.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "server/journal.h"
#include "server/testing/vexd_harness.h"
#include "vexstate/v1/control.grpc.pb.h"
#include "vexstate/v1/migration.grpc.pb.h"

namespace vexstate::vexd {
namespace {

using ::testing::HasSubstr;
using testing::kOperatorToken;
using testing::kViewerToken;
using testing::VexdHarness;

// The uncorrected error of tests/x86: VAL|UC|EN|MISCV|ADDRV, MCA code 0x9f; MCG_STATUS RIPV|MCIP.
constexpr uint64_t kMcStatus = 0xbc0000000000009full;
constexpr uint64_t kMcgStatus = 0x5;
constexpr uint32_t kMachineCheckVector = 0x12;

v1::VmConfig WitnessConfig(const std::string& name) {
  v1::VmConfig config;
  config.set_name(name);
#if defined(__aarch64__)
  config.set_arch(v1::ARCH_ARM64);
#else
  config.set_arch(v1::ARCH_X86_64);
#endif
  config.set_vcpu_count(1);
  config.set_memory_bytes(16ull << 20);
  config.mutable_guest()->set_bundled("witness");
  return config;
}

v1::InjectMachineCheckRequest Bank3Error(const std::string& vm) {
  v1::InjectMachineCheckRequest request;
  request.set_vm(vm);
  request.set_vcpu(0);
  request.set_bank(3);
  request.set_status(kMcStatus);
  request.set_addr(0x12345000);
  request.set_misc(0x86);
  request.set_mcg_status(kMcgStatus);
  return request;
}

class VexdTest : public ::testing::Test {
 protected:
  void SetUp() override {
#if !defined(__x86_64__)
    GTEST_SKIP() << "the machine-check scenarios are x86_64";
#endif
    if (access("/dev/kvm", R_OK | W_OK) != 0) GTEST_SKIP() << "no usable /dev/kvm";
    ASSERT_TRUE(vexd_.Start().ok()) << vexd_.Log();
  }

  // Creates a witness VM; with `start`, also waits until the guest reports READY (its
  // handlers, and CR4.MCE, are set up only then).
  grpc::Status Create(const std::string& name, bool start, v1::VmInfo* info = nullptr) {
    v1::CreateVmRequest request;
    *request.mutable_config() = WitnessConfig(name);
    request.set_start(start);
    v1::VmInfo ignored;
    grpc::Status status =
        vexd_.vms().CreateVm(VexdHarness::Context().get(), request, info != nullptr ? info : &ignored);
    if (status.ok() && start && !WaitForGuestReport(name, "READY")) {
      return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, name + ": the guest never reported READY");
    }
    return status;
  }

  // Follows the VM's events (with replay) until the guest reports `kind`.
  bool WaitForGuestReport(const std::string& vm, const std::string& kind, absl::Duration timeout = absl::Seconds(20)) {
    v1::WatchEventsRequest request;
    request.set_vm(vm);
    request.set_replay(true);
    std::unique_ptr<grpc::ClientContext> context = VexdHarness::Context(kViewerToken, timeout);
    std::unique_ptr<grpc::ClientReader<v1::Event>> reader = vexd_.events().WatchEvents(context.get(), request);
    v1::Event event;
    bool seen = false;
    while (!seen && reader->Read(&event)) seen = event.has_guest_report() && event.guest_report().kind() == kind;
    context->TryCancel();
    (void)reader->Finish();
    return seen;
  }

  grpc::Status Get(const std::string& name, v1::VmInfo* info, const std::string& token = kOperatorToken) {
    v1::VmRef ref;
    ref.set_name(name);
    return vexd_.vms().GetVm(VexdHarness::Context(token).get(), ref, info);
  }

  grpc::Status Pause(const std::string& name, bool resume = false) {
    v1::VmRef ref;
    ref.set_name(name);
    v1::VmInfo info;
    return resume ? vexd_.vms().ResumeVm(VexdHarness::Context().get(), ref, &info)
                  : vexd_.vms().PauseVm(VexdHarness::Context().get(), ref, &info);
  }

  grpc::Status Inject(const v1::InjectMachineCheckRequest& request, const std::string& token = kOperatorToken) {
    v1::InjectResponse response;
    return vexd_.exceptions().InjectMachineCheck(VexdHarness::Context(token).get(), request, &response);
  }

  // QueryPending of one VM: the vCPU 0 exception state.
  v1::VmPending Pending(const std::string& name) {
    v1::QueryPendingRequest request;
    request.set_vm(name);
    v1::QueryPendingResponse response;
    const grpc::Status status =
        vexd_.exceptions().QueryPending(VexdHarness::Context(kViewerToken).get(), request, &response);
    EXPECT_TRUE(status.ok()) << status.error_message();
    return response.vms_size() == 1 ? response.vms(0) : v1::VmPending();
  }

  static bool MachineCheckPending(const v1::VmPending& pending) {
    if (pending.vcpus_size() == 0) return false;
    const v1::X86Exception& exception = pending.vcpus(0).x86_64().exception();
    return (exception.pending() || exception.injected()) && exception.vector() == kMachineCheckVector;
  }

  static bool IsGuestException(const v1::Event& event, uint64_t vector) {
    if (!event.has_guest_report() || event.guest_report().kind() != "EXC") return false;
    auto it = event.guest_report().fields().find("vec");
    return it != event.guest_report().fields().end() && it->second == vector;
  }

  static int CountGuestExceptions(const std::vector<v1::Event>& events, uint64_t vector) {
    int count = 0;
    for (const v1::Event& event : events) count += IsGuestException(event, vector) ? 1 : 0;
    return count;
  }

  // The events of `vm` (replayed from vexd's history) for up to `duration`; with `vector`,
  // only until `settle` after the guest reported that exception (time for a duplicate to show).
  std::vector<v1::Event> Watch(const std::string& vm, absl::Duration duration, std::optional<uint64_t> vector = {},
                               absl::Duration settle = absl::Seconds(1)) {
    v1::WatchEventsRequest request;
    request.set_vm(vm);
    request.set_replay(true);
    std::unique_ptr<grpc::ClientContext> context = VexdHarness::Context(kViewerToken, duration);
    std::unique_ptr<grpc::ClientReader<v1::Event>> reader = vexd_.events().WatchEvents(context.get(), request);
    std::vector<v1::Event> events;
    std::thread ender;
    v1::Event event;
    while (reader->Read(&event)) {
      events.push_back(event);
      if (vector.has_value() && !ender.joinable() && IsGuestException(event, *vector)) {
        ender = std::thread([&context, settle] {
          absl::SleepFor(settle);
          context->TryCancel();
        });
      }
    }
    const grpc::Status status = reader->Finish();
    if (ender.joinable()) ender.join();
    EXPECT_TRUE(status.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED ||
                status.error_code() == grpc::StatusCode::CANCELLED)
        << status.error_code() << " " << status.error_message();
    return events;
  }

  // Polls GetVm until the VM is in `state`.
  v1::VmInfo WaitForState(const std::string& name, v1::VmRunState state, absl::Duration timeout = absl::Seconds(10)) {
    v1::VmInfo info;
    const absl::Time deadline = absl::Now() + timeout;
    while (absl::Now() < deadline) {
      if (Get(name, &info).ok() && info.state() == state) return info;
      absl::SleepFor(absl::Milliseconds(50));
    }
    ADD_FAILURE() << name << " is " << v1::VmRunState_Name(info.state()) << ", not " << v1::VmRunState_Name(state);
    return info;
  }

  static bool Alive(pid_t pid) { return pid > 0 && kill(pid, 0) == 0; }

  VexdHarness vexd_;
};

// ----------------------------------------------------------------------------- auth

// control.proto: viewers may call Get*/List*/QueryPending/GetExceptionState/InspectSnapshot/
// WatchEvents; everything else needs an operator.
bool ViewerMayCall(const std::string& method) {
  return absl::StartsWith(method, "Get") || absl::StartsWith(method, "List") || method == "QueryPending" ||
         method == "InspectSnapshot" || method == "WatchEvents";
}

// Walks every method of every public service, so a handler that forgets its authorisation
// (or asks for the wrong role) cannot go unnoticed. Requests are empty: whatever the
// handler would do with them, the token check must come first.
TEST_F(VexdTest, EveryMethodChecksTokenAndRole) {
  const std::vector<std::string> services = {
      v1::VmService::service_full_name(), v1::ExceptionService::service_full_name(),
      v1::SnapshotService::service_full_name(), v1::EventService::service_full_name(),
      v1::MigrationService::service_full_name()};
  int methods = 0;
  for (const std::string& service_name : services) {
    const google::protobuf::ServiceDescriptor* service =
        google::protobuf::DescriptorPool::generated_pool()->FindServiceByName(service_name);
    ASSERT_NE(service, nullptr) << service_name;
    for (int i = 0; i < service->method_count(); ++i) {
      const google::protobuf::MethodDescriptor* method = service->method(i);
      const std::string path = absl::StrCat("/", service->full_name(), "/", method->name());
      const absl::Duration deadline = method->server_streaming() ? absl::Milliseconds(500) : absl::Seconds(20);
      ++methods;
      SCOPED_TRACE(path);
      EXPECT_EQ(testing::CallRaw(vexd_.channel(), path, "", "", deadline).status.error_code(),
                grpc::StatusCode::UNAUTHENTICATED);
      EXPECT_EQ(testing::CallRaw(vexd_.channel(), path, "", "not-a-token", deadline).status.error_code(),
                grpc::StatusCode::UNAUTHENTICATED);
      const grpc::StatusCode as_viewer =
          testing::CallRaw(vexd_.channel(), path, "", kViewerToken, deadline).status.error_code();
      if (ViewerMayCall(method->name())) {
        EXPECT_NE(as_viewer, grpc::StatusCode::PERMISSION_DENIED);
        EXPECT_NE(as_viewer, grpc::StatusCode::UNAUTHENTICATED);
      } else {
        EXPECT_EQ(as_viewer, grpc::StatusCode::PERMISSION_DENIED);
      }
      const grpc::StatusCode as_operator =
          testing::CallRaw(vexd_.channel(), path, "", kOperatorToken, deadline).status.error_code();
      EXPECT_NE(as_operator, grpc::StatusCode::PERMISSION_DENIED);
      EXPECT_NE(as_operator, grpc::StatusCode::UNAUTHENTICATED);
    }
  }
  EXPECT_GE(methods, 22);
  // Empty requests created nothing.
  v1::ListVmsResponse list;
  ASSERT_GRPC_OK(vexd_.vms().ListVms(VexdHarness::Context().get(), v1::ListVmsRequest(), &list));
  EXPECT_EQ(list.vms_size(), 0);
}

TEST_F(VexdTest, HealthAndReflectionNeedNoToken) {
  testing::RawCall health = testing::CallRaw(vexd_.channel(), "/grpc.health.v1.Health/Check", "", "", absl::Seconds(5));
  ASSERT_TRUE(health.status.ok()) << health.status.error_message();
  ASSERT_EQ(health.responses.size(), 1u);
  EXPECT_EQ(health.responses[0], std::string("\x08\x01", 2));  // SERVING
  // ServerReflectionRequest{list_services: ""} (field 7).
  testing::RawCall reflection =
      testing::CallRaw(vexd_.channel(), "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                       std::string("\x3a\x00", 2), "", absl::Seconds(5));
  ASSERT_TRUE(reflection.status.ok()) << reflection.status.error_message();
  ASSERT_EQ(reflection.responses.size(), 1u);
  for (const char* service : {"vexstate.v1.VmService", "vexstate.v1.ExceptionService", "vexstate.v1.SnapshotService",
                              "vexstate.v1.EventService", "grpc.health.v1.Health"}) {
    EXPECT_THAT(reflection.responses[0], HasSubstr(service));
  }
}

// ----------------------------------------------------------------------------- VMs

TEST_F(VexdTest, InjectWhilePausedIsTakenOnceAfterResume) {
  v1::VmInfo info;
  ASSERT_GRPC_OK(Create("witness-1", /*start=*/true, &info));
  EXPECT_EQ(info.state(), v1::VM_RUNNING);
  EXPECT_TRUE(Alive(info.worker_pid()));
  EXPECT_GT(info.created_unix_ns(), 0);

  v1::ListVmsResponse list;
  ASSERT_GRPC_OK(vexd_.vms().ListVms(VexdHarness::Context(kViewerToken).get(), v1::ListVmsRequest(), &list));
  ASSERT_EQ(list.vms_size(), 1);
  EXPECT_EQ(list.vms(0).name(), "witness-1");
  EXPECT_EQ(list.vms(0).state(), v1::VM_RUNNING);

  ASSERT_GRPC_OK(Pause("witness-1"));
  EXPECT_EQ(WaitForState("witness-1", v1::VM_PAUSED).state(), v1::VM_PAUSED);
  ASSERT_GRPC_OK(Inject(Bank3Error("witness-1")));
  const v1::VmPending pending = Pending("witness-1");
  EXPECT_TRUE(MachineCheckPending(pending)) << pending.DebugString();
  EXPECT_EQ(pending.state(), v1::VM_PAUSED);
  EXPECT_THAT(absl::StrJoin(pending.summary(), "\n"), HasSubstr("#MC"));

  ASSERT_GRPC_OK(Pause("witness-1", /*resume=*/true));
  const std::vector<v1::Event> events = Watch("witness-1", absl::Seconds(15), kMachineCheckVector);
  EXPECT_EQ(CountGuestExceptions(events, kMachineCheckVector), 1);
  // vexd's sequence numbers increase through the stream.
  for (size_t i = 1; i < events.size(); ++i) EXPECT_GT(events[i].sequence(), events[i - 1].sequence());
  EXPECT_FALSE(MachineCheckPending(Pending("witness-1")));
}

TEST_F(VexdTest, CreatedVmStartsOnStartVm) {
  v1::VmInfo info;
  ASSERT_GRPC_OK(Create("late", /*start=*/false, &info));
  EXPECT_EQ(info.state(), v1::VM_CREATED);
  v1::VmRef ref;
  ref.set_name("late");
  ASSERT_GRPC_OK(vexd_.vms().StartVm(VexdHarness::Context().get(), ref, &info));
  EXPECT_EQ(info.state(), v1::VM_RUNNING);
  ASSERT_GRPC_OK(Pause("late"));
  const grpc::Status again = vexd_.vms().StartVm(VexdHarness::Context().get(), ref, &info);
  EXPECT_EQ(again.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << again.error_message();

  ASSERT_GRPC_OK(vexd_.vms().StopVm(VexdHarness::Context().get(), ref, &info));
  EXPECT_EQ(info.state(), v1::VM_STOPPED);
  EXPECT_EQ(info.worker_pid(), 0);
  ASSERT_GRPC_OK(Get("late", &info));
  EXPECT_EQ(info.state(), v1::VM_STOPPED);
  ASSERT_GRPC_OK(vexd_.vms().DeleteVm(VexdHarness::Context().get(), ref, &info));
  EXPECT_EQ(Get("late", &info).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_NE(access((vexd_.state_dir() + "/vms/late.record").c_str(), F_OK), 0);
}

TEST_F(VexdTest, KilledWorkerCrashesOnlyItsVm) {
  v1::VmInfo victim;
  v1::VmInfo bystander;
  ASSERT_GRPC_OK(Create("victim", /*start=*/true, &victim));
  ASSERT_GRPC_OK(Create("bystander", /*start=*/true, &bystander));
  ASSERT_EQ(kill(victim.worker_pid(), SIGKILL), 0);

  v1::VmInfo crashed = WaitForState("victim", v1::VM_CRASHED);
  EXPECT_THAT(crashed.error(), HasSubstr("killed by signal 9 (SIGKILL)"));
  EXPECT_THAT(crashed.error(), HasSubstr(absl::StrCat("pid ", victim.worker_pid())));
  const grpc::Status refused = Inject(Bank3Error("victim"));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(refused.error_message(), HasSubstr("killed by signal 9"));

  v1::VmInfo info;
  ASSERT_GRPC_OK(Get("bystander", &info));
  EXPECT_EQ(info.state(), v1::VM_RUNNING);
  EXPECT_EQ(info.worker_pid(), bystander.worker_pid());
  ASSERT_GRPC_OK(Pause("bystander"));
  v1::ListVmsResponse list;
  ASSERT_GRPC_OK(vexd_.vms().ListVms(VexdHarness::Context().get(), v1::ListVmsRequest(), &list));
  EXPECT_EQ(list.vms_size(), 2);

  // vexd's own lifecycle event says why.
  int crash_events = 0;
  for (const v1::Event& event : Watch("victim", absl::Milliseconds(500))) {
    if (event.has_lifecycle() && event.lifecycle().state() == v1::VM_CRASHED) {
      ++crash_events;
      EXPECT_THAT(event.lifecycle().reason(), HasSubstr("SIGKILL"));
    }
  }
  EXPECT_EQ(crash_events, 1);

  v1::VmRef ref;
  ref.set_name("victim");
  ASSERT_GRPC_OK(vexd_.vms().DeleteVm(VexdHarness::Context().get(), ref, &info));
  EXPECT_EQ(info.state(), v1::VM_CRASHED);
}

TEST_F(VexdTest, RestartedVexdReattachesAndKeepsPendingState) {
  v1::VmInfo runner;
  v1::VmInfo holder;
  v1::VmInfo doomed;
  ASSERT_GRPC_OK(Create("runner", /*start=*/true, &runner));
  ASSERT_GRPC_OK(Create("holder", /*start=*/true, &holder));
  ASSERT_GRPC_OK(Create("doomed", /*start=*/true, &doomed));
  ASSERT_GRPC_OK(Pause("holder"));
  ASSERT_GRPC_OK(Inject(Bank3Error("holder")));

  absl::StatusOr<int> exit = vexd_.Stop();
  ASSERT_TRUE(exit.ok()) << exit.status();
  EXPECT_EQ(*exit, 0) << vexd_.Log();
  EXPECT_TRUE(Alive(runner.worker_pid()));
  EXPECT_TRUE(Alive(holder.worker_pid()));
  // A worker that dies while no vexd watches.
  ASSERT_EQ(kill(doomed.worker_pid(), SIGKILL), 0);
  absl::SleepFor(absl::Milliseconds(200));

  ASSERT_TRUE(vexd_.Start().ok()) << vexd_.Log();
  v1::VmInfo info;
  ASSERT_GRPC_OK(Get("runner", &info));
  EXPECT_EQ(info.state(), v1::VM_RUNNING);
  EXPECT_EQ(info.worker_pid(), runner.worker_pid());
  ASSERT_GRPC_OK(Get("holder", &info));
  EXPECT_EQ(info.state(), v1::VM_PAUSED);
  ASSERT_GRPC_OK(Get("doomed", &info));
  EXPECT_EQ(info.state(), v1::VM_CRASHED);
  EXPECT_THAT(info.error(), HasSubstr("is gone"));

  // The pending machine check lived in the worker all along.
  EXPECT_TRUE(MachineCheckPending(Pending("holder")));
  v1::QueryPendingRequest all;
  all.set_all_vms(true);
  v1::QueryPendingResponse every;
  ASSERT_GRPC_OK(vexd_.exceptions().QueryPending(VexdHarness::Context(kViewerToken).get(), all, &every));
  ASSERT_EQ(every.vms_size(), 2);  // runner and holder; doomed has no worker
  EXPECT_EQ(every.vms(0).vm(), "holder");
  EXPECT_TRUE(MachineCheckPending(every.vms(0)));
  EXPECT_EQ(every.vms(1).vm(), "runner");
  EXPECT_FALSE(MachineCheckPending(every.vms(1)));

  ASSERT_GRPC_OK(Pause("holder", /*resume=*/true));
  EXPECT_EQ(CountGuestExceptions(Watch("holder", absl::Seconds(15), kMachineCheckVector), kMachineCheckVector), 1);

  // A re-attached worker is not vexd's child, but its death is still seen.
  ASSERT_EQ(kill(runner.worker_pid(), SIGKILL), 0);
  v1::VmInfo crashed = WaitForState("runner", v1::VM_CRASHED);
  EXPECT_THAT(crashed.error(), HasSubstr("exit status unknown"));
}

TEST_F(VexdTest, VexdKilledOutrightStillReattaches) {
  v1::VmInfo survivor;
  ASSERT_GRPC_OK(Create("survivor", /*start=*/true, &survivor));
  vexd_.Kill();  // no shutdown at all: the lock dies with it, the socket file stays behind
  EXPECT_TRUE(Alive(survivor.worker_pid()));
  ASSERT_TRUE(vexd_.Start().ok()) << vexd_.Log();
  v1::VmInfo info;
  ASSERT_GRPC_OK(Get("survivor", &info));
  EXPECT_EQ(info.state(), v1::VM_RUNNING);
  EXPECT_EQ(info.worker_pid(), survivor.worker_pid());
  ASSERT_GRPC_OK(Pause("survivor"));
  EXPECT_EQ(WaitForState("survivor", v1::VM_PAUSED).state(), v1::VM_PAUSED);
}

TEST_F(VexdTest, SecondVexdOnTheSameStateDirRefuses) {
  absl::StatusOr<std::pair<int, std::string>> second =
      VexdHarness::RunToExit({testing::Runfile("server/vexd"), "--state_dir", vexd_.state_dir(), "--tokens",
                              vexd_.tokens_file(), "--listen", absl::StrCat("unix:", vexd_.state_dir(), "/other.sock")},
                             absl::Seconds(20));
  ASSERT_TRUE(second.ok()) << second.status();
  EXPECT_EQ(second->first, 1);
  EXPECT_THAT(second->second, HasSubstr("another vexd"));
  v1::ListVmsResponse list;
  ASSERT_GRPC_OK(vexd_.vms().ListVms(VexdHarness::Context().get(), v1::ListVmsRequest(), &list));
}

// Regression: DeleteVm erased the VM's table entry (its last reference) while holding the VM's
// own mutex, so the mutex was unlocked after it was destroyed ("Mutex unlocked when destroyed",
// an abort about 2 times in 100). glibc's malloc is told to skip its per-thread cache and to
// overwrite freed memory, which turns that use-after-free into an abort on the first delete.
// The VMs are STOPPED records in the journal (no worker, no KVM needed): vexd takes them back at
// start, and then the table holds their only reference.
TEST(VexdDeleteVm, TheVmOutlivesItsLock) {
  VexdHarness vexd;
  const std::string vms_dir = vexd.state_dir() + "/vms";
  ASSERT_EQ(mkdir(vms_dir.c_str(), 0700), 0);
  const Journal journal(vms_dir);
  constexpr int kVms = 20;
  for (int i = 0; i < kVms; ++i) {
    v1::VmRecord record;
    record.set_name(absl::StrCat("gone-", i));
    record.set_last_state(v1::VM_STOPPED);
    ASSERT_TRUE(journal.Write(record).ok());
  }
  setenv("GLIBC_TUNABLES", "glibc.malloc.tcache_count=0:glibc.malloc.perturb=1", 1);
  const absl::Status started = vexd.Start();
  unsetenv("GLIBC_TUNABLES");
  ASSERT_TRUE(started.ok()) << started << vexd.Log();
  for (int i = 0; i < kVms; ++i) {
    v1::VmRef ref;
    ref.set_name(absl::StrCat("gone-", i));
    v1::VmInfo info;
    ASSERT_GRPC_OK(vexd.vms().DeleteVm(VexdHarness::Context().get(), ref, &info));
    EXPECT_EQ(info.state(), v1::VM_STOPPED);
  }
  v1::ListVmsResponse list;
  ASSERT_GRPC_OK(vexd.vms().ListVms(VexdHarness::Context().get(), v1::ListVmsRequest(), &list));
  EXPECT_EQ(list.vms_size(), 0);
  absl::StatusOr<int> stopped = vexd.Stop();
  ASSERT_TRUE(stopped.ok()) << stopped.status();
  EXPECT_EQ(*stopped, 0) << vexd.Log();
}

// ----------------------------------------------------------------------------- refusals

TEST_F(VexdTest, RefusedRequestsChangeNothing) {
  ASSERT_GRPC_OK(Create("steady", /*start=*/true));
  ASSERT_GRPC_OK(Pause("steady"));

  EXPECT_EQ(Inject(Bank3Error("steady"), kViewerToken).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(Inject(Bank3Error("steady"), "").error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_EQ(Inject(Bank3Error("nosuchvm")).error_code(), grpc::StatusCode::NOT_FOUND);
  v1::VmInfo info;
  EXPECT_EQ(Get("nosuchvm", &info).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Pause("nosuchvm").error_code(), grpc::StatusCode::NOT_FOUND);

  v1::InjectMachineCheckRequest bad_bank = Bank3Error("steady");
  bad_bank.set_bank(99);
  EXPECT_EQ(Inject(bad_bank).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  v1::InjectMachineCheckRequest bad_vcpu = Bank3Error("steady");
  bad_vcpu.set_vcpu(7);
  EXPECT_EQ(Inject(bad_vcpu).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_FALSE(MachineCheckPending(Pending("steady")));

  for (const std::string& name :
       {std::string("Bad Name"), std::string(""), std::string(64, 'a'), std::string("x/y"), std::string("UPPER")}) {
    const grpc::Status status = Create(name, false);
    EXPECT_EQ(status.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << "'" << name << "'";
  }
  EXPECT_EQ(Create("steady", false).error_code(), grpc::StatusCode::ALREADY_EXISTS);
  v1::CreateVmRequest zero_vcpus;
  *zero_vcpus.mutable_config() = WitnessConfig("zero");
  zero_vcpus.mutable_config()->set_vcpu_count(0);
  const grpc::Status refused_by_worker = vexd_.vms().CreateVm(VexdHarness::Context().get(), zero_vcpus, &info);
  EXPECT_EQ(refused_by_worker.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << refused_by_worker.error_message();
  for (const char* ext : {"record", "config", "log", "sock"}) {
    EXPECT_NE(access(absl::StrCat(vexd_.state_dir(), "/vms/zero.", ext).c_str(), F_OK), 0) << ext;
  }

  v1::SaveSnapshotRequest relative;
  relative.set_vm("steady");
  relative.set_path("snap.vex");
  v1::SaveSnapshotResponse saved;
  EXPECT_EQ(vexd_.snapshots().SaveSnapshot(VexdHarness::Context().get(), relative, &saved).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::QueryPendingRequest neither;
  v1::QueryPendingResponse pending;
  EXPECT_EQ(vexd_.exceptions().QueryPending(VexdHarness::Context().get(), neither, &pending).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  v1::VmRef ref;
  ref.set_name("steady");
  EXPECT_EQ(vexd_.vms().DeleteVm(VexdHarness::Context().get(), ref, &info).error_code(),
            grpc::StatusCode::FAILED_PRECONDITION);

  v1::ListVmsResponse list;
  ASSERT_GRPC_OK(vexd_.vms().ListVms(VexdHarness::Context().get(), v1::ListVmsRequest(), &list));
  ASSERT_EQ(list.vms_size(), 1);
  EXPECT_EQ(list.vms(0).state(), v1::VM_PAUSED);
  EXPECT_FALSE(MachineCheckPending(Pending("steady")));
}

// ----------------------------------------------------------------------------- snapshots

TEST_F(VexdTest, SnapshotSaveInspectRestore) {
  ASSERT_GRPC_OK(Create("origin", /*start=*/true));
  ASSERT_GRPC_OK(Pause("origin"));
  ASSERT_GRPC_OK(Inject(Bank3Error("origin")));
  const std::string path = vexd_.state_dir() + "/origin.vexsnap";
  v1::SaveSnapshotRequest save;
  save.set_vm("origin");
  save.set_path(path);
  v1::SaveSnapshotResponse saved;
  ASSERT_GRPC_OK(vexd_.snapshots().SaveSnapshot(VexdHarness::Context().get(), save, &saved));
  EXPECT_GT(saved.bytes(), 0u);

  v1::InspectSnapshotRequest inspect;
  inspect.set_path(path);
  v1::InspectSnapshotResponse inspected;
  ASSERT_GRPC_OK(vexd_.snapshots().InspectSnapshot(VexdHarness::Context(kViewerToken).get(), inspect, &inspected));
  EXPECT_EQ(inspected.config().name(), "origin");
  EXPECT_EQ(inspected.sha256(), saved.sha256());
  ASSERT_EQ(inspected.vcpus_size(), 1);
  EXPECT_THAT(absl::StrJoin(inspected.summary(), "\n"), HasSubstr("#MC"));

  v1::InspectSnapshotRequest missing;
  missing.set_path(vexd_.state_dir() + "/missing.vexsnap");
  EXPECT_EQ(vexd_.snapshots().InspectSnapshot(VexdHarness::Context().get(), missing, &inspected).error_code(),
            grpc::StatusCode::NOT_FOUND);
  const std::string garbage = vexd_.state_dir() + "/garbage.vexsnap";
  std::ofstream(garbage) << "not a snapshot";
  v1::RestoreSnapshotRequest corrupt;
  corrupt.set_path(garbage);
  corrupt.set_name("never");
  v1::RestoreSnapshotResponse restored;
  EXPECT_EQ(vexd_.snapshots().RestoreSnapshot(VexdHarness::Context().get(), corrupt, &restored).error_code(),
            grpc::StatusCode::DATA_LOSS);
  v1::VmInfo info;
  EXPECT_EQ(Get("never", &info).error_code(), grpc::StatusCode::NOT_FOUND);

  // The stored name is taken: a second VM under it is refused.
  v1::RestoreSnapshotRequest same_name;
  same_name.set_path(path);
  EXPECT_EQ(vexd_.snapshots().RestoreSnapshot(VexdHarness::Context().get(), same_name, &restored).error_code(),
            grpc::StatusCode::ALREADY_EXISTS);

  v1::RestoreSnapshotRequest restore;
  restore.set_path(path);
  restore.set_name("copy");
  restore.set_resume(true);
  ASSERT_GRPC_OK(vexd_.snapshots().RestoreSnapshot(VexdHarness::Context().get(), restore, &restored));
  EXPECT_EQ(restored.vm().name(), "copy");
  EXPECT_EQ(restored.vm().restored_from(), path);
  EXPECT_EQ(CountGuestExceptions(Watch("copy", absl::Seconds(15), kMachineCheckVector), kMachineCheckVector), 1);
}

// ----------------------------------------------------------------------------- start-up

TEST(VexdStartup, RefusesPlaintextTcpBeyondLoopback) {
  VexdHarness vexd;
  absl::StatusOr<std::pair<int, std::string>> run =
      VexdHarness::RunToExit({testing::Runfile("server/vexd"), "--state_dir", vexd.state_dir(), "--tokens",
                              vexd.tokens_file(), "--listen", "tcp:0.0.0.0:0"},
                             absl::Seconds(20));
  ASSERT_TRUE(run.ok()) << run.status();
  EXPECT_EQ(run->first, 1);
  EXPECT_THAT(run->second, HasSubstr("not a loopback address"));
  EXPECT_THAT(run->second, HasSubstr("--insecure_tcp"));
}

// The port vexd picked for its first TCP listener, from its log ("serving on ..., tcp:127.0.0.1:PORT").
int ServedTcpPort(const std::string& log) {
  const size_t at = log.rfind("tcp:127.0.0.1:");
  if (at == std::string::npos) return 0;
  return std::atoi(log.c_str() + at + std::string("tcp:127.0.0.1:").size());
}

TEST(VexdStartup, CreatesDefaultTokensAndServesLoopbackTcp) {
  VexdHarness vexd;
  ASSERT_TRUE(vexd.Start({"--listen", absl::StrCat("unix:", vexd.socket()), "--listen", "tcp:127.0.0.1:0"},
                         /*default_tokens=*/true)
                  .ok())
      << vexd.Log();
  const std::string tokens_path = vexd.state_dir() + "/tokens";
  struct stat st;
  ASSERT_EQ(stat(tokens_path.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  EXPECT_THAT(vexd.Log(), HasSubstr(tokens_path));
  std::ifstream in(tokens_path);
  std::vector<std::pair<std::string, std::string>> tokens;  // token, role
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::istringstream words(line);
    std::string token, role;
    words >> token >> role;
    tokens.emplace_back(token, role);
  }
  ASSERT_EQ(tokens.size(), 2u);
  EXPECT_EQ(tokens[0].second, "operator");  // first, so `vexctl --token_file` picks it
  EXPECT_EQ(tokens[1].second, "viewer");
  EXPECT_GE(tokens[0].first.size(), 32u);

  const int port = ServedTcpPort(vexd.Log());
  ASSERT_GT(port, 0) << vexd.Log();
  auto tcp = grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials());
  auto vms = v1::VmService::NewStub(tcp);
  v1::ListVmsResponse list;
  ASSERT_GRPC_OK(vms->ListVms(VexdHarness::Context(tokens[1].first).get(), v1::ListVmsRequest(), &list));
  v1::VmRef ref;
  ref.set_name("any");
  v1::VmInfo info;
  EXPECT_EQ(vms->PauseVm(VexdHarness::Context(tokens[1].first).get(), ref, &info).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_EQ(vms->PauseVm(VexdHarness::Context(tokens[0].first).get(), ref, &info).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

// A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl(1).
bool MakeCertificates(const std::string& dir) {
  const std::string script = absl::StrCat(
      "set -e; cd ", dir, "; exec >openssl.log 2>&1\n",
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout ca.key -out ca.pem "
      "-days 1 -subj /CN=vexd-test-ca\n",
      "for who in server client; do\n",
      "  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout $who.key -out $who.csr "
      "-subj /CN=vexd-test-$who\n",
      "  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > $who.ext\n",
      "  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 1 "
      "-extfile $who.ext\n",
      "done\n");
  return std::system(absl::StrCat("bash -c '", absl::StrReplaceAll(script, {{"'", "'\\''"}}), "'").c_str()) == 0;
}

TEST(VexdStartup, MutualTlsOnTcp) {
  if (access("/usr/bin/openssl", X_OK) != 0) GTEST_SKIP() << "no openssl(1) to make certificates";
  VexdHarness vexd;
  const std::string dir = vexd.state_dir();
  ASSERT_TRUE(MakeCertificates(dir)) << ReadFile(dir + "/openssl.log");
  ASSERT_TRUE(vexd.Start({"--listen", absl::StrCat("unix:", vexd.socket()), "--listen", "tcp:127.0.0.1:0", "--tls_cert",
                          dir + "/server.pem", "--tls_key", dir + "/server.key", "--tls_client_ca", dir + "/ca.pem"})
                  .ok())
      << vexd.Log();
  const int port = ServedTcpPort(vexd.Log());
  ASSERT_GT(port, 0) << vexd.Log();
  EXPECT_THAT(vexd.Log(), HasSubstr("mutual TLS"));

  grpc::SslCredentialsOptions with_cert;
  with_cert.pem_root_certs = ReadFile(dir + "/ca.pem");
  with_cert.pem_private_key = ReadFile(dir + "/client.key");
  with_cert.pem_cert_chain = ReadFile(dir + "/client.pem");
  auto trusted =
      v1::VmService::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::SslCredentials(with_cert)));
  v1::ListVmsResponse list;
  ASSERT_GRPC_OK(trusted->ListVms(VexdHarness::Context(kViewerToken).get(), v1::ListVmsRequest(), &list));
  // TLS does not replace the token.
  EXPECT_EQ(trusted->ListVms(VexdHarness::Context("").get(), v1::ListVmsRequest(), &list).error_code(),
            grpc::StatusCode::UNAUTHENTICATED);

  grpc::SslCredentialsOptions without_cert;
  without_cert.pem_root_certs = with_cert.pem_root_certs;
  auto anonymous =
      v1::VmService::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::SslCredentials(without_cert)));
  EXPECT_EQ(anonymous->ListVms(VexdHarness::Context(kViewerToken, absl::Seconds(5)).get(), v1::ListVmsRequest(), &list)
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
  auto plaintext =
      v1::VmService::NewStub(grpc::CreateChannel(absl::StrCat("127.0.0.1:", port), grpc::InsecureChannelCredentials()));
  EXPECT_EQ(plaintext->ListVms(VexdHarness::Context(kViewerToken, absl::Seconds(5)).get(), v1::ListVmsRequest(), &list)
                .error_code(),
            grpc::StatusCode::UNAVAILABLE);
}

}  // namespace
}  // namespace vexstate::vexd
