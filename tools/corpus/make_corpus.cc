// make_corpus: writes the snapshot replay corpus (tests/data/snapshots/, see its README.md).
//
// Each case boots the bundled witness guest on /dev/kvm, pauses it, leaves an exception
// pending that the guest has not yet taken, captures the VM, and writes
//   <case>.vexsnap   the snapshot file (server/snapshot_file.h)
//   <case>.expect    what the guest must report once restored and resumed, and the control
//                    writes the replay makes first (tests/replay/expectation.h)
// The expectations are the values injected, not values observed: the generator never looks at
// what a restored guest says, so a corpus file cannot bless a bug.
//
//   bazel run //tools/corpus:make_corpus                  writes the missing files only
//   bazel run //tools/corpus:make_corpus -- --regenerate  replaces existing ones (deliberately!)
//   bazel run //tools/corpus:make_corpus -- --cases=x86_pf_payload --suffix=_v2
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <string>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "server/snapshot_file.h"
#include "tests/replay/expectation.h"
#include "tests/testing/witness_vm.h"

ABSL_FLAG(std::string, out_dir, "",
          "directory to write into (default: tests/data/snapshots of the workspace `bazel run` was started in)");
ABSL_FLAG(std::string, cases, "", "comma-separated case names (default: every case of this arch)");
ABSL_FLAG(bool, regenerate, false,
          "replace files that already exist; without it they are kept and the case is skipped. Corpus files "
          "are regenerated only deliberately: old ones are kept forever when the format changes");
ABSL_FLAG(std::string, suffix, "", "appended to each case name in the file names (e.g. _v2 for a new format)");

namespace vexstate {
namespace {

using replay::Expectation;
using replay::ExpectedReport;
using testing::WitnessOptions;
using testing::WitnessVm;

// The uncorrected error used by the machine-check cases: VAL|UC|EN|MISCV|ADDRV, MCA code
// 0x9f (generic cache hierarchy, data read); MCG_STATUS = RIPV|MCIP.
constexpr uint64_t kMcStatus = 0xbc0000000000009full;
constexpr uint64_t kMcAddr = 0x12345000;
constexpr uint64_t kMcMisc = 0x86;
constexpr uint64_t kMcgStatus = 0x5;
// QEMU's default bank count: a corpus file then restores on any host with at least 10 banks.
constexpr uint32_t kMceBanks = 10;
constexpr uint32_t kVectorNmi = 2;
constexpr uint32_t kVectorPf = 14;
constexpr uint32_t kVectorMc = 18;
constexpr uint32_t kPfWriteNotPresent = 0x2;
constexpr absl::Duration kHoldTimeout = absl::Seconds(10);

struct Case {
  const char* name;
  const char* description;
  uint32_t vcpus;
  uint64_t hold_mask;  // the control block's at boot
  // Runs on the booted, paused guest: leaves it paused with the exception pending, and fills
  // in the reports (and control writes) a replay must see.
  std::function<absl::Status(WitnessVm&, Expectation&)> prepare;
};

ExpectedReport Expect(uint32_t vcpu, const std::string& kind, std::vector<std::pair<std::string, uint64_t>> fields) {
  ExpectedReport report;
  report.vcpu = vcpu;
  report.kind = kind;
  report.fields = std::move(fields);
  return report;
}

absl::Status InjectMachineCheck(WitnessVm& w, uint32_t vcpu, uint32_t bank, Expectation& e) {
  MachineCheckRequest mc;
  mc.vcpu = vcpu;
  mc.bank = bank;
  mc.status = kMcStatus;
  mc.addr = kMcAddr;
  mc.misc = kMcMisc;
  mc.mcg_status = kMcgStatus;
  if (absl::Status s = w.vm().InjectMachineCheck(mc); !s.ok()) return s;
  e.reports.push_back(Expect(vcpu, "EXC", {{"seq", 1}, {"vec", kVectorMc}}));
  e.reports.push_back(Expect(vcpu, "MCE", {{"seq", 1}, {"mcg_status", kMcgStatus}, {"banks", 1}}));
  e.reports.push_back(
      Expect(vcpu, "MCB", {{"seq", 1}, {"bank", bank}, {"status", kMcStatus}, {"addr", kMcAddr}, {"misc", kMcMisc}}));
  return absl::OkStatus();
}

absl::Status InjectPageFault(WitnessVm& w, uint32_t vcpu, uint64_t cr2, Expectation& e) {
  ExceptionRequest pf;
  pf.vcpu = vcpu;
  pf.vector = kVectorPf;
  pf.error_code = kPfWriteNotPresent;
  pf.payload = cr2;  // deferred to delivery (KVM_CAP_EXCEPTION_PAYLOAD): CR2 is written then
  if (absl::Status s = w.vm().InjectException(pf); !s.ok()) return s;
  e.reports.push_back(Expect(vcpu, "EXC", {{"seq", 1}, {"vec", kVectorPf}, {"err", kPfWriteNotPresent}, {"cr2", cr2}}));
  return absl::OkStatus();
}

// The state to capture must really be pending (not yet taken by the guest), or the file
// would test nothing.
absl::Status CheckPending(WitnessVm& w, uint32_t vcpu, uint32_t vector) {
  absl::StatusOr<std::vector<v1::VcpuExceptionState>> state = w.vm().CaptureExceptionState();
  if (!state.ok()) return state.status();
  const auto& x86 = (*state)[vcpu].x86_64();
  const bool pending =
      vector == kVectorNmi ? x86.nmi().pending() : x86.exception().pending() && x86.exception().vector() == vector;
  if (!pending) {
    return absl::InternalError(
        absl::StrFormat("vCPU %u: vector %u is not pending before the capture: %s", vcpu, vector, x86.DebugString()));
  }
  return absl::OkStatus();
}

std::vector<Case> X86Cases() {
  return {
      {"x86_mce_bank3", "an uncorrected #MC (bank 3, ADDR and MISC valid) pending on vCPU 0", 1, 0,
       [](WitnessVm& w, Expectation& e) {
         if (absl::Status s = InjectMachineCheck(w, 0, 3, e); !s.ok()) return s;
         return CheckPending(w, 0, kVectorMc);
       }},
      {"x86_pf_payload", "a #PF pending on vCPU 0 with its payload (CR2 0xdead000) deferred, error code 0x2", 1, 0,
       [](WitnessVm& w, Expectation& e) {
         if (absl::Status s = InjectPageFault(w, 0, 0xdead000, e); !s.ok()) return s;
         if (absl::Status s = CheckPending(w, 0, kVectorPf); !s.ok()) return s;
         // Deferred: CR2 is written at delivery, so the captured registers must not show it yet.
         absl::StatusOr<v1::Snapshot> state = w.vm().Capture(/*with_memory=*/false);
         if (!state.ok()) return state.status();
         const auto& pf = state->vcpus(0).exception().x86_64().exception();
         if (!pf.has_payload() || pf.payload() != 0xdead000 || state->vcpus(0).x86_64().cr2() == 0xdead000) {
           return absl::InternalError("the #PF payload is not deferred (is KVM_CAP_EXCEPTION_PAYLOAD enabled?)");
         }
         return absl::OkStatus();
       }},
      {"x86_nmi_masked",
       "vCPU 0 holds inside its first NMI handler (NMIs blocked until IRETQ) while a second NMI is pending; "
       "the replay releases the hold, then the guest takes the second NMI once (seq=2)",
       1, 1u << kVectorNmi,
       [](WitnessVm& w, Expectation& e) {
         if (absl::Status s = w.vm().InjectNmi({0}); !s.ok()) return s;
         if (absl::Status s = w.vm().Resume(); !s.ok()) return s;
         absl::StatusOr<std::vector<WitnessReport>> hold =
             w.console().WaitFor("HOLD", 0, {{"vec", kVectorNmi}}, 1, kHoldTimeout);
         if (!hold.ok()) return hold.status();
         if (absl::Status s = w.vm().Pause(); !s.ok()) return s;
         if (absl::Status s = w.vm().InjectNmi({0}); !s.ok()) return s;
         absl::StatusOr<std::vector<v1::VcpuExceptionState>> state = w.vm().CaptureExceptionState();
         if (!state.ok()) return state.status();
         if (!(*state)[0].x86_64().nmi().masked()) return absl::InternalError("NMIs are not masked in the handler");
         absl::StatusOr<replay::ControlWrite> release = replay::MakeControlWrite("hold_mask", 0);
         if (!release.ok()) return release.status();
         e.controls.push_back(*release);
         e.reports.push_back(Expect(0, "EXC", {{"seq", 2}, {"vec", kVectorNmi}}));
         return CheckPending(w, 0, kVectorNmi);
       }},
      {"x86_two_vcpus", "vCPU 0: a #PF pending (CR2 0xa000); vCPU 1: an uncorrected #MC pending in bank 5", 2, 0,
       [](WitnessVm& w, Expectation& e) {
         if (absl::Status s = InjectPageFault(w, 0, 0xa000, e); !s.ok()) return s;
         if (absl::Status s = InjectMachineCheck(w, 1, 5, e); !s.ok()) return s;
         if (absl::Status s = CheckPending(w, 0, kVectorPf); !s.ok()) return s;
         return CheckPending(w, 1, kVectorMc);
       }},
  };
}

bool Exists(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0;
}

absl::Status WriteText(const std::string& path, const std::string& text) {
  const std::string tmp = absl::StrFormat("%s.tmp-%d", path, ::getpid());
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    out.flush();
    if (!out.good()) return absl::InternalError(absl::StrFormat("cannot write %s", tmp));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    return absl::ErrnoToStatus(errno, absl::StrFormat("rename %s to %s", tmp, path));
  }
  return absl::OkStatus();
}

absl::Status Generate(const Case& c, const std::string& out_dir, const std::string& suffix) {
  const std::string base = absl::StrFormat("%s/%s%s", out_dir, c.name, suffix);
  WitnessOptions options;
  options.name = c.name;
  options.vcpus = c.vcpus;
  options.memory_bytes = 16ull << 20;  // zero pages are elided, so the file holds only what the guest touched
  options.mce_banks = kMceBanks;
  options.hold_mask = c.hold_mask;
  absl::StatusOr<std::unique_ptr<WitnessVm>> w = WitnessVm::Boot(options);
  if (!w.ok()) return w.status();
  if (absl::Status s = (*w)->vm().Pause(); !s.ok()) return s;

  Expectation expectation;
  expectation.comments = {
      absl::StrFormat("%s%s: %s.", c.name, suffix, c.description),
      "Written by //tools/corpus:make_corpus with the snapshot; replayed by //tests/replay:replay_corpus_test.",
      "Format: tests/data/snapshots/README.md. Do not edit to make a failing replay pass.",
  };
  if (absl::Status s = c.prepare(**w, expectation); !s.ok()) return s;
  absl::StatusOr<v1::Snapshot> snapshot = (*w)->vm().Capture();
  if (!snapshot.ok()) return snapshot.status();
  w->reset();  // the source never runs again

  absl::StatusOr<SnapshotFileInfo> info = WriteSnapshotFile(*snapshot, base + ".vexsnap");
  if (!info.ok()) return info.status();
  // Read back through the same code the replay uses.
  if (absl::StatusOr<v1::Snapshot> check = ReadSnapshotFile(base + ".vexsnap"); !check.ok()) return check.status();
  if (absl::Status s = WriteText(base + ".expect", replay::FormatExpectation(expectation)); !s.ok()) return s;
  std::printf("%-24s %8llu bytes  %3llu chunks  %8llu memory bytes  sha256 %s\n",
              (std::string(c.name) + suffix).c_str(), static_cast<unsigned long long>(info->file_bytes),
              static_cast<unsigned long long>(info->memory_chunks),
              static_cast<unsigned long long>(info->memory_bytes_stored), info->sha256_hex.c_str());
  return absl::OkStatus();
}

int Run() {
  std::string out_dir = absl::GetFlag(FLAGS_out_dir);
  if (out_dir.empty()) {
    const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
    if (workspace == nullptr) {
      std::fprintf(stderr, "make_corpus: give --out_dir (or run it with `bazel run`)\n");
      return 2;
    }
    out_dir = std::string(workspace) + "/tests/data/snapshots";
  }
  const std::string suffix = absl::GetFlag(FLAGS_suffix);
  std::vector<std::string> wanted = absl::StrSplit(absl::GetFlag(FLAGS_cases), ',', absl::SkipEmpty());
  std::vector<Case> cases;
#if defined(__x86_64__)
  cases = X86Cases();
#endif
  int failures = 0;
  for (const std::string& name : wanted) {
    bool known = false;
    for (const Case& c : cases) known |= name == c.name;
    if (!known) {
      std::fprintf(stderr, "make_corpus: no case \"%s\" for this arch\n", name.c_str());
      ++failures;
    }
  }
  for (const Case& c : cases) {
    if (!wanted.empty() && std::find(wanted.begin(), wanted.end(), c.name) == wanted.end()) continue;
    const std::string base = absl::StrFormat("%s/%s%s", out_dir, c.name, suffix);
    if (!absl::GetFlag(FLAGS_regenerate) && (Exists(base + ".vexsnap") || Exists(base + ".expect"))) {
      std::printf("%-24s kept (exists; --regenerate replaces it)\n", (std::string(c.name) + suffix).c_str());
      continue;
    }
    if (absl::Status s = Generate(c, out_dir, suffix); !s.ok()) {
      std::fprintf(stderr, "make_corpus: %s: %s\n", c.name, s.ToString().c_str());
      ++failures;
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace vexstate

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  return vexstate::Run();
}
