// vexctl's human output (pending #MC, #PF with payload, NMI masked+pending,
// SError with its ESR decoded, VM tables, events) and its JSON output, which
// must parse back to the same proto.
#include <string>

#include "client/format_event.h"
#include "client/format_exception.h"
#include "client/format_fields.h"
#include "client/format_json.h"
#include "client/format_migration.h"
#include "client/format_snapshot.h"
#include "client/format_vm.h"
#include "client/table.h"
#include "gmock/gmock.h"
#include "google/protobuf/text_format.h"
#include "google/protobuf/util/message_differencer.h"
#include "gtest/gtest.h"
#include "vexstate/v1/control.pb.h"
#include "vexstate/v1/migration.pb.h"

namespace vexstate::client {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using ::testing::StartsWith;

template <typename T>
T Proto(const std::string& text) {
  T message;
  EXPECT_TRUE(google::protobuf::TextFormat::ParseFromString(text, &message))
      << text;
  return message;
}

// 2026-11-23T16:22:00.123Z
constexpr int64_t kTime = 1795450920123000000;

// vCPU 0: a #MC pending (MCG_STATUS RIPV|MCIP, bank 3 holding an uncorrected
// memory-controller read error); vCPU 1: a #PF pending with error code and CR2.
constexpr char kPendingMcAndPf[] = R"pb(
  vms {
    vm: "vm1"
    state: VM_PAUSED
    read_unix_ns: 1795450920123000000
    vcpus {
      vcpu_index: 0
      x86_64 {
        exception { pending: true vector: 18 }
        machine_check {
          mcg_cap: 0x100000a
          mcg_status: 0x5
          banks { index: 2 ctl: 0xffffffffffffffff }
          banks {
            index: 3
            ctl: 0xffffffffffffffff
            status: 0xbc0000000000009f
            addr: 0x12345000
            misc: 0x86
          }
        }
      }
    }
    vcpus {
      vcpu_index: 1
      x86_64 {
        exception {
          pending: true
          vector: 14
          has_error_code: true
          error_code: 2
          has_payload: true
          payload: 0xdead000
        }
      }
    }
  })pb";

constexpr char kNmiMaskedPending[] = R"pb(
  vcpu_index: 2
  x86_64 { nmi { pending: true masked: true } })pb";

constexpr char kSErrorWithEsr[] = R"pb(
  vcpu_index: 0
  arm64 { serror_pending: true serror_has_esr: true serror_esr: 0x1234 })pb";

TEST(FormatQueryPending, MachineCheckAndPageFault) {
  std::string out =
      FormatQueryPending(Proto<v1::QueryPendingResponse>(kPendingMcAndPf));
  EXPECT_THAT(out, StartsWith("vm1 (PAUSED, read 2026-11-23T16:22:00.123Z)\n"
                              "  vCPU 0: #MC machine check pending; "));
  EXPECT_THAT(out, HasSubstr("MCG_STATUS RIPV|MCIP"));
  EXPECT_THAT(out, HasSubstr("bank 3: VAL|UC|EN|MISCV|ADDRV mca=0x009f "
                             "(memory controller error MMM=RD "
                             "CCCC=unspecified) addr=0x12345000 misc=0x86"));
  EXPECT_THAT(out, Not(HasSubstr("bank 2")));
  EXPECT_THAT(out, HasSubstr("\n  vCPU 1: #PF pending, error code 0x2, CR2 "
                             "payload 0xdead000\n"));
}

TEST(FormatQueryPending, NoVms) {
  EXPECT_EQ(FormatQueryPending(v1::QueryPendingResponse()), "no VMs\n");
}

TEST(FormatVcpuExceptionState, MachineCheckFields) {
  v1::QueryPendingResponse pending =
      Proto<v1::QueryPendingResponse>(kPendingMcAndPf);
  std::string out = FormatVcpuExceptionState(pending.vms(0).vcpus(0));
  EXPECT_THAT(out,
              StartsWith("vCPU 0 (x86_64)\n  #MC machine check pending; "));
  EXPECT_THAT(out, HasSubstr("\n  exception     pending vector=18 (#MC "
                             "machine check)\n"));
  EXPECT_THAT(out, HasSubstr("\n  MCG_STATUS    0x5 (RIPV|MCIP)\n"));
  EXPECT_THAT(out, HasSubstr("\n  MCG_CAP       0x100000a (count=10 SER_P)\n"));
  EXPECT_THAT(out, HasSubstr("\n  bank 3        status=0xbc0000000000009f "
                             "(VAL|UC|EN|MISCV|ADDRV mca=0x009f"));
  EXPECT_THAT(out, HasSubstr("addr=0x12345000 misc=0x86 "
                             "ctl=0xffffffffffffffff\n"));
  EXPECT_THAT(out, HasSubstr("\n  other banks   1 with status, addr and misc "
                             "0\n"));
}

TEST(FormatVcpuExceptionState, PageFaultWithPayload) {
  v1::QueryPendingResponse pending =
      Proto<v1::QueryPendingResponse>(kPendingMcAndPf);
  std::string out = FormatVcpuExceptionState(pending.vms(0).vcpus(1));
  EXPECT_THAT(out, StartsWith("vCPU 1 (x86_64)\n"
                              "  #PF pending, error code 0x2, CR2 payload "
                              "0xdead000\n"));
  EXPECT_THAT(out, HasSubstr("\n  exception     pending vector=14 (#PF page "
                             "fault) error_code=0x2 payload=0xdead000\n"));
}

TEST(FormatVcpuExceptionState, NmiMaskedAndPending) {
  std::string out = FormatVcpuExceptionState(
      Proto<v1::VcpuExceptionState>(kNmiMaskedPending));
  EXPECT_THAT(out, StartsWith("vCPU 2 (x86_64)\n"
                              "  NMI pending (NMIs masked: guest in its NMI "
                              "handler)\n"));
  EXPECT_THAT(out, HasSubstr("\n  nmi           pending=1 injected=0 "
                             "masked=1\n"));
  EXPECT_THAT(out, HasSubstr("\n  exception     none\n"));
}

TEST(FormatVcpuExceptionState, SErrorEsrDecoded) {
  std::string out =
      FormatVcpuExceptionState(Proto<v1::VcpuExceptionState>(kSErrorWithEsr));
  const std::string decoded =
      "ESR 0xbe001234: EC=0x2f (SError interrupt) IL=1 ISS=0x001234 IDS=0 "
      "IESB=0 AET=0b100 EA=1 DFSC=0x34 (reserved)";
  EXPECT_THAT(out, StartsWith("vCPU 0 (arm64)\n  SError pending, " + decoded));
  EXPECT_THAT(out, HasSubstr("\n  serror_pending    1\n"));
  EXPECT_THAT(out, HasSubstr("\n  serror_esr        0x1234 (guest's ESR_EL1 "
                             "0xbe001234: EC=0x2f (SError interrupt)"));
  EXPECT_THAT(out, HasSubstr("\n  DISR_EL1          0x0 (A=0 (no SError "
                             "deferred))\n"));
}

TEST(FormatVcpuExceptionState, RecoverableSErrorAndDeferredDisr) {
  // AET is named when DFSC is 0x11 (asynchronous SError).
  std::string out = FormatVcpuExceptionState(Proto<v1::VcpuExceptionState>(
      R"pb(arm64 {
             serror_pending: true
             serror_has_esr: true
             serror_esr: 0xc11
             disr_el1: 0x80000c11
           })pb"));
  EXPECT_THAT(out, HasSubstr("AET=0b011 (UER: recoverable state) EA=0 "
                             "DFSC=0x11 (asynchronous SError interrupt)"));
  EXPECT_THAT(out, HasSubstr("DISR_EL1 0x80000c11: A=1 IDS=0 AET=0b011"));
}

TEST(FormatInjectResponse, StateThenNote) {
  v1::InjectResponse response;
  *response.mutable_state() = Proto<v1::VcpuExceptionState>(kSErrorWithEsr);
  response.set_note("an SError was already pending: kept it");
  std::string out = FormatInjectResponse(response);
  EXPECT_THAT(out, StartsWith("vCPU 0: SError pending, ESR 0xbe001234: "));
  EXPECT_THAT(out,
              HasSubstr("\nnote: an SError was already pending: kept it\n"));
}

TEST(FormatExceptionState, EveryVcpuSeparatedByABlankLine) {
  v1::GetExceptionStateResponse response;
  *response.add_vcpus() = Proto<v1::VcpuExceptionState>(kNmiMaskedPending);
  *response.add_vcpus() = Proto<v1::VcpuExceptionState>(R"pb(
    vcpu_index: 3
    x86_64 {})pb");
  std::string out = FormatExceptionState(response);
  EXPECT_THAT(out, HasSubstr("\n\nvCPU 3 (x86_64)\n  nothing pending\n"));
  EXPECT_EQ(FormatExceptionState(v1::GetExceptionStateResponse()),
            "no vCPUs\n");
}

TEST(FormatVmList, Table) {
  auto list = Proto<v1::ListVmsResponse>(R"pb(
    vms {
      name: "vm1"
      state: VM_RUNNING
      worker_pid: 4242
      guest_exception_reports: 3
      config {
        arch: ARCH_X86_64
        vcpu_count: 2
        memory_bytes: 67108864
        guest { bundled: "witness" }
      }
    }
    vms {
      name: "restored-arm"
      state: VM_PAUSED
      config {
        arch: ARCH_ARM64
        vcpu_count: 1
        memory_bytes: 1000
        guest { path: "/srv/g.bin" }
      }
    })pb");
  // clang-format off
  EXPECT_EQ(FormatVmList(list),
            "NAME          ARCH    STATE    VCPUS  MEMORY      GUEST              PID   REPORTS\n"
            "vm1           x86_64  RUNNING  2      64 MiB      witness (bundled)  4242  3\n"
            "restored-arm  arm64   PAUSED   1      1000 bytes  /srv/g.bin         -     0\n");
  // clang-format on
  EXPECT_EQ(FormatVmList(v1::ListVmsResponse()), "no VMs\n");
}

TEST(FormatVmInfo, KeyValueLines) {
  auto vm = Proto<v1::VmInfo>(R"pb(
    name: "vm1"
    state: VM_CRASHED
    error: "worker exited with status 1"
    created_unix_ns: 1795450920123000000
    config {
      arch: ARCH_X86_64
      vcpu_count: 2
      memory_bytes: 67108864
      guest { bundled: "witness" }
      witness { heartbeat_ms: 100 }
    })pb");
  EXPECT_EQ(
      FormatVmInfo(vm),
      "name                     vm1\n"
      "state                    CRASHED\n"
      "arch                     x86_64\n"
      "vcpus                    2\n"
      "memory                   64 MiB\n"
      "guest                    witness (bundled)\n"
      "mce banks                all the host offers\n"
      "witness                  heartbeat 100 ms, workset 0 pages, 0 dirty "
      "pages/s, hold mask 0x0\n"
      "worker pid               -\n"
      "created                  2026-11-23T16:22:00.123Z\n"
      "guest exception reports  0\n"
      "error                    worker exited with status 1\n");
  EXPECT_EQ(FormatVmStateLine(vm),
            "vm1: CRASHED (worker exited with status 1)\n");
}

TEST(FormatEvent, OneLinePerKind) {
  EXPECT_EQ(FormatEvent(Proto<v1::Event>(R"pb(
              time_unix_ns: 1795450920123000000
              vm: "vm1"
              lifecycle { state: VM_RUNNING reason: "StartVm" })pb")),
            "2026-11-23T16:22:00.123Z  vm1  lifecycle  RUNNING (StartVm)");
  EXPECT_EQ(FormatEvent(Proto<v1::Event>(R"pb(
              time_unix_ns: 1795450920123000000
              vm: "vm1"
              injection { vcpu: 1 what: "NMI" })pb")),
            "2026-11-23T16:22:00.123Z  vm1  injection  vCPU 1: NMI");
  EXPECT_EQ(FormatEvent(Proto<v1::Event>(R"pb(
              time_unix_ns: 1795450920123000000
              vm: "vm1"
              guest_report {
                vcpu: 0
                kind: "EXC"
                fields { key: "vec" value: 0x12 }
                line: "VEX EXC cpu=0 seq=1 vec=0x12 err=0x0 cr2=0x0 rip=0x1000"
              })pb")),
            "2026-11-23T16:22:00.123Z  vm1  guest      vCPU 0: VEX EXC cpu=0 "
            "seq=1 vec=0x12 err=0x0 cr2=0x0 rip=0x1000  [vec: #MC machine "
            "check]");
}

TEST(FormatGuestReport, DecodesMachineCheckBankAndSError) {
  std::string mcb = FormatGuestReport(Proto<v1::GuestReportEvent>(R"pb(
    kind: "MCB"
    fields { key: "status" value: 0xbc0000000000009f }
    fields { key: "bank" value: 3 }
    line: "VEX MCB cpu=0 seq=1 bank=3 status=0xbc0000000000009f")pb"));
  EXPECT_THAT(mcb, HasSubstr("  [status: VAL|UC|EN|MISCV|ADDRV mca=0x009f"));
  std::string serror = FormatGuestReport(Proto<v1::GuestReportEvent>(R"pb(
    vcpu: 1
    kind: "SERROR"
    fields { key: "esr" value: 0xbe001234 }
    fields { key: "disr" value: 0 }
    line: "VEX SERROR cpu=1 seq=1 esr=0xbe001234 elr=0x0 spsr=0x0 disr=0x0")pb"));
  EXPECT_THAT(serror,
              HasSubstr("  [esr: EC=0x2f (SError interrupt) IL=1 ISS=0x001234 "
                        "IDS=0 IESB=0 AET=0b100 EA=1 DFSC=0x34 (reserved); "
                        "disr: A=0 (no SError deferred)]"));
  // A report without its raw line is rebuilt from its fields, sorted.
  EXPECT_EQ(FormatGuestReport(Proto<v1::GuestReportEvent>(R"pb(
              kind: "DONE"
              fields { key: "cmd" value: 1 }
              fields { key: "cpu" value: 0 })pb")),
            "vCPU 0: VEX DONE cmd=0x1 cpu=0x0");
}

TEST(FormatSnapshot, InspectShowsPendingLines) {
  auto inspect = Proto<v1::InspectSnapshotResponse>(R"pb(
    format_version: 1
    producer: "vexd test"
    config { name: "vm1" arch: ARCH_ARM64 vcpu_count: 1 memory_bytes: 67108864 }
    source_host { arch: ARCH_ARM64 kernel_release: "6.1.0" }
    vcpus {
      vcpu_index: 0
      arm64 { serror_pending: true serror_has_esr: true serror_esr: 0x1234 }
    }
    file_bytes: 1572864
  )pb");
  std::string out = FormatInspectSnapshot(inspect);
  EXPECT_THAT(out, HasSubstr("size            1.5 MiB (1572864 bytes)\n"));
  EXPECT_THAT(out, HasSubstr("source host     arm64, Linux 6.1.0\n"));
  EXPECT_THAT(out, HasSubstr("pending:\n  vCPU 0: SError pending, ESR "
                             "0xbe001234: EC=0x2f (SError interrupt)"));
}

TEST(FormatFields, Basics) {
  EXPECT_EQ(VmStateName(v1::VM_STOPPED), "STOPPED");
  EXPECT_EQ(VmStateName(static_cast<v1::VmRunState>(42)), "STATE(42)");
  EXPECT_EQ(ArchName(v1::ARCH_ARM64), "arm64");
  EXPECT_EQ(ArchName(v1::ARCH_UNSPECIFIED), "-");
  EXPECT_EQ(FormatUnixNs(0), "-");
  EXPECT_EQ(FormatSize(512), "512 bytes");
  EXPECT_EQ(FormatSize(uint64_t{3} << 30), "3.0 GiB (3221225472 bytes)");
  EXPECT_EQ(FormatMemory(0), "0 bytes");
}

TEST(FormatTable, PadsShortRowsAndTrimsTrailingBlanks) {
  EXPECT_EQ(FormatTable({"A", "LONGER", "C"}, {{"xx", "y"}, {"", "", "z"}}),
            "A   LONGER  C\n"
            "xx  y\n"
            "            z\n");
}

// --json: one line, proto field names, zero values present, enums by name,
// 64-bit integers as strings; and it reads back to the same message.
template <typename T>
void ExpectJsonRoundTrip(const T& message) {
  absl::StatusOr<std::string> json = ToJsonLine(message);
  ASSERT_TRUE(json.ok()) << json.status();
  EXPECT_EQ(json->find('\n'), std::string::npos) << *json;
  T back;
  absl::Status parsed = FromJson(*json, &back);
  ASSERT_TRUE(parsed.ok()) << parsed;
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(message, back))
      << *json;
}

TEST(Json, PendingRoundTripsAndUsesProtoNames) {
  auto pending = Proto<v1::QueryPendingResponse>(kPendingMcAndPf);
  ExpectJsonRoundTrip(pending);
  std::string json = *ToJsonLine(pending);
  EXPECT_THAT(json,
              StartsWith("{\"vms\":[{\"vm\":\"vm1\",\"state\":\"VM_PAUSED\""));
  EXPECT_THAT(json, HasSubstr("\"read_unix_ns\":\"1795450920123000000\""));
  EXPECT_THAT(json, HasSubstr("\"vcpu_index\":0"));
  EXPECT_THAT(json, HasSubstr("\"status\":\"13546827679130452127\""));
  // Zero values are printed: a script can read "injected": false.
  EXPECT_THAT(json, HasSubstr("\"injected\":false"));
  EXPECT_THAT(json, HasSubstr("\"summary\":[]"));
}

TEST(Json, EveryHumanCaseRoundTrips) {
  ExpectJsonRoundTrip(Proto<v1::VcpuExceptionState>(kNmiMaskedPending));
  ExpectJsonRoundTrip(Proto<v1::VcpuExceptionState>(kSErrorWithEsr));
  ExpectJsonRoundTrip(Proto<v1::Event>(R"pb(
    time_unix_ns: 1795450920123000000
    vm: "vm1"
    sequence: 7
    guest_report {
      kind: "MCB"
      fields { key: "status" value: 0xbc0000000000009f }
      line: "VEX MCB"
    })pb"));
  ExpectJsonRoundTrip(Proto<v1::ListVmsResponse>(R"pb(
    vms {
      name: "a"
      config { guest { bundled: "witness" } }
    })pb"));
}

TEST(FormatMigration, CompletedResultWithDegradation) {
  EXPECT_EQ(FormatMigrationResult(Proto<v1::MigrationResult>(R"pb(
              outcome: MIGRATION_COMPLETED
              total_ms: 1840
              downtime_ms: 23
              bytes_sent: 73400320
              rounds: 4
              degradations: "MCE banks 10-31 dropped (empty)"
              destination: "tcp:10.77.0.2:7500"
              memory_sha256: "9f86d081884c7d65"
            )pb")),
            "outcome        COMPLETED\n"
            "destination    tcp:10.77.0.2:7500\n"
            "total          1840 ms\n"
            "downtime       23 ms\n"
            "sent           70.0 MiB (73400320 bytes)\n"
            "rounds         4\n"
            "degraded       MCE banks 10-31 dropped (empty)\n"
            "memory sha256  9f86d081884c7d65\n");
}

TEST(FormatMigration, FailedResultNamesTheError) {
  std::string text = FormatMigrationResult(Proto<v1::MigrationResult>(R"pb(
    outcome: MIGRATION_FAILED
    error: "FAILED_PRECONDITION: the destination has 10 MCE banks"
  )pb"));
  EXPECT_THAT(text, StartsWith("outcome        FAILED\n"));
  EXPECT_THAT(text, HasSubstr("degraded       nothing\n"));
  EXPECT_THAT(text, HasSubstr("memory sha256  -\n"));
  EXPECT_THAT(text, HasSubstr("error          FAILED_PRECONDITION: the "
                              "destination has 10 MCE banks\n"));
}

TEST(FormatMigration, ProgressLineAndBar) {
  auto precopy = Proto<v1::MigrationProgress>(R"pb(
    phase: MIGRATION_PRECOPY
    round: 3
    bytes_sent: 100663296
    pages_sent: 24576
    pages_remaining: 8192
    dirty_pages_per_sec: 16384
    expected_downtime_ms: 31
  )pb");
  EXPECT_EQ(FormatMigrationProgressLine(precopy),
            "PRECOPY round 3: sent 96.0 MiB, remaining 32.0 MiB, dirty 64.0 "
            "MiB/s, expected downtime 31 ms\n");
  EXPECT_THAT(FormatMigrationProgressBar(precopy),
              StartsWith("[###############.....] PRECOPY round 3: "));
  EXPECT_EQ(FormatMigrationProgressLine(
                Proto<v1::MigrationProgress>("phase: MIGRATION_PREPARE")),
            "PREPARE\n");
  EXPECT_THAT(FormatMigrationProgressBar(Proto<v1::MigrationProgress>(
                  "phase: MIGRATION_COMPLETED bytes_sent: 1048576")),
              StartsWith("[####################] COMPLETED: sent 1.0 MiB"));
  EXPECT_EQ(MigrationPhaseName(static_cast<v1::MigrationPhase>(42)),
            "PHASE(42)");
}

TEST(FormatMigration, Status) {
  EXPECT_EQ(FormatMigrationStatus(Proto<v1::MigrationStatus>("vm: \"a\"")),
            "a: no migration\n");
  EXPECT_EQ(FormatMigrationStatus(Proto<v1::MigrationStatus>(R"pb(
              vm: "a"
              migration_id: "m-1"
              phase: MIGRATION_PRECOPY
              last_progress { phase: MIGRATION_PRECOPY round: 1 }
            )pb")),
            "vm         a\n"
            "migration  m-1\n"
            "phase      PRECOPY\n"
            "progress   PRECOPY round 1: sent 0.0 MiB, remaining 0.0 MiB, "
            "dirty 0.0 MiB/s, expected downtime 0 ms\n");
}

TEST(Json, MigrationProgressRoundTrips) {
  ExpectJsonRoundTrip(Proto<v1::MigrationProgress>(R"pb(
    migration_id: "m-1"
    phase: MIGRATION_COMPLETED
    result {
      outcome: MIGRATION_COMPLETED
      memory_sha256: "ab"
      degradations: "x"
    }
  )pb"));
}

TEST(Json, RejectsUnknownFields) {
  v1::VmInfo vm;
  absl::Status status = FromJson("{\"name\":\"a\",\"bogus\":1}", &vm);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(status.message()), HasSubstr("vexstate.v1.VmInfo"));
}

}  // namespace
}  // namespace vexstate::client
