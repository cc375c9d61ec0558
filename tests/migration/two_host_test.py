#!/usr/bin/env python3
"""Live migration between two vexd hosts (two network namespaces joined by a veth pair), driven
through `vexctl migrate` as an operator would. The witness guest decides: a pending exception
is reported by the guest exactly once, on the host where the VM runs after the migration.

Scenarios: (a) pending #MC, (b) pending #PF with payload, (c) NMI pending while masked (live,
under the dirtying workload), (d) a destination with fewer MCE banks (refused before the source
pauses; with --degrade completed, the dropped banks listed), (e) a destination whose CA differs
(refused), (f) the link cut during pre-copy (the VM ends on exactly one host, the pending NMI
taken once there), and a 1 GiB idle guest. Each migration's total time and downtime are
printed (numbers, not assertions).

Needs root (ip netns) and real KVM. Writes a JUnit XML report to $XML_OUTPUT_FILE.
"""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_support import (MC_ARGS, MC_STATUS, NMI_HOLD_MASK, WORKLOAD, check, exc_reports,  # noqa: E402
                         expect_memory_intact, hold_nmi_and_make_one_pending, last_sequence, parse_migration,
                         paused_events, release_nmi_and_expect_once, run_scenarios, vec)

MIB = 1 << 20

timings = []  # (scenario, total_ms, downtime_ms, MiB sent, rounds, max dirty MiB/s seen)


def max_dirty_mib_s(progress):
    return max((int(p.get("dirty_pages_per_sec", "0")) * 4096 / MIB for p in progress), default=0.0)


def record(name, result, progress):
    row = (name, int(result.get("total_ms", "0")), int(result.get("downtime_ms", "0")),
           int(result.get("bytes_sent", "0")) / MIB, int(result.get("rounds", 0)), max_dirty_mib_s(progress))
    timings.append(row)
    print(f"    {name}: total {row[1]} ms, downtime {row[2]} ms, sent {row[3]:.1f} MiB, {row[4]} rounds, "
          f"dirty rate up to {row[5]:.1f} MiB/s", flush=True)


def expect_completed(name, migrated):
    rc, result, progress, stderr = migrated
    check(result is not None, f"{name}: no result (exit {rc}): {stderr}")
    check(result.get("outcome") == "MIGRATION_COMPLETED" and rc == 0,
          f"{name}: {result.get('outcome')} (exit {rc}): {result.get('error') or stderr}")
    check(len(result.get("memory_sha256", "")) == 64, f"{name}: no memory sha256 in the result: {result}")
    record(name, result, progress)
    return result


def expect_moved(src, dst, vm):
    check(vm not in src.vm_names(), f"{vm} is still listed on the source after COMPLETED")
    check(dst.vm_state(vm) == "VM_RUNNING", f"{vm} is {dst.vm_state(vm)} on the destination")


def taken_once(host, vm, vector, what):
    host.wait_reports(vm, "EXC", lambda r: vec(r) == vector, 1)
    time.sleep(0.5)
    got = exc_reports(host, vm, vector)
    check(len(got) == 1, f"{host.name}/{vm}: expected {what} exactly once, got {[r['line'] for r in got]}")
    return got[0]


# ---------------------------------------------------------------------------------- scenarios


def migrate_paused_pending(lab, src, dst, vm, inject, vector, what):
    """A running guest dirties memory, is paused with `what` made pending, and migrates.

    A pending #MC or #PF is taken by a running vCPU at its next entry: it cannot stay pending
    in a running VM, so the VM is paused (not --pause-around) for the exception to be pending
    when the migration starts. The workload's pages migrate; the guest resumes on the
    destination only."""
    src.create_running(vm, extra=WORKLOAD)
    time.sleep(1.5)  # the workload touches its working set
    src.ctl("vm", "pause", vm)
    src.ctl("inject", *inject)
    pending = src.ctl("pending", vm).stdout
    check(what in pending, f"`vexctl pending {vm}` does not show {what}:\n{pending}")
    expect_completed(vm, src.migrate(vm, dst, "--max-downtime-ms", "300"))
    expect_moved(src, dst, vm)
    report = taken_once(dst, vm, vector, what)
    check(not exc_reports(src, vm, vector), f"the source guest took {what} too")
    expect_memory_intact(dst, vm)
    return report


def test_a_pending_mce(lab, src, dst):
    vm = "mce"
    migrate_paused_pending(lab, src, dst, vm, ["mce", vm, "--vcpu", "0", *MC_ARGS], 18, "#MC")
    banks = dst.guest_reports(vm, "MCB")
    check(len(banks) == 1 and int(banks[0]["fields"]["bank"]) == 3 and
          int(banks[0]["fields"]["status"]) == int(MC_STATUS, 16) and
          int(banks[0]["fields"]["addr"]) == 0x12345000, f"bank values on the destination: {banks}")


def test_b_pending_pf_payload(lab, src, dst):
    vm = "pf"
    report = migrate_paused_pending(
        lab, src, dst, vm, ["exception", vm, "--vcpu", "0", "--vector", "14", "--error-code", "0x2", "--payload",
                            "0xdead000"], 14, "#PF")
    check(int(report["fields"]["cr2"]) == 0xdead000 and int(report["fields"]["err"]) == 2,
          f"CR2/error code lost: {report['line']}")


def test_c_nmi_pending_while_masked_live(lab, src, dst):
    vm = "nmi"
    src.create_running(vm, vcpus=2, extra=[*WORKLOAD, "--hold-mask", NMI_HOLD_MASK])
    time.sleep(1.5)
    hold_nmi_and_make_one_pending(src, vm)
    expect_completed(vm, src.migrate(vm, dst, "--max-downtime-ms", "300"))
    expect_moved(src, dst, vm)
    # The destination guest is still in its NMI handler: nothing new until the hold is cleared.
    check(not dst.guest_reports(vm, "EXC"), f"the destination took something before the release: "
          f"{[r['line'] for r in dst.guest_reports(vm, 'EXC')]}")
    release_nmi_and_expect_once(dst, vm)
    check(len(exc_reports(src, vm, 2)) == 1, "the source guest took the pending NMI")
    expect_memory_intact(dst, vm)


def test_d_fewer_mce_banks(lab, src, dst):
    few = lab.add_host("dst", extra_flags=["--max_mce_banks", "10"], name="dst10")
    vm = "wide"
    src.create_running(vm, extra=WORKLOAD)
    before = last_sequence(src, vm)
    rc, result, _, stderr = src.migrate(vm, few)
    check(rc == 1, f"migrating to a 10-bank host exited {rc}, expected 1")
    error = (result or {}).get("error", "") + stderr
    check("MCE" in error or "bank" in error, f"the refusal does not name the banks: {error}")
    check(not paused_events(src, vm, before), "the source paused before the refusal")
    check(src.vm_state(vm) == "VM_RUNNING", f"the source is {src.vm_state(vm)} after the refusal")
    check(vm not in few.vm_names(), "the refused VM was left on the destination")
    # The guest is the witness: a #MC made pending now is taken once, on the source.
    src.ctl("inject", "mce", vm, "--vcpu", "0", *MC_ARGS, "--pause-around")
    taken_once(src, vm, 18, "#MC after the refusal")

    vm2 = "wide2"
    src.create_running(vm2, extra=WORKLOAD)
    time.sleep(1)
    src.ctl("vm", "pause", vm2)
    src.ctl("inject", "mce", vm2, "--vcpu", "0", *MC_ARGS)
    result = expect_completed(vm2 + " --degrade", src.migrate(vm2, few, "--degrade"))
    degradations = " ".join(result.get("degradations", []))
    check("bank" in degradations.lower(), f"the result does not list the dropped banks: {result}")
    print(f"    degradations: {result.get('degradations')}")
    expect_moved(src, few, vm2)
    taken_once(few, vm2, 18, "#MC (bank 3 survives the degradation)")
    expect_memory_intact(few, vm2)


def test_e_other_ca_refused(lab, src, dst):
    other = lab.add_host("dst", tls_dir=lab.make_certs("other-ca"), name="dstca")
    vm = "stranger"
    src.create_running(vm, extra=WORKLOAD)
    before = last_sequence(src, vm)
    rc, result, _, stderr = src.migrate(vm, other, "--deadline-ms", "30000", timeout=120)
    check(rc == 1, f"migrating to a host of another CA exited {rc}, expected 1")
    check(not result or result.get("outcome") != "MIGRATION_COMPLETED", f"completed: {result}")
    print(f"    refused: {(result or {}).get('error') or stderr}")
    check(src.vm_state(vm) == "VM_RUNNING", f"the source is {src.vm_state(vm)} after the refusal")
    check(not paused_events(src, vm, before), "the source paused for an unauthenticated destination")
    check(vm not in other.vm_names(), "a VM appeared on the untrusted destination")


def test_f_link_cut_during_precopy(lab, src, dst):
    vm = "cut"
    # A larger working set at a rate the link cannot absorb below a 1 ms downtime: pre-copy
    # keeps going until the cut.
    src.create_running(vm, vcpus=2, memory_mib=96,
                       extra=["--workset-pages", "16384", "--dirty-pages-per-sec", "16384", "--hold-mask",
                              NMI_HOLD_MASK])
    time.sleep(2)
    hold_nmi_and_make_one_pending(src, vm)
    cmd = src.migrate_cmd(vm, dst, "--max-downtime-ms", "1", "--max-rounds", "1000", "--deadline-ms", "60000")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    cut = threading.Event()

    def read_progress():
        for line in proc.stdout:
            lines.append(line)
            if '"MIGRATION_PRECOPY"' in line and '"round":2' in line.replace(" ", "") and not cut.is_set():
                lab.set_link("src", up=False)
                cut.set()

    reader = threading.Thread(target=read_progress)
    reader.start()
    try:
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join()
        if cut.is_set():
            lab.set_link("src", up=True)
    stderr = proc.stderr.read()
    check(cut.is_set(), f"the migration never reached pre-copy round 2 (exit {proc.returncode}): {stderr}")
    rc, result, progress, _ = parse_migration(subprocess.CompletedProcess(cmd, proc.returncode, "".join(lines), ""))
    outcome = (result or {}).get("outcome", "no result")
    print(f"    after the cut: {outcome} (exit {rc}) {(result or {}).get('error') or stderr.strip()}")
    on_src = vm in src.vm_names()
    on_dst = vm in dst.vm_names()
    check(on_src != on_dst, f"the VM is listed on {'both hosts' if on_src else 'neither host'}")
    where, other = (src, dst) if on_src else (dst, src)
    check(where.vm_state(vm) == "VM_RUNNING", f"{where.name}/{vm} is {where.vm_state(vm)}")
    check((outcome == "MIGRATION_COMPLETED") == on_dst, f"outcome {outcome} but the VM is on {where.name}")
    release_nmi_and_expect_once(where, vm)
    if other is dst:
        check(not dst.guest_reports(vm, "EXC"), "the discarded destination guest ran")
    else:
        check(len(exc_reports(src, vm, 2)) == 1, "the source guest took the pending NMI")
    expect_memory_intact(where, vm)


def test_idle_1gib(lab, src, dst):
    vm = "big"
    src.create_running(vm, memory_mib=1024)
    expect_completed("1 GiB idle", src.migrate(vm, dst, "--max-downtime-ms", "300"))
    expect_moved(src, dst, vm)
    dst.ctl("inject", "nmi", vm, "--vcpu", "0", "--pause-around")
    taken_once(dst, vm, 2, "an NMI after the move")


TESTS = [
    test_a_pending_mce,
    test_b_pending_pf_payload,
    test_c_nmi_pending_while_masked_live,
    test_d_fewer_mce_banks,
    test_e_other_ca_refused,
    test_f_link_cut_during_precopy,
    test_idle_1gib,
]


def print_timings():
    print("\nmigration timings (numbers, not assertions):")
    for name, total, downtime, sent, rounds, dirty in timings:
        print(f"  {name:<22} total {total:>6} ms  downtime {downtime:>5} ms  sent {sent:>8.1f} MiB  "
              f"rounds {rounds:>3}  dirty rate seen {dirty:.1f} MiB/s")


if __name__ == "__main__":
    sys.exit(run_scenarios("two_host_test", TESTS, lambda lab: (lab.add_host("src"), lab.add_host("dst")),
                           print_timings))
