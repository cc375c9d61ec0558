#!/usr/bin/env python3
"""Faults of a live migration between two real vexd hosts (network namespaces joined by a veth
pair), driven through vexctl as an operator would; the witness guest judges.

Scenarios, each with a pending exception (#MC, or an NMI pending while NMIs are masked) and the
dirtying workload, each ending with the VM running on exactly one host, the guest taking the
exception exactly once there and never on the other, its memory check clean, and nothing left
on the destination (no hidden incoming VM, no incoming worker process):
  cancel_in_*       CancelMigration in BEGIN, PREPARE, PRECOPY, STOP_AND_COPY: CANCELLED, the VM
                    runs on the source (and migrates afterwards: no stale cancel); in FINISH (after
                    commit_sent): refused with FAILED_PRECONDITION and the migration completes.
                    The source vexd holds the phase with the test-only hook
                    VEXSTATE_TESTING_PHASE_DELAY (migration/testing_phase_delay.h); the test
                    cancels once `vexctl migrate-status` shows the phase.
  corrupted_chunk_* one byte of one page run flipped after its CRC32C (test-only hook
                    VEXSTATE_TESTING_CORRUPT_RUN, migration/testing_corrupt_run.h), in pre-copy
                    and after the pause: FAILED naming the run, the VM keeps running on the source.
  replayed_*        a completed migration's id is refused by a new Prepare; a stand-in source
                    (peer_client, with the lab's client certificate) shows a wrong token refused,
                    the right one accepted once, its replay refused, and a used id refused.
  late_cancel       a cancel that reaches the source worker after a transfer ended (vexd forwards
                    CancelMigration outside its lock) does not cancel the VM's next migration.

Needs root (ip netns) and real KVM. Writes a JUnit XML report to $XML_OUTPUT_FILE.
"""
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lab_support import (CORRUPT_RUN, MC_ARGS, MC_STATUS, NMI_HOLD_MASK, PHASE_DELAY, WORKLOAD, Failure,  # noqa: E402
                         check, exc_reports, hold_nmi_and_make_one_pending, journal_holds, last_sequence,
                         migration_id_of, parse_migration, release_nmi_and_expect_once, run_scenarios, runfile,
                         vec)

PEER_CLIENT = runfile("tests/migration/peer_client")

HOLD_MS = 3000  # how long the hook holds a phase: the test needs well under a second to cancel


def wait_until(what, predicate, timeout=30.0, interval=0.05):
    deadline = time.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        check(time.time() < deadline, f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# ---------------------------------------------------------------------------- the pending exception


class PendingNmi:
    """vCPU 1 holds in its NMI handler (NMIs masked) and a second NMI is pending while the VM runs
    the workload on vCPU 0. The pending NMI is vCPU 1's second exception since boot (seq 2)."""
    name = "NMI pending while masked"

    @staticmethod
    def create(host, vm):
        host.create_running(vm, vcpus=2, extra=[*WORKLOAD, "--hold-mask", NMI_HOLD_MASK])
        time.sleep(1.5)  # the workload touches its working set
        hold_nmi_and_make_one_pending(host, vm)

    expect_taken_once = staticmethod(release_nmi_and_expect_once)

    @staticmethod
    def expect_not_taken(host, vm):
        # The source's history holds the first, held NMI (seq 1) when the VM left it; never seq 2.
        taken = [r["line"] for r in exc_reports(host, vm, 2) if int(r["fields"]["seq"]) >= 2]
        check(not taken, f"{host.name}/{vm}: the guest took the pending NMI here too: {taken}")


class PendingMc:
    """A #MC in bank 3 pending in a paused VM (a running vCPU would take it at once)."""
    name = "#MC pending"

    @staticmethod
    def create(host, vm):
        host.create_running(vm, extra=WORKLOAD)
        time.sleep(1.5)
        host.ctl("vm", "pause", vm)
        host.ctl("inject", "mce", vm, "--vcpu", "0", *MC_ARGS)
        check("#MC" in host.ctl("pending", vm).stdout, f"{host.name}/{vm}: no #MC pending")

    @staticmethod
    def expect_taken_once(host, vm):
        if host.vm_state(vm) == "VM_PAUSED":
            host.ctl("vm", "resume", vm)  # paused before the migration: it stays paused until now
        host.wait_reports(vm, "EXC", lambda r: vec(r) == 18, 1)
        time.sleep(0.5)
        got = exc_reports(host, vm, 18)
        check(len(got) == 1, f"{host.name}/{vm}: expected the #MC exactly once, got {[r['line'] for r in got]}")
        banks = [b for b in host.guest_reports(vm, "MCB") if int(b["fields"]["bank"]) == 3]
        check(len(banks) == 1 and int(banks[0]["fields"]["status"]) == int(MC_STATUS, 16),
              f"{host.name}/{vm}: bank 3 as the guest read it: {banks}")

    @staticmethod
    def expect_not_taken(host, vm):
        taken = [r["line"] for r in exc_reports(host, vm, 18)]
        check(not taken, f"{host.name}/{vm}: the guest took the #MC here too: {taken}")


# ---------------------------------------------------------------------------- checks


def expect_runs_only_on(where, other, vm, pending):
    """The VM runs on `where` only; the guest takes the exception once there, never on `other`;
    its memory check is clean; `other` (if it was the destination) kept nothing of it."""
    check(vm in where.vm_names(), f"{vm} is not listed on {where.name}")
    check(vm not in other.vm_names(), f"{vm} is listed on {other.name} too")
    state = where.vm_state(vm)
    check(state in ("VM_RUNNING", "VM_PAUSED"), f"{where.name}/{vm} is {state}")
    pending.expect_taken_once(where, vm)
    check(where.vm_state(vm) == "VM_RUNNING", f"{where.name}/{vm} is {where.vm_state(vm)}")
    pending.expect_not_taken(other, vm)
    memcheck = where.memcheck(vm)
    check(memcheck.get("bad", -1) == 0 and memcheck.get("pages", 0) > 0, f"{where.name}/{vm}: memcheck {memcheck}")


def expect_no_incoming_left(dst):
    """No hidden incoming VM: no incoming worker process, nothing in the destination's records."""
    try:
        wait_until("hidden workers to exit", lambda: not dst.hidden_workers(), 10)
    except Failure:
        raise Failure(f"{dst.name}: workers of VMs it does not list are left: {dst.hidden_workers()}")
    vms_dir = os.path.join(dst.state, "vms")
    listed = set(dst.vm_names())
    stray = [f for f in (os.listdir(vms_dir) if os.path.isdir(vms_dir) else []) if f.rsplit(".", 1)[0] not in listed]
    check(not stray, f"{dst.name}: files of VMs it does not list: {stray}")



def lifecycle_since(host, vm, sequence, state):
    """The reasons of `vm`'s lifecycle events to `state` after event `sequence`."""
    return [e["lifecycle"].get("reason", "") for e in host.events(vm)
            if int(e.get("sequence", "0")) > sequence and e.get("lifecycle", {}).get("state") == state]


def expect_outcome(migrated, outcome):
    rc, result, _, stderr = migrated
    check(result is not None, f"no migration result (exit {rc}): {stderr}")
    check(result.get("outcome") == outcome, f"{result.get('outcome')} (exit {rc}), expected {outcome}: "
          f"{result.get('error') or stderr}")
    check((rc == 0) == (outcome == "MIGRATION_COMPLETED"), f"vexctl migrate exited {rc} for {outcome}")
    return result


def migrate_afterwards(src, dst, vm):
    """Positive control after a failed or cancelled migration: the same VM migrates, and an NMI
    injected afterwards is taken once on the destination (nothing stale cancels or breaks it)."""
    expect_outcome(src.migrate(vm, dst, "--max-downtime-ms", "300"), "MIGRATION_COMPLETED")
    check(vm not in src.vm_names() and dst.vm_state(vm) == "VM_RUNNING", f"{vm} did not move on the retry")
    before = len(exc_reports(dst, vm, 2))
    dst.ctl("inject", "nmi", vm, "--vcpu", "0", "--pause-around")
    got = wait_until("the NMI after the move", lambda: len(exc_reports(dst, vm, 2)) > before and
                     exc_reports(dst, vm, 2), 15)
    time.sleep(0.5)
    check(len(exc_reports(dst, vm, 2)) == before + 1, f"{dst.name}/{vm}: NMIs after the move: {got}")


def stop_everywhere(vm, *hosts):
    """Spinning guests share two cores: stop each scenario's VM before the next one."""
    for host in hosts:
        if host.proc and host.proc.poll() is None and vm in host.vm_names():
            host.ctl("vm", "stop", vm, check_rc=False)


class BackgroundMigration:
    """`vexctl --json migrate` running while the test acts on the migration."""

    def __init__(self, src, dst, vm, *flags):
        self.cmd = src.migrate_cmd(vm, dst, *flags)
        self.out = tempfile.TemporaryFile(mode="w+")
        self.err = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(self.cmd, stdout=self.out, stderr=self.err, text=True)

    def wait(self, timeout=180):
        try:
            self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        self.out.seek(0)
        self.err.seek(0)
        return parse_migration(subprocess.CompletedProcess(self.cmd, self.proc.returncode, self.out.read(),
                                                           self.err.read()))


# ---------------------------------------------------------------------------- cancel in every phase


def wait_for_phase(src, vm, phase, extra=lambda status: True):
    def there():
        status = src.migration_status(vm)
        return status if status and status.get("phase") == f"MIGRATION_{phase}" and extra(status) else None

    return wait_until(f"migrate-status {vm} to show {phase}", there, timeout=60)


def cancel_in(lab, dst, phase, pending):
    vm = "c-" + {"STOP_AND_COPY": "stopcopy"}.get(phase, phase.lower())
    # Short host names: the state dir is part of each VM's Unix socket path (at most 107 bytes).
    src = lab.add_host("src", name="s" + vm, env={PHASE_DELAY: f"{phase}:{HOLD_MS}"})
    try:
        pending.create(src, vm)
        before = last_sequence(src, vm)
        migration = BackgroundMigration(src, dst, vm, "--max-downtime-ms", "300")
        if phase == "PRECOPY":
            wait_for_phase(src, vm, phase, lambda s: int(s.get("last_progress", {}).get("pages_sent", "0")) > 0)
        else:
            wait_for_phase(src, vm, phase)
        if phase == "PREPARE":
            # The destination's incoming worker exists: the cancel must not leave it behind.
            wait_until("the destination's incoming worker", dst.hidden_workers, 30)
        cancel = src.ctl("migrate-cancel", vm, check_rc=False)
        migrated = migration.wait()
        print(f"    migrate-cancel in {phase}: exit {cancel.returncode} {cancel.stderr.strip()}")
        print(f"    migration: {(migrated[1] or {}).get('outcome')}: {(migrated[1] or {}).get('error', '')}")
        if phase == "FINISH":
            # Past the commit point only the destination's answer decides: refused, and it completes.
            check(cancel.returncode != 0 and "FAILED_PRECONDITION" in cancel.stderr,
                  f"a cancel after commit_sent was not refused with FAILED_PRECONDITION: exit {cancel.returncode} "
                  f"{cancel.stderr.strip()}")
            expect_outcome(migrated, "MIGRATION_COMPLETED")
            expect_no_incoming_left(dst)
            expect_runs_only_on(dst, src, vm, pending)
        else:
            check(cancel.returncode == 0, f"migrate-cancel in {phase} failed: {cancel.stderr.strip()}")
            expect_outcome(migrated, "MIGRATION_CANCELLED")
            if pending is PendingNmi:
                # The hold really was where the phase says: only stop-and-copy paused the guest.
                paused = lifecycle_since(src, vm, before, "VM_PAUSED")
                check(bool(paused) == (phase == "STOP_AND_COPY"),
                      f"cancel in {phase}: the source paused {len(paused)} times: {paused}")
            expect_no_incoming_left(dst)
            expect_runs_only_on(src, dst, vm, pending)
            migrate_afterwards(src, dst, vm)
            expect_no_incoming_left(dst)
    finally:
        stop_everywhere(vm, src, dst)
        src.stop()


def cancel_test(phase, pending):
    def test(lab, dst):
        cancel_in(lab, dst, phase, pending)

    test.__name__ = f"test_cancel_in_{phase.lower()}" + ("_refused" if phase == "FINISH" else "")
    return test


CANCEL_TESTS = [cancel_test(phase, pending) for phase, pending in (
    ("BEGIN", PendingMc), ("PREPARE", PendingMc), ("PRECOPY", PendingNmi), ("STOP_AND_COPY", PendingNmi),
    ("FINISH", PendingNmi))]


# ---------------------------------------------------------------------------- one corrupted chunk


def corrupted_chunk(lab, dst, hook, flags):
    vm = "corrupt" + hook.replace("@", "r")
    src = lab.add_host("src", name="s" + vm, env={CORRUPT_RUN: hook})
    try:
        PendingNmi.create(src, vm)
        migrated = src.migrate(vm, dst, *flags)
        result = expect_outcome(migrated, "MIGRATION_FAILED")
        error = result.get("error", "")
        # After the pause the commit intent was journalled (at stop-and-copy): the failed
        # verification must have withdrawn it, or a restarted vexd would settle it again.
        check(not journal_holds(src, vm, migration_id_of(migrated)),
              "the source's journal still holds the failed migration")
        print(f"    {CORRUPT_RUN}={hook}: {error}")
        flipped = re.search(r"TESTING HOOK " + CORRUPT_RUN + r": flipped a bit of run \d+ \(gpa (0x[0-9a-f]+), "
                            r"(\d+) pages, round (\d+)\)", src.worker_logs())
        check(flipped, f"the source worker's log does not show the flipped run: {src.worker_logs()[-2000:]}")
        print(f"    the source worker flipped run gpa {flipped.group(1)} ({flipped.group(2)} pages, "
              f"round {flipped.group(3)})")
        # The destination names the run it refused, and applied none of its batch.
        check(f"page run at gpa {flipped.group(1)} ({flipped.group(2)} pages)" in error and "not applied" in error,
              f"the error does not name the corrupted run (gpa {flipped.group(1)}): {error}")
        check("CRC" in error, f"the error does not say the CRC failed: {error}")
        expect_no_incoming_left(dst)
        expect_runs_only_on(src, dst, vm, PendingNmi)
    finally:
        stop_everywhere(vm, src, dst)
        src.stop()


def test_corrupted_chunk_in_precopy(lab, dst):
    # The second page run of the stream: round 0, the VM running.
    corrupted_chunk(lab, dst, "2", ["--max-downtime-ms", "300"])


def test_corrupted_chunk_after_pause(lab, dst):
    # One pre-copy round, then the first run of the stop-and-copy round: the VM is paused by the
    # migration and must run again on the source.
    corrupted_chunk(lab, dst, "1@1", ["--max-downtime-ms", "300", "--max-rounds", "1"])


# ---------------------------------------------------------------------------- replayed token / id


def peer_client(lab, dst, command, **flags):
    """peer_client from inside the source namespace: {"RESULT": "CODE message", ...}."""
    cmd = lab.in_netns("src", PEER_CLIENT, command, f"--tls_dir={lab.tls_dir}",
                       *[f"--{k}={v}" for k, v in flags.items()])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    check(proc.returncode == 0, f"peer_client {command} exited {proc.returncode}: {proc.stderr.strip()}")
    out = dict(line.split(" ", 1) for line in proc.stdout.splitlines() if " " in line)
    print(f"    peer_client {command} {flags.get('migration_id', '')}: {out['RESULT']}")
    return out


def test_replayed_migration_id_after_completed(lab, dst):
    src = lab.add_host("src", name="sreplay")
    vm = "replay"
    try:
        PendingMc.create(src, vm)
        migrated = src.migrate(vm, dst, "--max-downtime-ms", "300")
        expect_outcome(migrated, "MIGRATION_COMPLETED")
        migration_id = migrated[2][-1]["migration_id"]
        expect_runs_only_on(dst, src, vm, PendingMc)
        # A Prepare presenting that id again (a replayed or duplicated Prepare) is refused.
        again = peer_client(lab, dst, "prepare", peer=f"{dst.ip}:{dst.port}", migration_id=migration_id,
                            vm_name="replay2")
        if "TOKEN" in again:  # accepted (the defect this checks): leave nothing for the next scenario
            peer_client(lab, dst, "finish", peer=f"{dst.ip}:{dst.port}", migration_id=migration_id)
        check("TOKEN" not in again and not again["RESULT"].startswith("OK"),
              f"a Prepare with the used id {migration_id} was accepted: {again}")
        check(migration_id in again["RESULT"], f"the refusal does not name the id: {again['RESULT']}")
        check("replay2" not in dst.vm_names(), "the refused Prepare left a VM")
        expect_no_incoming_left(dst)
    finally:
        stop_everywhere(vm, src, dst)
        src.stop()


def test_replayed_token_after_failed(lab, dst):
    peer = f"{dst.ip}:{dst.port}"
    migration_id = f"replay-{lab.tag}"
    prepared = peer_client(lab, dst, "prepare", peer=peer, migration_id=migration_id)
    check(prepared["RESULT"].startswith("OK"), f"Prepare refused: {prepared}")
    endpoint, token = prepared["ENDPOINT"], prepared["TOKEN"]
    wrong = ("0" if token[0] != "0" else "1") + token[1:]
    # Negative control first: a wrong token is refused and does not use the right one up.
    refused = peer_client(lab, dst, "stream", endpoint=endpoint, migration_id=migration_id, token_hex=wrong)
    check(refused["RESULT"].startswith("UNAUTHENTICATED"), f"a wrong token was not refused: {refused}")
    # The right token is accepted once: the stream then ends before any state (a failed migration).
    first = peer_client(lab, dst, "stream", endpoint=endpoint, migration_id=migration_id, token_hex=token)
    check(first["RESULT"].startswith("DATA_LOSS"), f"the first stream with the right token: {first}")
    # The same token again: refused, whatever state the migration is in.
    replay = peer_client(lab, dst, "stream", endpoint=endpoint, migration_id=migration_id, token_hex=token)
    check(replay["RESULT"].startswith("UNAUTHENTICATED") and "already used" in replay["RESULT"],
          f"a replayed token was not refused: {replay}")
    finish = peer_client(lab, dst, "finish", peer=peer, migration_id=migration_id, commit="true")
    check(not finish["RESULT"].startswith("OK") or finish.get("PHASE") != "MIGRATION_COMPLETED",
          f"a failed transfer committed: {finish}")
    discarded = peer_client(lab, dst, "finish", peer=peer, migration_id=migration_id)
    check(discarded.get("PHASE") == "MIGRATION_FAILED", f"the discard: {discarded}")
    expect_no_incoming_left(dst)
    # After the discard: the token opens nothing, and the id cannot be prepared again.
    late = peer_client(lab, dst, "stream", endpoint=endpoint, migration_id=migration_id, token_hex=token)
    check(not late["RESULT"].startswith(("OK", "DATA_LOSS")), f"a replay after the discard got in: {late}")
    again = peer_client(lab, dst, "prepare", peer=peer, migration_id=migration_id, vm_name="replayed2")
    if "TOKEN" in again:  # accepted (the defect this checks): leave nothing for the next scenario
        peer_client(lab, dst, "finish", peer=peer, migration_id=migration_id)
    check(not again["RESULT"].startswith("OK") and migration_id in again["RESULT"],
          f"a Prepare with the discarded id {migration_id} was not refused naming it: {again}")
    expect_no_incoming_left(dst)
    check(not [v for v in dst.vm_names() if v.startswith("replayed")], "a replayed VM is listed")


def test_late_cancel_does_not_cancel_the_next_migration(lab, dst):
    """A CancelMigration that crosses the end of a migration's transfer reaches the source worker
    when no migration runs there (vexd forwards it outside its lock). Sent straight to the worker,
    as vexd would: the VM's next migration must not inherit it."""
    src = lab.add_host("src", name="slate")
    vm = "late"
    try:
        PendingNmi.create(src, vm)
        check(list(src.workers().values()).count(vm) == 1, f"{src.name}: workers of {vm}: {src.workers()}")
        socket = os.path.join(src.state, "vms", vm + ".sock")
        out = subprocess.run([PEER_CLIENT, "worker-cancel", f"--worker_socket={socket}", "--tls_dir=" + lab.tls_dir],
                             capture_output=True, text=True, timeout=30)
        print(f"    CancelMigrateOut with no migration running: {out.stdout.strip()} {out.stderr.strip()}")
        check(out.returncode == 0 and out.stdout.startswith("RESULT OK"), f"worker-cancel: {out.stdout} {out.stderr}")
        expect_outcome(src.migrate(vm, dst, "--max-downtime-ms", "300"), "MIGRATION_COMPLETED")
        expect_no_incoming_left(dst)
        expect_runs_only_on(dst, src, vm, PendingNmi)
    finally:
        stop_everywhere(vm, src, dst)
        src.stop()


TESTS = [
    *CANCEL_TESTS,
    test_corrupted_chunk_in_precopy,
    test_corrupted_chunk_after_pause,
    test_replayed_migration_id_after_completed,
    test_replayed_token_after_failed,
    test_late_cancel_does_not_cancel_the_next_migration,
]


if __name__ == "__main__":
    sys.exit(run_scenarios("fault_stream_test", TESTS, lambda lab: (lab.add_host("dst"),)))
