#!/usr/bin/env python3
"""Migration faults at the process level between two vexd hosts (network namespaces joined by a
veth pair): a worker or a whole vexd killed with SIGKILL at a chosen point, daemons restarted.
Each scenario ends with the VM running on EXACTLY ONE host; the witness guest decides: the NMI
made pending while NMIs were masked is taken exactly once there and never on the other host,
and the guest's memory pattern check finds no bad page.

Scenarios:
  dst_worker_killed_during_precopy    destination worker SIGKILLed in pre-copy round 2
  dst_worker_killed_after_final_state destination worker SIGKILLed after the final state was
                                      verified, before Finish(commit) was sent
  src_vexd_killed_before_confirm      source vexd SIGKILLed after the destination committed,
                                      before Confirm; restarted, it settles: VM on destination
  src_vexd_killed_before_finish       source vexd SIGKILLed after the destination verified (the
                                      commit intent is journalled), before Finish(commit);
                                      restarted, it commits: destination
  src_vexd_killed_before_verified     source vexd SIGKILLed after the commit intent was journalled
                                      at stop-and-copy, while the last pages are held back (so
                                      the destination has not verified); restarted, its
                                      Finish(commit) is answered FAILED (nothing verified to
                                      commit), the copy is discarded and the VM resumes here
  src_vexd_killed_during_precopy      source vexd SIGKILLed in pre-copy; restarted, it discards
                                      the destination's copy and resumes the VM here
  dst_vexd_restarted_uncommitted      destination vexd SIGKILLed and restarted while the source
                                      holds before Finish(commit): the uncommitted copy is
                                      discarded at start-up and Finish(commit) is answered FAILED
  outcome_unknown_until_destination_returns
                                      both vexds SIGKILLed there; the source restarted alone keeps
                                      the VM paused with "outcome unknown" until the destination
                                      is back and answers FAILED; then it resumes the VM

Deterministic windows come from vexd's test-only fault-injection flags
--testing_delay_before_finish_ms / --testing_delay_before_confirm_ms (off by default): the
source vexd logs "testing: migration ... waiting N ms before <step>" and waits; the test acts in
that window. The stop-and-copy window uses VEXSTATE_TESTING_PHASE_DELAY=STOP_AND_COPY:MS
(migration/testing_phase_delay.h) in the source vexd's environment: its worker holds the last
pages back after reporting stop-and-copy. Timings of each scenario are printed. Needs root (ip netns) and real KVM. Writes a
JUnit XML report to $XML_OUTPUT_FILE.
"""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_support import (NMI_HOLD_MASK, PHASE_DELAY, WORKLOAD, check, exc_reports, expect_memory_intact,  # noqa: E402
                         hold_nmi_and_make_one_pending, journal_holds, last_sequence, migration_id_of,
                         parse_migration, paused_events, release_nmi_and_expect_once, run_scenarios)

# The fault-injection window: long enough to kill and restart a vexd in it.
DELAY_MS = 8000
# Pre-copy that lasts until the fault: the workload (WORKLOAD: 8 MiB rewritten at 64 MiB/s) is
# sent at most at 8 MiB/s, so a round takes about a second and none fits a 1 ms downtime. (A
# larger working set makes the guest's memcheck too slow here: first touch ~350 us a page.)
ENDLESS_PRECOPY = ["--max-downtime-ms", "1", "--max-rounds", "1000", "--max-bandwidth-mibps", "8",
                   "--deadline-ms", "60000"]
# Progress for a round is reported when it ends: the fault comes while the next one is sent.
FAULT_AFTER_ROUND = 1

timings = []  # (scenario, what happened, seconds)


def note(name, what, seconds):
    timings.append((name, what, seconds))
    print(f"    {name}: {what} ({seconds:.1f} s)", flush=True)


class Migration:
    """`vexctl --json migrate` in the background; `on_line(line)` sees each progress line."""

    def __init__(self, src, vm, dst, *flags, on_line=None):
        self.cmd = src.migrate_cmd(vm, dst, *flags)
        self.started = time.time()
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.on_line = on_line
        self.reader = threading.Thread(target=self._read)
        self.reader.start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            if self.on_line:
                self.on_line(line)

    def wait(self, timeout=240):
        """(exit code, result or None, progress, stderr), once vexctl has exited."""
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.reader.join()
        stderr = self.proc.stderr.read()
        return parse_migration(subprocess.CompletedProcess(self.cmd, self.proc.returncode, "".join(self.lines),
                                                           stderr))


def after_precopy_round(n, action):
    """An on_line callback that runs `action` once, when pre-copy round n has been reported."""
    fired = threading.Event()

    def on_line(line):
        compact = line.replace(" ", "")
        if not fired.is_set() and '"MIGRATION_PRECOPY"' in line and f'"round":{n}' in compact:
            fired.set()
            action()

    on_line.fired = fired
    return on_line


def start_witness(host, vm):
    """A running 2-vCPU witness under the 64 MiB/s dirtying workload, with an NMI pending while
    NMIs are masked (vCPU 1 holds in its NMI handler)."""
    host.create_running(vm, vcpus=2, extra=[*WORKLOAD, "--hold-mask", NMI_HOLD_MASK])
    time.sleep(1.5)  # the workload touches its working set
    hold_nmi_and_make_one_pending(host, vm)


def wait_until(condition, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        time.sleep(0.2)
    check(False, f"{what} within {timeout:.0f} s")


def expect_on_exactly(where, other, vm):
    """The VM runs on `where` only: listed and RUNNING there, unknown on `other` (no record, no
    worker process); the pending NMI is taken exactly once on `where`, never on `other`; the
    guest's memory check passes."""
    wait_until(lambda: vm in where.vm_names() and where.vm_state(vm) == "VM_RUNNING", 60,
               f"{vm} RUNNING on {where.name}")
    wait_until(lambda: vm not in other.vm_names(), 60, f"{vm} gone from {other.name}")
    wait_until(lambda: not other.worker_pids(vm), 30, f"no worker of {vm} left on {other.name}")
    check(not os.path.exists(os.path.join(other.state, "vms", f"{vm}.record")),
          f"{other.name} still has a journal record of {vm}")
    check(len(where.worker_pids(vm)) == 1, f"{where.name}: workers of {vm}: {where.worker_pids(vm)}")
    release_nmi_and_expect_once(where, vm)
    if other.side == "dst":
        ran = [r["line"] for r in exc_reports(other, vm, 2)]
        check(not ran, f"the destination guest ran: {ran}")
    else:
        # The source took the first NMI (seq 1) before the migration, never the pending one.
        check(len(exc_reports(other, vm, 2)) == 1, "the source guest took the pending NMI too")
    expect_memory_intact(where, vm)


def migrate_into_window(src_x, dst, vm, step):
    """Starts the witness on `src_x` (a source with a fault-injection window) and migrates it to
    `dst` in the background; returns once the source waits in its window before `step`."""
    start_witness(src_x, vm)
    since = src_x.log_size()
    migration = Migration(src_x, vm, dst, "--max-downtime-ms", "300")
    src_x.wait_log(f"of VM {vm}: waiting {DELAY_MS} ms before {step}", since)
    return migration


def max_dirty_mib_s(migrated):
    return max((int(p.get("dirty_pages_per_sec", "0")) * 4096 / (1 << 20) for p in migrated[2]), default=0.0)


def outcome_of(migrated):
    rc, result, _, stderr = migrated
    return (result or {}).get("outcome", "no result"), (result or {}).get("error") or stderr


# ---------------------------------------------------------------------------------- scenarios


def test_dst_worker_killed_during_precopy(lab, src, src_fin, src_conf, dst):
    vm = "k-pre"
    start_witness(src, vm)
    killed = []
    trigger = after_precopy_round(FAULT_AFTER_ROUND, lambda: killed.append(dst.kill_worker(vm)))
    migration = Migration(src, vm, dst, *ENDLESS_PRECOPY, on_line=trigger)
    migrated = migration.wait()
    check(trigger.fired.is_set() and killed, f"pre-copy never passed round {FAULT_AFTER_ROUND}: {outcome_of(migrated)}")
    outcome, error = outcome_of(migrated)
    check(outcome == "MIGRATION_FAILED", f"outcome {outcome}: {error}")
    check("pre-copy round" in error, f"the fault did not hit pre-copy: {error}")
    note("dst worker -9 in pre-copy", f"{outcome} (dirty rate seen {max_dirty_mib_s(migrated):.0f} MiB/s): "
         f"{error[:100]}", time.time() - migration.started)
    expect_on_exactly(src, dst, vm)


def test_dst_worker_killed_after_final_state(lab, src, src_fin, src_conf, dst):
    vm = "k-final"
    migration = migrate_into_window(src_fin, dst, vm, "Finish(commit)")
    dst.kill_worker(vm)
    outcome, error = outcome_of(migration.wait())
    check(outcome == "MIGRATION_FAILED", f"outcome {outcome}: {error}")
    note("dst worker -9 after final state", f"{outcome}: {error[:100]}", time.time() - migration.started)
    expect_on_exactly(src_fin, dst, vm)


def src_vexd_killed_in_window(src_x, dst, vm, step):
    migration = migrate_into_window(src_x, dst, vm, step)
    src_x.kill()
    migration.wait()
    restarted = time.time()
    since = src_x.log_size()
    src_x.start()
    src_x.wait_log(f"VM {vm}: migrated to {dst.migration_address}", since, timeout=60)
    note(f"source vexd -9 before {step}", "settled COMPLETED after the restart", time.time() - restarted)
    expect_on_exactly(dst, src_x, vm)


def test_src_vexd_killed_before_confirm(lab, src, src_fin, src_conf, dst):
    src_vexd_killed_in_window(src_conf, dst, "k-conf", "Confirm(committed)")


def test_src_vexd_killed_before_finish(lab, src, src_fin, src_conf, dst):
    src_vexd_killed_in_window(src_fin, dst, "k-fin", "Finish(commit)")


def test_src_vexd_killed_before_verified(lab, src, src_fin, src_conf, dst):
    """The commit intent is journalled when stop-and-copy begins, before the destination verified
    anything; the source vexd dies right then. Restarted, it settles the intent by sending
    Finish(commit), and the destination, which holds no verified copy, answers FAILED and discards:
    the VM resumes here. (The counterpart, src_vexd_killed_before_finish, dies after the
    destination verified: there the same Finish(commit) commits.)"""
    vm = "k-intent"
    # Its own source: the hook holds every migration of its workers at stop-and-copy.
    src_x = lab.add_host("src", name="src-intent", env={PHASE_DELAY: f"STOP_AND_COPY:{DELAY_MS}"})
    try:
        start_witness(src_x, vm)
        since = src_x.log_size()
        migration = Migration(src_x, vm, dst, "--max-downtime-ms", "300")
        src_x.wait_log(f"of VM {vm}: commit intent journalled (MIGRATION_STOP_AND_COPY)", since)
        held = time.time()
        src_x.kill()
        migrated = migration.wait()
        mid = migration_id_of(migrated)
        check(journal_holds(src_x, vm, mid), "the killed source's journal does not hold the migration")
        since = src_x.log_size()
        dst_since = dst.log_size()
        src_x.start()
        line = src_x.wait_log(f"VM {vm}: migration", since, timeout=60)
        check("was interrupted by a vexd restart" in line and "commit intent journalled" in line,
              f"the restarted source did not find the commit intent: {line}")
        dst.wait_log(f"VM {vm}: incoming migration {mid} discarded", dst_since, timeout=60)
        discarded = time.time() - held
        # Discarded while the source worker still held the last pages back: the destination
        # had verified nothing (else this run would not test the window).
        check(discarded < DELAY_MS / 1000 - 1, f"discarded {discarded:.1f} s after the hold began: too close to its end")
        # The worker ends its transfer when the hold ends; only then is the VM resumed here.
        line = src_x.wait_log("settled after a vexd restart: MIGRATION_FAILED", since, timeout=60)
        note("source vexd -9 at stop-and-copy", f"discarded by the destination after {discarded:.1f} s; " +
             line.split(": ", 2)[-1][:100], time.time() - held)
        expect_on_exactly(src_x, dst, vm)
        check(not journal_holds(src_x, vm, mid), "the settled migration is still journalled")
    finally:
        src_x.stop()


def test_src_vexd_killed_during_precopy(lab, src, src_fin, src_conf, dst):
    vm = "k-srcpre"
    start_witness(src, vm)
    before = last_sequence(src, vm)
    trigger = after_precopy_round(FAULT_AFTER_ROUND, src.kill)
    migration = Migration(src, vm, dst, *ENDLESS_PRECOPY, on_line=trigger)
    migrated = migration.wait()
    check(trigger.fired.is_set(), f"pre-copy never passed round {FAULT_AFTER_ROUND}")
    restarted = time.time()
    since = src.log_size()
    src.start()
    line = src.wait_log("failed: interrupted by a vexd restart before Finish(commit)", since, timeout=60)
    note("source vexd -9 in pre-copy", f"(dirty rate seen {max_dirty_mib_s(migrated):.0f} MiB/s) " +
         line.split(": ", 2)[-1][:120], time.time() - restarted)
    # The fault hit pre-copy: the VM never paused for stop-and-copy.
    check(not paused_events(src, vm, before), "the source paused: the fault came after pre-copy")
    expect_on_exactly(src, dst, vm)


def test_dst_vexd_restarted_uncommitted(lab, src, src_fin, src_conf, dst):
    vm = "k-dstrs"
    migration = migrate_into_window(src_fin, dst, vm, "Finish(commit)")
    check(len(dst.worker_pids(vm)) == 1, "the destination has no incoming worker to discard")
    dst.kill()
    dst_since = dst.log_size()
    dst.start()
    line = dst.wait_log(f"VM {vm}: incoming migration", dst_since)
    check("never committed: discarded at start-up" in line, f"the restarted destination did not discard: {line}")
    outcome, error = outcome_of(migration.wait())
    check(outcome == "MIGRATION_FAILED", f"outcome {outcome}: {error}")
    outcomes = os.path.join(dst.state, "migrations")
    check(os.path.isdir(outcomes) and os.listdir(outcomes), "the destination recorded no outcome")
    note("dst vexd -9 + restart, uncommitted", f"{outcome}: {error[:100]}", time.time() - migration.started)
    expect_on_exactly(src_fin, dst, vm)


def test_outcome_unknown_until_destination_returns(lab, src, src_fin, src_conf, dst):
    """Both vexds die while the source holds before Finish(commit); the source comes back alone.
    Nobody can say whether the destination runs the VM: it stays paused and listed on the source,
    its error says so, and the source keeps asking. The destination comes back, discards its
    uncommitted copy at start-up, answers FAILED, and the VM resumes on the source."""
    vm = "k-unknown"
    migration = migrate_into_window(src_fin, dst, vm, "Finish(commit)")
    dst.kill()
    src_fin.kill()
    migration.wait()
    restarted = time.time()
    since = src_fin.log_size()
    src_fin.start()
    src_fin.wait_log(f"VM {vm}: outcome unknown: kept paused here", since, timeout=60)
    info = src_fin.json("vm", "show", vm)[0]
    check(info["state"] == "VM_PAUSED" and "outcome unknown" in info.get("error", ""),
          f"while unsettled the source shows {info['state']}: {info.get('error')}")
    check(len(exc_reports(src_fin, vm, 2)) == 1, "the source guest took the pending NMI while unsettled")
    unknown_for = time.time() - restarted
    dst.start()
    src_fin.wait_log("settled after a vexd restart: MIGRATION_FAILED", since, timeout=90)
    note("both vexds -9, source back alone", f"unknown after {unknown_for:.1f} s, then FAILED: resumed here",
         time.time() - restarted)
    expect_on_exactly(src_fin, dst, vm)


TESTS = [
    test_dst_worker_killed_during_precopy,
    test_dst_worker_killed_after_final_state,
    test_src_vexd_killed_before_confirm,
    test_src_vexd_killed_before_finish,
    test_src_vexd_killed_before_verified,
    test_src_vexd_killed_during_precopy,
    test_dst_vexd_restarted_uncommitted,
    test_outcome_unknown_until_destination_returns,
]


def make_hosts(lab):
    """A plain source, two sources with a fault-injection window, one destination."""
    src = lab.add_host("src")
    src_fin = lab.add_host("src", extra_flags=[f"--testing_delay_before_finish_ms={DELAY_MS}"], name="src-fin")
    src_conf = lab.add_host("src", extra_flags=[f"--testing_delay_before_confirm_ms={DELAY_MS}"], name="src-conf")
    dst = lab.add_host("dst")
    return src, src_fin, src_conf, dst


def print_timings():
    print("\nfault recovery timings (numbers, not assertions):")
    for name, what, seconds in timings:
        print(f"  {name:<36} {seconds:>6.1f} s  {what}")


def main():
    return run_scenarios("fault_recovery_test", TESTS, make_hosts, summary=print_timings)


if __name__ == "__main__":
    sys.exit(main())
