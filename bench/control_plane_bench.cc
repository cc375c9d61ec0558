// Control-plane latency and throughput of one vexd with 1, 10 and 100 VMs
// (SPEC §8, issue 6): QueryPending and InjectMachineCheck through the C++
// client library (client/client.h), as an orchestrator calls them.
//
// The vexd is not started here: bench/run.py starts one on its own state dir
// and passes --target and --token, and SIGTERMs every worker afterwards
// (workers outlive vexd by design). This program creates the VMs (the bundled
// witness guest, one vCPU, --memory_mib of RAM), names them "bench-NNN", writes
// each worker's pid to --pids_out as soon as it exists, and stops them at the
// end (their workers exit). It does not DeleteVm them: the runner throws the
// whole state dir away, and vexd (at 1ff9791) can abort in DeleteVm when it
// held the last reference to the VM (Supervisor::DeleteVm erases the VM while
// holding its mutex).
//
// Two fleet modes, because they cost very differently on this host:
//   paused   every VM was started and paused (VM_PAUSED; QueryPending
//            all_vms skips VMs never started): QueryPending reads the state
//            directly, nothing needs pausing;
//   running  every VM runs the witness guest, which spins (no hlt): each
//            QueryPending pauses the VM (signal, vCPU out of KVM_RUN), reads,
//            resumes, while N spinning vCPUs compete for the host's cores.
//
// Benchmarks, per VM count N and mode, in this order:
//   GetHostCapabilities/vms:N/MODE          caller -> vexd (cached answer):
//                                           the floor of one gRPC hop
//   GetVm/vms:N/MODE                        caller -> vexd -> worker, no
//                                           ioctl: the floor of two hops
//   QueryPending/vms:N/MODE                 one caller, VMs in turn: latency
//   InjectMachineCheck/vms:N/MODE           one caller, VMs in turn: latency
//   QueryPendingAllVms/vms:N/MODE           one RPC reading all N VMs: latency
//   QueryPending/vms:N/MODE/threads:T       T callers: throughput (items/s)
//   InjectMachineCheck/vms:N/MODE/threads:T T callers: throughput
// The machine check is a corrected error (MCi_STATUS VAL|EN|MISCV|ADDRV, no
// UC): KVM logs it in the bank without raising #MC, so it can be injected
// again and again into running and paused guests alike. An uncorrected
// one costs two more vCPU ioctls in the worker (CR4 and events checks).
// pause_around is set, as a running VM needs it.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/latency.h"
#include "benchmark/benchmark.h"
#include "client/client.h"
#include "client/connect_options.h"
#include "vexstate/v1/control.pb.h"

ABSL_FLAG(std::string, target, "",
          "the vexd to measure: unix:PATH or tcp:HOST:PORT");
ABSL_FLAG(std::string, token, "", "an operator bearer token of that vexd");
ABSL_FLAG(std::vector<std::string>, vms,
          std::vector<std::string>({"1", "10", "100"}),
          "VM counts to measure, ascending");
ABSL_FLAG(std::vector<std::string>, modes,
          std::vector<std::string>({"paused", "running"}),
          "fleet modes per VM count: paused, running");
ABSL_FLAG(uint64_t, memory_mib, 16, "guest RAM of each VM");
ABSL_FLAG(int, latency_samples, 1000,
          "RPCs per latency benchmark run, paused fleets (p99 needs >= 100)");
ABSL_FLAG(int, running_latency_samples, 300,
          "RPCs per latency benchmark run, running fleets of up to 10 VMs "
          "(divided by N/10 above: each call is about N times slower)");
ABSL_FLAG(int, throughput_threads, 8,
          "concurrent callers in the throughput benchmarks");
ABSL_FLAG(double, throughput_seconds, 1.0,
          "minimum time of a throughput benchmark run");
ABSL_FLAG(std::string, pids_out, "",
          "append each worker's pid to this file as soon as it exists");

namespace vexstate::bench {
namespace {

namespace v1 = ::vexstate::v1;
using client::VexClient;

// A corrected error: logged by KVM without an exception (see the file
// comment).
constexpr uint64_t kCorrected = 0x9c00000000000005ull;
constexpr uint32_t kBank = 1;

enum class Mode { kPaused, kRunning };

const char* Name(Mode mode) {
  return mode == Mode::kPaused ? "paused" : "running";
}

// The VMs of this run. Thread-safe: every benchmark thread calls Ensure before
// its timed loop; the first does the work, the others find it done.
class Fleet {
 public:
  Fleet(const VexClient& client, uint64_t memory_bytes, std::string pids_out)
      : client_(client),
        memory_bytes_(memory_bytes),
        pids_out_(std::move(pids_out)) {}

  // Exactly `count` live VMs, all in `mode`. New VMs are created, extra ones
  // stopped.
  absl::Status Ensure(size_t count, Mode mode) {
    absl::MutexLock lock(&mu_);
    if (count == names_.size() && mode == mode_) return absl::OkStatus();
    const absl::Time start = absl::Now();
    while (names_.size() > count) {
      if (absl::Status s = Stop(names_.back()); !s.ok()) return s;
      names_.pop_back();
    }
    while (names_.size() < count) {
      if (absl::Status s = Create(absl::StrFormat("bench-%03d", next_id_++));
          !s.ok())
        return s;
    }
    for (const std::string& name : names_) {
      if (absl::Status s = SetMode(name, mode); !s.ok()) return s;
    }
    mode_ = mode;
    std::fprintf(stderr, "control_plane_bench: fleet of %zu VMs %s in %.1f s\n",
                 count, Name(mode), absl::ToDoubleSeconds(absl::Now() - start));
    return absl::OkStatus();
  }

  // Name of VM i of the current fleet. Call after Ensure, from the benchmark
  // threads only (the fleet does not change while they run).
  const std::string& name(size_t i) const ABSL_NO_THREAD_SAFETY_ANALYSIS {
    return names_[i % names_.size()];
  }

  // Stops every VM (their workers exit).
  absl::Status StopAll() {
    absl::MutexLock lock(&mu_);
    absl::Status first;
    for (const std::string& name : names_) first.Update(Stop(name));
    names_.clear();
    return first;
  }

 private:
  absl::Status Create(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::CreateVmRequest request;
    v1::VmConfig* config = request.mutable_config();
    config->set_name(name);
    config->set_arch(v1::ARCH_X86_64);
    config->set_vcpu_count(1);
    config->set_memory_bytes(memory_bytes_);
    config->mutable_guest()->set_bundled("witness");
    absl::StatusOr<v1::VmInfo> info = client_.CreateVm(request);
    if (!info.ok()) return Annotate(info.status(), "CreateVm " + name);
    names_.push_back(name);
    states_[name] = info->state();
    if (!pids_out_.empty()) {
      std::ofstream(pids_out_, std::ios::app) << info->worker_pid() << "\n";
    }
    return absl::OkStatus();
  }

  absl::Status SetMode(const std::string& name, Mode mode)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::VmRef ref;
    ref.set_name(name);
    const std::string what = absl::StrFormat("making %s %s", name, Name(mode));
    absl::StatusOr<v1::VmInfo> info;
    if (states_[name] == v1::VM_CREATED) {
      // Started in both modes: a VM that never ran is what neither mode is
      // about (and QueryPending all_vms skips it). In paused mode it is paused
      // right away, so at most one guest spins while the fleet grows.
      info = client_.StartVm(ref);
      if (!info.ok()) return Annotate(info.status(), what);
      states_[name] = info->state();
    }
    if (mode == Mode::kRunning && states_[name] == v1::VM_PAUSED) {
      info = client_.ResumeVm(ref);
    } else if (mode == Mode::kPaused && states_[name] == v1::VM_RUNNING) {
      info = client_.PauseVm(ref);
    } else {
      return absl::OkStatus();
    }
    if (!info.ok()) return Annotate(info.status(), what);
    states_[name] = info->state();
    return absl::OkStatus();
  }

  absl::Status Stop(const std::string& name)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    v1::VmRef ref;
    ref.set_name(name);
    // StopVm ends the worker; the VM stays listed as STOPPED, which
    // QueryPending all_vms skips.
    if (absl::StatusOr<v1::VmInfo> s = client_.StopVm(ref); !s.ok())
      return Annotate(s.status(), "StopVm " + name);
    states_.erase(name);
    return absl::OkStatus();
  }

  static absl::Status Annotate(const absl::Status& s, const std::string& what) {
    return absl::Status(s.code(), what + ": " + std::string(s.message()));
  }

  const VexClient& client_;
  const uint64_t memory_bytes_;
  const std::string pids_out_;
  absl::Mutex mu_;
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, v1::VmRunState> states_ ABSL_GUARDED_BY(mu_);
  Mode mode_ ABSL_GUARDED_BY(mu_) = Mode::kPaused;
  // Names are never reused: a stopped VM stays listed.
  int next_id_ ABSL_GUARDED_BY(mu_) = 0;
};

struct Env {
  const VexClient* client;
  Fleet* fleet;
};

// One RPC against VM `i` of the fleet.
using Call = absl::Status (*)(const Env& env, size_t i);

absl::Status GetHostCapabilities(const Env& env, size_t) {
  return env.client->GetHostCapabilities({}).status();
}

absl::Status GetVm(const Env& env, size_t i) {
  v1::VmRef ref;
  ref.set_name(env.fleet->name(i));
  return env.client->GetVm(ref).status();
}

absl::Status QueryPendingOne(const Env& env, size_t i) {
  v1::QueryPendingRequest request;
  request.set_vm(env.fleet->name(i));
  absl::StatusOr<v1::QueryPendingResponse> response =
      env.client->QueryPending(request);
  if (!response.ok()) return response.status();
  if (response->vms_size() != 1)
    return absl::InternalError("QueryPending: expected one VM in the answer");
  return absl::OkStatus();
}

absl::Status QueryPendingAll(const Env& env, size_t) {
  v1::QueryPendingRequest request;
  request.set_all_vms(true);
  absl::StatusOr<v1::QueryPendingResponse> response =
      env.client->QueryPending(request);
  return response.status();
}

absl::Status InjectMachineCheckOne(const Env& env, size_t i) {
  v1::InjectMachineCheckRequest request;
  request.set_vm(env.fleet->name(i));
  request.set_vcpu(0);
  request.set_bank(kBank);
  request.set_status(kCorrected);
  request.set_addr(0x12345000);
  request.set_misc(0x86);
  request.set_pause_around(true);
  return env.client->InjectMachineCheck(request).status();
}

// Latency: one caller, one RPC per iteration, VMs in turn.
void BM_Latency(benchmark::State& state, Env env, Call call, size_t count,
                Mode mode) {
  if (absl::Status s = env.fleet->Ensure(count, mode); !s.ok()) {
    state.SkipWithError(std::string(s.message()).c_str());
    return;
  }
  LatencyRecorder latency;
  size_t i = 0;
  for (auto _ : state) {
    const int64_t t0 = NowNs();
    absl::Status s = call(env, i++);
    latency.Add(NowNs() - t0);
    if (!s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      break;
    }
  }
  latency.Report(state);
  state.SetItemsProcessed(state.iterations());
}

// Throughput: `state.threads()` callers, each starting at its own VM.
void BM_Throughput(benchmark::State& state, Env env, Call call, size_t count,
                   Mode mode) {
  if (absl::Status s = env.fleet->Ensure(count, mode); !s.ok()) {
    state.SkipWithError(std::string(s.message()).c_str());
    return;
  }
  size_t i = state.thread_index();
  for (auto _ : state) {
    if (absl::Status s = call(env, i); !s.ok()) {
      state.SkipWithError(std::string(s.message()).c_str());
      break;
    }
    i += state.threads();
  }
  state.SetItemsProcessed(state.iterations());
}

absl::StatusOr<std::vector<size_t>> ParseCounts(
    const std::vector<std::string>& in) {
  std::vector<size_t> out;
  for (const std::string& s : in) {
    size_t n;
    if (!absl::SimpleAtoi(s, &n) || n == 0)
      return absl::InvalidArgumentError("--vms: bad count " + s);
    out.push_back(n);
  }
  return out;
}

absl::StatusOr<std::vector<Mode>> ParseModes(
    const std::vector<std::string>& in) {
  std::vector<Mode> out;
  for (const std::string& s : in) {
    if (s == "paused") {
      out.push_back(Mode::kPaused);
    } else if (s == "running") {
      out.push_back(Mode::kRunning);
    } else {
      return absl::InvalidArgumentError("--modes: " + s +
                                        " is neither paused nor running");
    }
  }
  return out;
}

void Register(const Env& env, const std::vector<size_t>& counts,
              const std::vector<Mode>& modes) {
  const int threads = absl::GetFlag(FLAGS_throughput_threads);
  const double seconds = absl::GetFlag(FLAGS_throughput_seconds);
  struct Op {
    const char* name;
    Call call;
  };
  const Op floors[] = {{"GetHostCapabilities", GetHostCapabilities},
                       {"GetVm", GetVm}};
  const Op ops[] = {{"QueryPending", QueryPendingOne},
                    {"InjectMachineCheck", InjectMachineCheckOne}};
  for (size_t count : counts) {
    for (Mode mode : modes) {
      const std::string suffix =
          absl::StrFormat("vms:%d/%s", count, Name(mode));
      // A call against a running fleet pauses one VM among N spinning ones
      // and takes about N times longer: fewer calls there (the `samples`
      // counter says how many; p99 of fewer than 100 is their maximum).
      const int samples =
          mode == Mode::kPaused
              ? absl::GetFlag(FLAGS_latency_samples)
              : std::max<int>(50, absl::GetFlag(FLAGS_running_latency_samples) /
                                      std::max<int>(1, count / 10));
      // Context for the others: half the samples.
      for (const Op& op : floors) {
        benchmark::RegisterBenchmark(
            (std::string(op.name) + "/" + suffix).c_str(), BM_Latency, env,
            op.call, count, mode)
            ->Iterations(std::max(50, samples / 2))
            ->UseRealTime();
      }
      for (const Op& op : ops) {
        benchmark::RegisterBenchmark(
            (std::string(op.name) + "/" + suffix).c_str(), BM_Latency, env,
            op.call, count, mode)
            ->Iterations(samples)
            ->UseRealTime();
      }
      // One call reads every VM: fewer calls, as each costs N reads.
      benchmark::RegisterBenchmark(("QueryPendingAllVms/" + suffix).c_str(),
                                   BM_Latency, env, QueryPendingAll, count,
                                   mode)
          ->Iterations(std::max<int>(3, samples / static_cast<int>(count)))
          ->UseRealTime();
      for (const Op& op : ops) {
        benchmark::RegisterBenchmark(
            (std::string(op.name) + "/" + suffix).c_str(), BM_Throughput, env,
            op.call, count, mode)
            ->Threads(threads)
            ->MinTime(seconds)
            ->UseRealTime();
      }
    }
  }
}

int Main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  absl::ParseCommandLine(argc, argv);
  absl::StatusOr<std::vector<size_t>> counts =
      ParseCounts(absl::GetFlag(FLAGS_vms));
  absl::StatusOr<std::vector<Mode>> modes =
      ParseModes(absl::GetFlag(FLAGS_modes));
  for (const absl::Status& s : {counts.status(), modes.status()}) {
    if (!s.ok()) {
      std::fprintf(stderr, "control_plane_bench: %s\n",
                   std::string(s.message()).c_str());
      return 2;
    }
  }
  client::ConnectOptions options;
  options.target = absl::GetFlag(FLAGS_target);
  options.token = absl::GetFlag(FLAGS_token);
  options.use_environment = false;
  absl::StatusOr<VexClient> client = VexClient::Connect(options);
  if (client.ok()) {
    // Connect does not wait for the server: one call proves it is there.
    absl::StatusOr<v1::HostCapabilities> host = client->GetHostCapabilities({});
    if (!host.ok()) client = host.status();
  }
  if (!client.ok()) {
    std::fprintf(stderr, "control_plane_bench: vexd at %s: %s\n",
                 options.target.c_str(),
                 std::string(client.status().message()).c_str());
    return 1;
  }
  Fleet fleet(*client, absl::GetFlag(FLAGS_memory_mib) << 20,
              absl::GetFlag(FLAGS_pids_out));
  const Env env{&*client, &fleet};
  Register(env, *counts, *modes);
  benchmark::AddCustomContext("memory_mib",
                              std::to_string(absl::GetFlag(FLAGS_memory_mib)));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  if (absl::Status s = fleet.StopAll(); !s.ok()) {
    std::fprintf(stderr, "control_plane_bench: cleaning up: %s\n",
                 std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace vexstate::bench

int main(int argc, char** argv) { return vexstate::bench::Main(argc, argv); }
