// Exception-state capture and restore of one x86_64 vCPU, against the raw cost
// of the same KVM calls, measured in the same binary (SPEC §8, issue 6).
//
// "The same KVM calls" (vcpu_state.h):
//   capture = KVM_GET_VCPU_EVENTS + one KVM_GET_MSRS of the machine-check MSRs
//             (MCG_CAP, MCG_STATUS, MCG_CTL, 4 per bank);
//   restore = one KVM_SET_MSRS of them (all but MCG_CAP) + KVM_SET_VCPU_EVENTS.
// The raw baseline issues exactly these four ioctls with buffers filled once
// at set-up; its SET buffers hold what vexstate's restore passes to KVM (the
// codec's decode of the captured state), and a restore by either path leaves
// the state exactly as captured (checked at set-up). vexstate's path is the
// one Vm uses per vCPU
// (ArchVm::CaptureExceptionState / RestoreExceptionState) plus serialization
// of the VcpuExceptionState proto to bytes and parsing it back.
//
// The vCPU is set up as vexd's worker sets one up (CreateArchVm: irqchip,
// KVM_CAP_EXCEPTION_PAYLOAD, CPUID, every MCE bank) and holds a pending #MC in
// bank 3 (injected through vexstate), the state this project exists to move.
// Each restore writes back the state just captured, so it never changes.
//
// Benchmarks (all real time; per-iteration latency counters from latency.h):
//   Capture/{raw,vexstate}, Restore/{raw,vexstate},
//   CaptureRestore/{raw,vexstate}   one path per benchmark;
//   CaptureRestorePaired            both paths alternating in one loop, so
//                                   load changes on this shared machine hit
//                                   both alike: the ratio reported;
//   Codec/{capture,restore}         the user-space work alone (no ioctl):
//                                   encode+serialize, parse+decode.
//
// --profile=raw|vexstate runs --profile_cycles capture+restore cycles of one
// path in RunCycles and exits, without Google Benchmark: for
//   valgrind --tool=callgrind --toggle-collect='*RunCycles*'
// whose instruction count per cycle is repeatable where times are not
// (ioctls count as one instruction: what remains is user-space work).
//
// Needs /dev/kvm. Run by bench/run.py; by hand:
//   bazel run -c opt //bench:exception_state_bench -- --benchmark_filter=Paired
#include <sys/ioctl.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_format.h"
#include "absl/types/span.h"
#include "bench/latency.h"
#include "benchmark/benchmark.h"
#include "vexstate/v1/exception_state.pb.h"
#include "vmm/arch/arch_vm.h"
#include "vmm/arch/x86_64/state_codec.h"
#include "vmm/arch/x86_64/vcpu_state.h"
#include "vmm/kvm/linux_kvm.h"
#include "vmm/kvm/system.h"

ABSL_FLAG(std::string, profile, "",
          "raw or vexstate: run --profile_cycles cycles of that path and exit");
ABSL_FLAG(int, profile_cycles, 1000, "capture+restore cycles for --profile");

namespace vexstate::bench {
namespace {

// CR4.MCE (Intel SDM Vol 3A 2.5): KVM turns an uncorrected #MC into a shutdown
// without it.
constexpr uint64_t kCr4Mce = 1ull << 6;
// The pending #MC: MCi_STATUS VAL|UC|EN|MISCV|ADDRV, MCA code 0x9f, in bank 3,
// MCG_STATUS RIPV|MCIP (as the witness tests inject it).
constexpr uint32_t kBank = 3;
constexpr uint64_t kUncorrected = 0xbc0000000000009full;
constexpr uint64_t kMcgStatusRipvMcip = 0x5;

[[noreturn]] void Die(const absl::Status& status, const char* what) {
  std::fprintf(stderr, "exception_state_bench: %s: %s\n", what,
               std::string(status.message()).c_str());
  std::exit(1);
}

template <typename T>
T ValueOrDie(absl::StatusOr<T> value, const char* what) {
  if (!value.ok()) Die(value.status(), what);
  return std::move(*value);
}

void CheckOk(const absl::Status& status, const char* what) {
  if (!status.ok()) Die(status, what);
}

// A kvm_msrs buffer (header + entries) for KVM_GET_MSRS/KVM_SET_MSRS.
class MsrBuffer {
 public:
  MsrBuffer() = default;
  MsrBuffer(absl::Span<const uint32_t> indices,
            absl::Span<const uint64_t> values)
      : bytes_(sizeof(kvm_msrs) + indices.size() * sizeof(kvm_msr_entry)) {
    msrs()->nmsrs = static_cast<uint32_t>(indices.size());
    for (size_t i = 0; i < indices.size(); ++i) {
      msrs()->entries[i].index = indices[i];
      if (i < values.size()) msrs()->entries[i].data = values[i];
    }
  }
  kvm_msrs* msrs() { return reinterpret_cast<kvm_msrs*>(bytes_.data()); }
  int count() const {
    return static_cast<int>(
        reinterpret_cast<const kvm_msrs*>(bytes_.data())->nmsrs);
  }

 private:
  std::vector<uint8_t> bytes_;
};

// One vCPU as vexd's worker sets it up, plus the raw baseline's buffers.
// Members are declared in dependency order: arch refers to kvm, vcpu to vm.
struct Fixture {
  kvm::KvmSystem kvm;
  v1::HostCapabilities host;
  std::unique_ptr<ArchVm> arch;
  std::optional<kvm::VmFd> vm;
  std::optional<kvm::VcpuFd> vcpu;
  x86::VcpuStateContext context;
  RestorePolicy policy;
  // Raw baseline: KVM_GET_MSRS with the indices filled in; KVM_SET_MSRS and
  // KVM_SET_VCPU_EVENTS exactly as vexstate's restore issues them.
  MsrBuffer get_msrs;
  MsrBuffer set_msrs;
  kvm_vcpu_events set_events{};
  // The captured state, serialized (what Restore/vexstate parses).
  std::string bytes;
  // The KVM-side state for the codec-only benchmarks.
  x86::KvmExceptionState kvm_state;
  x86::ExceptionTarget target;

  explicit Fixture(kvm::KvmSystem k) : kvm(std::move(k)) {}
};

// ---------- the two paths

void RawCapture(Fixture& f) {
  kvm_vcpu_events events;
  if (ioctl(f.vcpu->fd(), KVM_GET_VCPU_EVENTS, &events) != 0) {
    Die(absl::ErrnoToStatus(errno, "KVM_GET_VCPU_EVENTS"), "raw capture");
  }
  if (ioctl(f.vcpu->fd(), KVM_GET_MSRS, f.get_msrs.msrs()) !=
      f.get_msrs.count()) {
    Die(absl::ErrnoToStatus(errno, "KVM_GET_MSRS"), "raw capture");
  }
  benchmark::DoNotOptimize(events);
  benchmark::DoNotOptimize(f.get_msrs.msrs()->entries[0].data);
}

void RawRestore(Fixture& f) {
  if (ioctl(f.vcpu->fd(), KVM_SET_MSRS, f.set_msrs.msrs()) !=
      f.set_msrs.count()) {
    Die(absl::ErrnoToStatus(errno, "KVM_SET_MSRS"), "raw restore");
  }
  if (ioctl(f.vcpu->fd(), KVM_SET_VCPU_EVENTS, &f.set_events) != 0) {
    Die(absl::ErrnoToStatus(errno, "KVM_SET_VCPU_EVENTS"), "raw restore");
  }
}

// vCPU -> VcpuExceptionState -> bytes.
std::string VexstateCapture(Fixture& f) {
  absl::StatusOr<v1::VcpuExceptionState> state =
      f.arch->CaptureExceptionState(*f.vcpu);
  if (!state.ok()) Die(state.status(), "vexstate capture");
  std::string bytes;
  state->SerializeToString(&bytes);
  return bytes;
}

// bytes -> VcpuExceptionState -> vCPU.
void VexstateRestore(Fixture& f, const std::string& bytes) {
  v1::VcpuExceptionState state;
  if (!state.ParseFromString(bytes)) {
    Die(absl::DataLossError("unparsable VcpuExceptionState"),
        "vexstate restore");
  }
  CheckOk(f.arch->RestoreExceptionState(*f.vcpu, state, f.policy),
          "vexstate restore");
}

// ---------- set-up

// Every iteration must do the same work: a restore by either path writes back
// exactly the captured state, byte for byte as vexstate captures it, and that
// state holds the pending #MC.
absl::Status CheckFixture(Fixture& f) {
  v1::VcpuExceptionState state;
  if (!state.ParseFromString(f.bytes)) {
    return absl::InternalError("the captured state does not parse");
  }
  const v1::X86Exception& ex = state.x86_64().exception();
  if (!ex.pending() || ex.vector() != 18) {
    return absl::InternalError("the vCPU has no pending #MC");
  }
  VexstateRestore(f, f.bytes);
  if (VexstateCapture(f) != f.bytes) {
    return absl::InternalError("vexstate's restore changed the state");
  }
  RawRestore(f);
  if (VexstateCapture(f) != f.bytes) {
    return absl::InternalError(
        "the raw restore does not write what vexstate's restore writes");
  }
  return absl::OkStatus();
}

std::unique_ptr<Fixture> MakeFixture() {
  auto f = std::make_unique<Fixture>(
      ValueOrDie(kvm::KvmSystem::Open(), "opening /dev/kvm"));
  f->host = ValueOrDie(ProbeHost(f->kvm), "probing the host");
  v1::VmConfig config;
  config.set_name("bench");
  config.set_arch(v1::ARCH_X86_64);
  config.set_vcpu_count(1);
  f->arch = CreateArchVm(f->kvm, f->host, config);
  f->vm.emplace(
      ValueOrDie(f->kvm.CreateVm(f->arch->vm_type()), "KVM_CREATE_VM"));
  CheckOk(f->arch->SetUpVm(*f->vm), "setting up the VM");
  f->vcpu.emplace(ValueOrDie(f->vm->CreateVcpu(0), "KVM_CREATE_VCPU"));
  CheckOk(f->arch->SetUpVcpu(*f->vm, *f->vcpu), "setting up the vCPU");
  kvm::VcpuFd* vcpus[] = {&*f->vcpu};
  CheckOk(f->arch->FinishSetUp(*f->vm, vcpus), "probing the vCPU");
  f->context = ValueOrDie(
      x86::ProbeVcpuStateContext(f->kvm, *f->vm, *f->vcpu, f->host.mce_banks()),
      "probing the vCPU state context");
  f->target.mcg_cap = f->context.mcg_cap;
  f->target.smm_supported = f->context.smm_supported;

  // A pending #MC, injected the way vexd injects one.
  kvm_sregs sregs;
  CheckOk(f->vcpu->GetSregs(&sregs), "KVM_GET_SREGS");
  sregs.cr4 |= kCr4Mce;
  CheckOk(f->vcpu->SetSregs(sregs), "KVM_SET_SREGS");
  MachineCheckRequest mc;
  mc.bank = kBank;
  mc.status = kUncorrected;
  mc.addr = 0x12345000;
  mc.misc = 0x86;
  mc.mcg_status = kMcgStatusRipvMcip;
  CheckOk(f->arch->InjectMachineCheck(*f->vcpu, mc), "injecting a #MC");

  f->bytes = VexstateCapture(*f);

  // Raw buffers: GET with the indices capture reads; SET with what restore
  // writes (from the codec's decode of the captured state).
  std::vector<uint32_t> indices =
      x86::MachineCheckMsrIndices(f->context.mcg_cap);
  f->get_msrs = MsrBuffer(indices, {});
  v1::VcpuExceptionState state;
  state.ParseFromString(f->bytes);
  x86::KvmExceptionState decoded =
      ValueOrDie(x86::DecodeExceptionState(state.x86_64(), f->target),
                 "decoding the captured state");
  f->set_msrs = MsrBuffer(decoded.mce_indices, decoded.mce_values);
  f->set_events = decoded.events;

  // The KVM-side state as capture reads it, for the codec benchmarks.
  RawCapture(*f);
  CheckOk(f->vcpu->GetVcpuEvents(&f->kvm_state.events), "KVM_GET_VCPU_EVENTS");
  f->kvm_state.mce_indices.assign(indices.begin(), indices.end());
  for (size_t i = 0; i < indices.size(); ++i) {
    f->kvm_state.mce_values.push_back(f->get_msrs.msrs()->entries[i].data);
  }
  CheckOk(CheckFixture(*f), "checking the fixture");
  return f;
}

Fixture& F() {
  static Fixture* fixture = MakeFixture().release();
  return *fixture;
}

// ---------- benchmarks

enum class Path { kRaw, kVexstate };

const char* Name(Path path) { return path == Path::kRaw ? "raw" : "vexstate"; }

void SetLabel(benchmark::State& state, Path path) {
  state.SetLabel(Name(path));
}

void BM_Capture(benchmark::State& state, Path path) {
  Fixture& f = F();
  LatencyRecorder latency;
  for (auto _ : state) {
    const int64_t t0 = NowNs();
    if (path == Path::kRaw) {
      RawCapture(f);
    } else {
      benchmark::DoNotOptimize(VexstateCapture(f));
    }
    latency.Add(NowNs() - t0);
  }
  latency.Report(state);
  SetLabel(state, path);
}

void BM_Restore(benchmark::State& state, Path path) {
  Fixture& f = F();
  LatencyRecorder latency;
  for (auto _ : state) {
    const int64_t t0 = NowNs();
    if (path == Path::kRaw) {
      RawRestore(f);
    } else {
      VexstateRestore(f, f.bytes);
    }
    latency.Add(NowNs() - t0);
  }
  latency.Report(state);
  SetLabel(state, path);
}

// One capture+restore cycle of `path`.
void Cycle(Fixture& f, Path path) {
  if (path == Path::kRaw) {
    RawCapture(f);
    RawRestore(f);
  } else {
    VexstateRestore(f, VexstateCapture(f));
  }
}

// Kept out of line so that callgrind can collect exactly this function.
__attribute__((noinline)) void RunCycles(Fixture& f, Path path, int cycles) {
  for (int i = 0; i < cycles; ++i) Cycle(f, path);
}

void BM_CaptureRestore(benchmark::State& state, Path path) {
  Fixture& f = F();
  LatencyRecorder latency;
  for (auto _ : state) {
    const int64_t t0 = NowNs();
    Cycle(f, path);
    latency.Add(NowNs() - t0);
  }
  latency.Report(state);
  SetLabel(state, path);
}

// Both paths in one loop, in alternating order (neither always runs first, on
// warm caches). ratio_p50 = vexstate p50 / raw p50 is the number issue 6
// asks for; ratio_min compares the least-disturbed cycles.
void BM_CaptureRestorePaired(benchmark::State& state) {
  Fixture& f = F();
  LatencyRecorder raw, vex;
  bool raw_first = true;
  for (auto _ : state) {
    const Path order[2] = {raw_first ? Path::kRaw : Path::kVexstate,
                           raw_first ? Path::kVexstate : Path::kRaw};
    for (Path path : order) {
      const int64_t t0 = NowNs();
      Cycle(f, path);
      (path == Path::kRaw ? raw : vex).Add(NowNs() - t0);
    }
    raw_first = !raw_first;
  }
  raw.Report(state, "raw_");
  vex.Report(state, "vexstate_");
  state.counters["ratio_p50"] = vex.PercentileNs(50) / raw.PercentileNs(50);
  state.counters["ratio_min"] = vex.PercentileNs(0) / raw.PercentileNs(0);
  state.counters["ratio_p90"] = vex.PercentileNs(90) / raw.PercentileNs(90);
}

// The user-space work alone: KVM structs -> proto -> bytes.
void BM_CodecCapture(benchmark::State& state) {
  Fixture& f = F();
  LatencyRecorder latency;
  for (auto _ : state) {
    const int64_t t0 = NowNs();
    v1::VcpuExceptionState out;
    out.set_vcpu_index(0);
    *out.mutable_x86_64() = x86::EncodeExceptionState(f.kvm_state);
    std::string bytes;
    out.SerializeToString(&bytes);
    benchmark::DoNotOptimize(bytes);
    latency.Add(NowNs() - t0);
  }
  latency.Report(state);
}

// bytes -> proto -> validated KVM structs.
void BM_CodecRestore(benchmark::State& state) {
  Fixture& f = F();
  LatencyRecorder latency;
  for (auto _ : state) {
    const int64_t t0 = NowNs();
    v1::VcpuExceptionState in;
    in.ParseFromString(f.bytes);
    absl::StatusOr<x86::KvmExceptionState> decoded =
        x86::DecodeExceptionState(in.x86_64(), f.target);
    benchmark::DoNotOptimize(decoded);
    latency.Add(NowNs() - t0);
  }
  latency.Report(state);
}

void RegisterAll() {
  for (Path path : {Path::kRaw, Path::kVexstate}) {
    benchmark::RegisterBenchmark(
        absl::StrFormat("Capture/%s", Name(path)).c_str(), BM_Capture, path)
        ->UseRealTime();
    benchmark::RegisterBenchmark(
        absl::StrFormat("Restore/%s", Name(path)).c_str(), BM_Restore, path)
        ->UseRealTime();
    benchmark::RegisterBenchmark(
        absl::StrFormat("CaptureRestore/%s", Name(path)).c_str(),
        BM_CaptureRestore, path)
        ->UseRealTime();
  }
  benchmark::RegisterBenchmark("CaptureRestorePaired", BM_CaptureRestorePaired)
      ->UseRealTime();
  benchmark::RegisterBenchmark("Codec/capture", BM_CodecCapture)->UseRealTime();
  benchmark::RegisterBenchmark("Codec/restore", BM_CodecRestore)->UseRealTime();
}

int Main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  absl::ParseCommandLine(argc, argv);
  // Set up (and check) before the first timing, so a failure is reported
  // once, clearly, and set-up time is never measured.
  Fixture& f = F();
  if (const std::string profile = absl::GetFlag(FLAGS_profile);
      !profile.empty()) {
    if (profile != "raw" && profile != "vexstate") {
      std::fprintf(stderr, "--profile: raw or vexstate, not %s\n",
                   profile.c_str());
      return 2;
    }
    RunCycles(f, profile == "raw" ? Path::kRaw : Path::kVexstate,
              absl::GetFlag(FLAGS_profile_cycles));
    return 0;
  }
  RegisterAll();
  benchmark::AddCustomContext("mcg_cap",
                              absl::StrFormat("0x%x", f.context.mcg_cap));
  benchmark::AddCustomContext("state_bytes", std::to_string(f.bytes.size()));
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}

}  // namespace
}  // namespace vexstate::bench

int main(int argc, char** argv) { return vexstate::bench::Main(argc, argv); }
