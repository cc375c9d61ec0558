// ./vexstate demo: the mission in one screen, on the bundled witness guest and real KVM.
//
//   1. boot the witness guest (2 vCPUs) and wait until it reports READY;
//   2. pause it and make an uncorrected machine check pending on vCPU 0 (bank 3, with
//      ADDR/MISC) — the guest has not taken it;
//   3. capture the whole VM to vexstate.v1.Snapshot bytes and destroy the VM;
//   4. build a brand-new VM from those bytes alone and resume it;
//   5. the guest reports the #MC exactly once, with the bank values; a control restore
//      without the exception state shows what every VMM that drops this state does.
// (When live migration lands, step 3-4 become a move between two vexd hosts.)
#include <cstdio>
#include <string>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "tests/testing/witness_vm.h"
#include "vmm/arch/x86_64/mce_decode.h"

namespace vexstate {
namespace {

constexpr uint64_t kStatus = 0xbc0000000000009full;  // VAL|UC|EN|MISCV|ADDRV, MCA 0x009f
constexpr uint64_t kAddr = 0x12345000;
constexpr uint64_t kMisc = 0x86;
constexpr uint64_t kMcgStatus = 0x5;  // RIPV|MCIP

void Step(const std::string& text) { std::printf("\n\033[1m==> %s\033[0m\n", text.c_str()); }

int Fail(const absl::Status& status) {
  std::fprintf(stderr, "demo failed: %s\n", status.ToString().c_str());
  return 1;
}

// Prints what the guest reported, and returns how many #MC it took.
size_t ShowGuestReports(const WitnessConsole& console) {
  size_t mc = 0;
  for (const WitnessReport& r : console.Reports()) {
    if (r.kind == "EXC" || r.kind == "MCE" || r.kind == "MCB") std::printf("   guest: %s\n", r.line.c_str());
    if (r.kind == "EXC" && r.Get("vec") == 18) ++mc;
  }
  return mc;
}

int Run() {
  Step("Boot the witness guest (2 vCPUs, 16 MiB) on /dev/kvm");
  testing::WitnessOptions options;
  options.name = "demo";
  options.vcpus = 2;
  auto source = testing::WitnessVm::Boot(options);
  if (!source.ok()) return Fail(source.status());
  for (const WitnessReport& r : (*source)->console().Find("READY")) std::printf("   guest: %s\n", r.line.c_str());

  Step("Pause, then make an uncorrected machine check pending on vCPU 0 (bank 3)");
  if (absl::Status s = (*source)->vm().Pause(); !s.ok()) return Fail(s);
  MachineCheckRequest mc{0, 3, kStatus, kAddr, kMisc, kMcgStatus};
  if (absl::Status s = (*source)->vm().InjectMachineCheck(mc); !s.ok()) return Fail(s);
  auto pending = (*source)->vm().CaptureExceptionState();
  if (!pending.ok()) return Fail(pending.status());
  const auto& x86 = (*pending)[0].x86_64();
  std::printf("   vCPU 0: exception %u pending=%d injected=%d; MCG_STATUS %s\n", x86.exception().vector(),
              x86.exception().pending(), x86.exception().injected(),
              x86::DescribeMcgStatus(x86.machine_check().mcg_status()).c_str());
  for (const auto& bank : x86.machine_check().banks()) {
    if (bank.status() != 0) {
      std::printf("   bank %u: %s addr=0x%llx misc=0x%llx\n", bank.index(), x86::DescribeMcStatus(bank.status()).c_str(),
                  static_cast<unsigned long long>(bank.addr()), static_cast<unsigned long long>(bank.misc()));
    }
  }
  std::printf("   the guest has not taken it: %zu exception reports so far\n", (*source)->console().Find("EXC").size());

  Step("Capture the whole VM to bytes and destroy it");
  auto snapshot = (*source)->vm().Capture();
  if (!snapshot.ok()) return Fail(snapshot.status());
  std::string bytes;
  snapshot->SerializeToString(&bytes);
  std::printf("   vexstate.v1.Snapshot: %zu bytes (%d vCPUs, %d memory chunks, zero pages elided)\n", bytes.size(),
              snapshot->vcpus_size(), snapshot->memory_size());
  source->reset();

  Step("Build a new VM from the bytes alone and resume it");
  v1::Snapshot parsed;
  if (!parsed.ParseFromString(bytes)) return Fail(absl::DataLossError("snapshot bytes do not parse"));
  auto dest = testing::WitnessVm::Restore(parsed);
  if (!dest.ok()) return Fail(dest.status());
  if (absl::Status s = (*dest)->vm().Resume(); !s.ok()) return Fail(s);
  auto taken = (*dest)->console().WaitFor("EXC", 0, {{"vec", 18}}, 1, absl::Seconds(10));
  if (!taken.ok()) return Fail(taken.status());
  absl::SleepFor(absl::Milliseconds(300));  // anything more would be a duplicate
  size_t delivered = ShowGuestReports((*dest)->console());

  Step("Control: the same bytes restored WITHOUT the exception state (what other VMMs do)");
  RestorePolicy drop;
  drop.skip_exception_state = true;
  auto control = testing::WitnessVm::Restore(parsed, drop);
  if (!control.ok()) return Fail(control.status());
  if (absl::Status s = (*control)->vm().Resume(); !s.ok()) return Fail(s);
  absl::SleepFor(absl::Seconds(1));
  size_t lost = ShowGuestReports((*control)->console());
  std::printf("   guest took %zu machine checks: the error is silently lost\n", lost);

  std::printf("\n%s: the restored guest took the machine check %zu time(s) (expected exactly 1)\n",
              delivered == 1 && lost == 0 ? "\033[32mOK\033[0m" : "\033[31mFAILED\033[0m", delivered);
  return delivered == 1 && lost == 0 ? 0 : 1;
}

}  // namespace
}  // namespace vexstate

int main() { return vexstate::Run(); }
