// Live migration of an arm64 VM with a pending virtual SError, between two real vexd hosts on
// real arm64 KVM (nested: this program is /init of an arm64 Linux under qemu-system-aarch64,
// tools/nested/run_nested.sh). The two "hosts" are two vexd processes on the nested machine's
// loopback, each with its own state directory, talking mutual TLS over TCP exactly as two
// machines would; every binary is the aarch64 build of the one x86_64 hosts run.
//
// The guest is the witness: the SError is injected while the guest has SError masked
// (PSTATE.A=1, the arm64 witness's normal state), so it stays pending through the migration;
// the destination guest then unmasks SError twice and must report it exactly once, with the
// syndrome the source injected. The control migrates a VM with nothing pending: unmasking
// there must report nothing.
#include <fcntl.h>
#include <net/if.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "migration/link_timeouts.h"
#include "tests/arm64/init_main.h"

namespace vexstate {
namespace {

using client::ConnectOptions;
using client::VexClient;

// ESR_EL1 the guest reads for a virtual SError with VSESR_EL2 ISS `iss`: EC 0x2f (SError),
// IL set, the ISS as injected.
constexpr uint64_t kIss = 0x1234;
constexpr uint64_t kExpectedEsr = (0x2full << 26) | (1ull << 25) | kIss;

std::string Files(const std::string& name) { return absl::StrCat(nested::kImportDir, "/", name); }

// The nested machine boots with loopback down; vexd's peers and data streams need it.
absl::Status BringUpLoopback() {
  const int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return absl::ErrnoToStatus(errno, "socket");
  struct ifreq request = {};
  std::snprintf(request.ifr_name, sizeof(request.ifr_name), "lo");
  absl::Status status;
  if (ioctl(fd, SIOCGIFFLAGS, &request) != 0) {
    status = absl::ErrnoToStatus(errno, "SIOCGIFFLAGS lo");
  } else {
    request.ifr_flags |= IFF_UP;
    if (ioctl(fd, SIOCSIFFLAGS, &request) != 0) status = absl::ErrnoToStatus(errno, "SIOCSIFFLAGS lo");
  }
  close(fd);
  return status;
}

// One vexd "host": its own state directory, Unix socket for the control plane and a TCP
// MigrationPeer endpoint on loopback.
class Host {
 public:
  Host(std::string name, int migration_port)
      : name_(std::move(name)), dir_(absl::StrCat("/tmp/", name_)), migration_port_(migration_port) {}
  ~Host() { Stop(); }

  std::string migration_address() const { return absl::StrCat("tcp:127.0.0.1:", migration_port_); }
  const VexClient& client() const { return *client_; }
  const std::string& name() const { return name_; }

  absl::Status Start() {
    mkdir(dir_.c_str(), 0700);
    const std::string log = dir_ + ".log";
    pid_ = fork();
    if (pid_ < 0) return absl::ErrnoToStatus(errno, "fork");
    if (pid_ == 0) {
      const int out = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      dup2(out, 1);
      dup2(out, 2);
      const std::string vexd = Files("vexd"), worker = Files("vexd_worker");
      const std::string state = "--state_dir=" + dir_, workers = "--worker_binary=" + worker;
      const std::string listen = "--migration_listen=" + migration_address();
      const std::string tls = absl::StrCat("--migration_tls_dir=", nested::kImportDir);
      execl(vexd.c_str(), vexd.c_str(), state.c_str(), workers.c_str(), listen.c_str(), tls.c_str(), nullptr);
      _exit(127);
    }
    // vexd writes its tokens and socket at start-up; a call answering is the sign of life.
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    absl::Status last = absl::UnavailableError("not yet tried");
    while (absl::Now() < give_up) {
      absl::SleepFor(absl::Milliseconds(200));
      if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return absl::InternalError(absl::StrCat("vexd ", name_, " exited at start-up:\n", LogTail()));
      }
      if (access((dir_ + "/tokens").c_str(), R_OK) != 0) continue;
      ConnectOptions options;
      options.target = absl::StrCat("unix:", dir_, "/vexd.sock");
      options.token_file = dir_ + "/tokens";
      options.use_environment = false;
      options.deadline = absl::Seconds(60);
      absl::StatusOr<VexClient> connected = VexClient::Connect(options);
      if (!connected.ok()) {
        last = connected.status();
        continue;
      }
      client_ = std::make_unique<VexClient>(std::move(*connected));
      last = client_->ListVms(v1::ListVmsRequest()).status();
      if (last.ok()) return absl::OkStatus();
      client_.reset();
    }
    return absl::DeadlineExceededError(absl::StrCat("vexd ", name_, " did not answer: ", last.message(), "\n",
                                                    LogTail()));
  }

  void Stop() {
    client_.reset();
    if (pid_ > 0) {
      kill(pid_, SIGTERM);
      waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }

  // vexd's own log, or with `vm` the log of that VM's worker.
  std::string LogTail(const std::string& vm = "") const {
    std::ifstream in(vm.empty() ? dir_ + ".log" : absl::StrCat(dir_, "/vms/", vm, ".log"));
    std::stringstream all;
    all << in.rdbuf();
    const std::string text = all.str();
    return text.size() > 4000 ? text.substr(text.size() - 4000) : text;
  }

  // The guest's report lines of `kind` that vexd still holds for `vm` (events replay).
  std::vector<v1::GuestReportEvent> Reports(const std::string& vm, const std::string& kind) const {
    std::vector<v1::GuestReportEvent> reports;
    v1::WatchEventsRequest request;
    request.set_vm(vm);
    request.set_replay(true);
    client::WatchOptions options;
    options.stop_when_idle = absl::Milliseconds(500);
    client_
        ->WatchEvents(
            request,
            [&](const v1::Event& event) {
              if (event.has_guest_report() && event.guest_report().kind() == kind) {
                reports.push_back(event.guest_report());
              }
              return true;
            },
            options)
        .IgnoreError();
    return reports;
  }

 private:
  const std::string name_;
  const std::string dir_;
  const int migration_port_;
  pid_t pid_ = -1;
  std::unique_ptr<VexClient> client_;
};

v1::VmRef Ref(const std::string& vm) {
  v1::VmRef ref;
  ref.set_name(vm);
  return ref;
}

class NestedMigrationTest : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!nested::RunningAsInit() || access("/dev/kvm", R_OK | W_OK) != 0) return;
    setup_ = BringUpLoopback();
    if (!setup_.ok()) return;
    // Both vexd (and their workers) run on an emulated CPU shared with a spinning guest:
    // healthy processes can stall for seconds, longer than the default dead-link timeouts.
    setenv(migration::kLinkScaleEnv, "10", 1);
    source_ = new Host("src", 7401);
    destination_ = new Host("dst", 7402);
    setup_ = source_->Start();
    if (setup_.ok()) setup_ = destination_->Start();
  }
  static void TearDownTestSuite() {
    delete source_;
    delete destination_;
    source_ = destination_ = nullptr;
  }

  void SetUp() override {
    if (!nested::RunningAsInit() || access("/dev/kvm", R_OK | W_OK) != 0) {
      GTEST_SKIP() << "needs real arm64 KVM: run as /init of a nested boot (nested_kvm_test)";
    }
    ASSERT_TRUE(setup_.ok()) << setup_;
    absl::StatusOr<v1::HostCapabilities> caps = source_->client().GetHostCapabilities(v1::GetHostCapabilitiesRequest());
    ASSERT_TRUE(caps.ok()) << caps.status();
  }

  // A running witness VM that dirties memory, READY reported.
  void CreateRunning(const std::string& vm) {
    v1::CreateVmRequest request;
    v1::VmConfig& config = *request.mutable_config();
    config.set_name(vm);
    config.set_arch(v1::ARCH_ARM64);
    config.set_vcpu_count(1);
    config.set_memory_bytes(16 << 20);
    config.mutable_guest()->set_bundled("witness");
    config.mutable_witness()->set_heartbeat_ms(100);
    config.mutable_witness()->set_workset_pages(512);  // 2 MiB dirtied at 4 MiB/s
    config.mutable_witness()->set_dirty_pages_per_sec(1024);
    request.set_start(true);
    absl::StatusOr<v1::VmInfo> created = source_->client().CreateVm(request);
    ASSERT_TRUE(created.ok()) << created.status() << "\n" << source_->LogTail();
    const absl::Time give_up = absl::Now() + absl::Seconds(60);
    while (source_->Reports(vm, "READY").empty() && absl::Now() < give_up) absl::SleepFor(absl::Milliseconds(200));
    ASSERT_FALSE(source_->Reports(vm, "READY").empty()) << "the guest never reported READY";
    absl::SleepFor(absl::Seconds(1));  // the workload spreads over its working set
  }

  void Migrate(const std::string& vm) {
    v1::MigrateVmRequest request;
    request.set_vm(vm);
    request.set_destination(destination_->migration_address());
    request.set_max_downtime_ms(300);
    int progress_messages = 0;
    absl::StatusOr<v1::MigrationResult> result =
        source_->client().MigrateVm(request, [&](const v1::MigrationProgress&) { ++progress_messages; });
    ASSERT_TRUE(result.ok()) << result.status() << "\n" << source_->LogTail();
    ASSERT_EQ(result->outcome(), v1::MIGRATION_COMPLETED)
        << result->error() << "\nsource:\n" << source_->LogTail() << "\nsource worker:\n" << source_->LogTail(vm)
        << "\ndestination:\n" << destination_->LogTail() << "\ndestination worker:\n" << destination_->LogTail(vm);
    EXPECT_EQ(result->memory_sha256().size(), 64u);
    std::printf("  migrated %s: total %llu ms, downtime %llu ms, %llu bytes, %u rounds, %d progress messages\n",
                vm.c_str(), static_cast<unsigned long long>(result->total_ms()),
                static_cast<unsigned long long>(result->downtime_ms()),
                static_cast<unsigned long long>(result->bytes_sent()), result->rounds(), progress_messages);
    // Exactly one host has the VM: the destination, running.
    EXPECT_EQ(source_->client().GetVm(Ref(vm)).status().code(), absl::StatusCode::kNotFound);
    absl::StatusOr<v1::VmInfo> there = destination_->client().GetVm(Ref(vm));
    ASSERT_TRUE(there.ok()) << there.status();
    EXPECT_EQ(there->state(), v1::VM_RUNNING);
  }

  // Unmasks SError twice on `host`'s guest: a pending SError is taken at the first unmask,
  // and a second unmask shows that nothing was left to take twice.
  std::vector<v1::GuestReportEvent> UnmaskTwiceOn(const Host& host, const std::string& vm) {
    for (int i = 0; i < 2; ++i) {
      v1::GuestCommandRequest command;
      command.set_vm(vm);
      command.set_command(v1::GUEST_COMMAND_UNMASK_SERROR);
      command.set_wait_ms(10000);
      absl::StatusOr<v1::GuestCommandResponse> done = host.client().SendGuestCommand(command);
      EXPECT_TRUE(done.ok()) << done.status();
    }
    return host.Reports(vm, "SERROR");
  }

  uint64_t MemcheckBadPages(const Host& host, const std::string& vm) {
    v1::GuestCommandRequest command;
    command.set_vm(vm);
    command.set_command(v1::GUEST_COMMAND_MEMCHECK);
    command.set_wait_ms(10000);
    absl::StatusOr<v1::GuestCommandResponse> done = host.client().SendGuestCommand(command);
    EXPECT_TRUE(done.ok()) << done.status();
    if (!done.ok()) return ~0ull;
    for (const v1::GuestReportEvent& report : done->reports()) {
      if (report.kind() != "MEMCHECK") continue;
      EXPECT_GT(report.fields().at("pages"), 0u) << report.line();
      return report.fields().at("bad");
    }
    ADD_FAILURE() << "no MEMCHECK report from " << host.name() << "/" << vm;
    return ~0ull;
  }

  static absl::Status setup_;
  static Host* source_;
  static Host* destination_;
};

absl::Status NestedMigrationTest::setup_ = absl::OkStatus();
Host* NestedMigrationTest::source_ = nullptr;
Host* NestedMigrationTest::destination_ = nullptr;

TEST_F(NestedMigrationTest, PendingSerrorWithEsrIsTakenOnceOnTheDestination) {
  const std::string vm = "serror";
  ASSERT_NO_FATAL_FAILURE(CreateRunning(vm));
  v1::InjectSErrorRequest inject;
  inject.set_vm(vm);
  inject.set_vcpu(0);
  inject.set_has_esr(true);
  inject.set_esr(kIss);
  inject.set_pause_around(true);
  absl::StatusOr<v1::InjectResponse> injected = source_->client().InjectSError(inject);
  ASSERT_TRUE(injected.ok()) << injected.status();
  // Pending, not taken: the guest has SError masked.
  v1::QueryPendingRequest query;
  query.set_vm(vm);
  absl::StatusOr<v1::QueryPendingResponse> pending = source_->client().QueryPending(query);
  ASSERT_TRUE(pending.ok()) << pending.status();
  ASSERT_EQ(pending->vms_size(), 1);
  ASSERT_GE(pending->vms(0).vcpus_size(), 1);
  EXPECT_TRUE(pending->vms(0).vcpus(0).arm64().serror_pending()) << absl::StrJoin(pending->vms(0).summary(), "\n");

  ASSERT_NO_FATAL_FAILURE(Migrate(vm));
  EXPECT_TRUE(source_->Reports(vm, "SERROR").empty()) << "the source guest took the SError";

  const std::vector<v1::GuestReportEvent> taken = UnmaskTwiceOn(*destination_, vm);
  ASSERT_EQ(taken.size(), 1u) << "expected the SError exactly once on the destination";
  EXPECT_EQ(taken[0].fields().at("esr"), kExpectedEsr) << taken[0].line();
  std::printf("  destination guest: %s\n", taken[0].line().c_str());
  EXPECT_EQ(MemcheckBadPages(*destination_, vm), 0u);
}

TEST_F(NestedMigrationTest, ControlNothingPendingNothingIsTakenOnTheDestination) {
  const std::string vm = "control";
  ASSERT_NO_FATAL_FAILURE(CreateRunning(vm));
  ASSERT_NO_FATAL_FAILURE(Migrate(vm));
  EXPECT_TRUE(UnmaskTwiceOn(*destination_, vm).empty()) << "an SError appeared that nobody injected";
  EXPECT_EQ(MemcheckBadPages(*destination_, vm), 0u);
}

}  // namespace
}  // namespace vexstate
