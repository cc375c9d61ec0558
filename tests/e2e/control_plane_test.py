#!/usr/bin/env python3
"""End-to-end test of the control plane, as a user drives it: real `vexd` daemons, real
per-VM worker processes on real /dev/kvm, and the `vexctl` CLI. The guest witness decides:
a scenario passes only when the guest's own report ("VEX EXC ... vec=...") shows up in
`vexctl events` exactly once.

Writes a JUnit XML report to $XML_OUTPUT_FILE (Bazel), one test case per scenario.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET

RUNFILES = os.environ.get("TEST_SRCDIR", "")
WORKSPACE = os.environ.get("TEST_WORKSPACE", "vexstate")


def runfile(path):
    for base in (os.path.join(RUNFILES, WORKSPACE), os.getcwd()):
        candidate = os.path.join(base, path)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(path)


VEXD = runfile("server/vexd")
WORKER = runfile("server/worker/vexd_worker")
VEXCTL = runfile("client/vexctl")
CORPUS = os.path.dirname(runfile("tests/data/snapshots/x86_mce_bank3.vexsnap"))

MC_STATUS = "0xbc0000000000009f"

# The witness checks the two-host tests use too: one definition of a failure and of a vector.
sys.path.insert(0, os.path.dirname(runfile("tools/two_hosts.py")))
from two_hosts import Failure, check, vec  # noqa: E402


class Vexd:
    """A vexd daemon on its own state dir, with operator and viewer tokens."""

    def __init__(self, root):
        self.state = os.path.join(root, "state")
        os.makedirs(self.state, exist_ok=True)
        self.socket = os.path.join(self.state, "vexd.sock")
        self.tokens = os.path.join(root, "tokens")
        with open(self.tokens, "w") as f:
            f.write("op-token-1234567890 operator ops\nview-token-1234567890 viewer auditor\n")
        os.chmod(self.tokens, 0o600)
        self.proc = None
        self.log = os.path.join(root, "vexd.log")

    def start(self):
        logf = open(self.log, "a")
        self.proc = subprocess.Popen(
            [VEXD, f"--state_dir={self.state}", f"--listen=unix:{self.socket}", f"--tokens={self.tokens}",
             f"--worker_binary={WORKER}"], stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"vexd exited with {self.proc.returncode}: {open(self.log).read()[-2000:]}")
            if os.path.exists(self.socket) and self.ctl("vm", "list", check_rc=False).returncode == 0:
                return
            time.sleep(0.1)
        raise Failure("vexd did not come up within 30 s")

    def stop(self, sig=signal.SIGTERM):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def ctl(self, *args, token="op-token-1234567890", check_rc=True, json_out=False, timeout=60):
        cmd = [VEXCTL, f"--host=unix:{self.socket}"]
        if token is not None:
            cmd.append(f"--token={token}")
        if json_out:
            cmd.append("--json")
        cmd += list(args)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if check_rc and proc.returncode != 0:
            raise Failure(f"{' '.join(args)} -> exit {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def json(self, *args, **kw):
        out = self.ctl(*args, json_out=True, **kw).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def guest_reports(self, vm, kind=None):
        """Every guest report line vexd holds for `vm` (replayed)."""
        events = self.json("events", vm)
        lines = []
        for e in events:
            report = e.get("guest_report")
            if report and (kind is None or report.get("kind") == kind):
                lines.append(report)
        return lines

    def wait_reports(self, vm, kind, predicate, count, timeout=15.0):
        deadline = time.time() + timeout
        while True:
            got = [r for r in self.guest_reports(vm, kind) if predicate(r)]
            if len(got) >= count or time.time() > deadline:
                return got
            time.sleep(0.3)

    def vm_state(self, vm):
        return self.json("vm", "show", vm)[0]["state"]

    def wait_ready(self, vm, vcpus=1):
        got = self.wait_reports(vm, "READY", lambda r: True, vcpus, timeout=30)
        check(len(got) >= vcpus, f"{vm}: guest never reported READY ({len(got)} of {vcpus})")


def create_running(vexd, name, vcpus=1, extra=()):
    vexd.ctl("vm", "create", name, "--arch", "x86_64", "--vcpus", str(vcpus), "--memory-mib", "16", "--guest",
             "witness", *extra)
    vexd.ctl("vm", "start", name)
    vexd.wait_ready(name, vcpus)


def snapshot_cycle(vexd, tmp, name, inject_args, expect_vec, pending_words):
    """create, start, pause, inject, pending, save, stop, restore, resume: taken once."""
    create_running(vexd, name)
    vexd.ctl("vm", "pause", name)
    vexd.ctl("inject", *inject_args)
    pending = vexd.ctl("pending", name).stdout
    for word in pending_words:
        check(word in pending, f"`vexctl pending {name}` does not show {word!r}:\n{pending}")
    before = vexd.guest_reports(name, "EXC")
    check(not before, f"{name}: the source guest took it before the snapshot: {before}")
    path = os.path.join(tmp, f"{name}.vexsnap")
    vexd.ctl("snapshot", "save", name, path)
    vexd.ctl("vm", "stop", name)
    vexd.ctl("vm", "delete", name)
    inspect = vexd.ctl("snapshot", "inspect", path).stdout
    check(any(w in inspect for w in pending_words), f"snapshot inspect does not show the pending item:\n{inspect}")
    restored = name + "-r"
    vexd.ctl("snapshot", "restore", path, "--name", restored)
    check(vexd.vm_state(restored) == "VM_PAUSED", f"restored VM is {vexd.vm_state(restored)}, not paused")
    vexd.ctl("vm", "resume", restored)
    taken = vexd.wait_reports(restored, "EXC", lambda r: vec(r) == expect_vec, 1)
    time.sleep(0.5)
    taken = [r for r in vexd.guest_reports(restored, "EXC")]
    check(len(taken) == 1 and vec(taken[0]) == expect_vec,
          f"{restored}: expected exactly one EXC vec={expect_vec}, got {[r['line'] for r in taken]}")
    return taken[0]


def test_mce_snapshot_restore(vexd, tmp):
    report = snapshot_cycle(vexd, tmp, "mce", ["mce", "mce", "--vcpu", "0", "--bank", "3", "--status", MC_STATUS,
                                               "--addr", "0x12345000", "--misc", "0x86", "--mcg-status", "0x5"],
                            18, ["#MC", "bank 3", "VAL|UC|EN"])
    banks = vexd.guest_reports("mce-r", "MCB")
    check(len(banks) == 1, f"expected one MCB report, got {banks}")
    fields = banks[0]["fields"]
    check(int(fields["bank"]) == 3 and int(fields["status"]) == int(MC_STATUS, 16) and
          int(fields["addr"]) == 0x12345000, f"bank values wrong: {banks[0]['line']}")


def test_pf_payload_snapshot_restore(vexd, tmp):
    report = snapshot_cycle(vexd, tmp, "pf", ["exception", "pf", "--vcpu", "0", "--vector", "14", "--error-code",
                                              "0x2", "--payload", "0xdead000"], 14, ["#PF", "0xdead000"])
    check(int(report["fields"]["cr2"]) == 0xdead000 and int(report["fields"]["err"]) == 2,
          f"CR2/error code lost: {report['line']}")


def test_nmi_snapshot_restore(vexd, tmp):
    snapshot_cycle(vexd, tmp, "nmi", ["nmi", "nmi", "--vcpu", "0"], 2, ["NMI"])


def test_worker_kill_is_contained(vexd, tmp):
    create_running(vexd, "victim")
    create_running(vexd, "bystander")
    info = vexd.json("vm", "show", "victim")[0]
    pid = int(info["worker_pid"])
    os.kill(pid, signal.SIGKILL)
    deadline = time.time() + 10
    while vexd.vm_state("victim") != "VM_CRASHED" and time.time() < deadline:
        time.sleep(0.2)
    check(vexd.vm_state("victim") == "VM_CRASHED", f"victim is {vexd.vm_state('victim')} after kill -9")
    check(vexd.json("vm", "show", "victim")[0].get("error"), "a crashed VM must say why")
    check(vexd.vm_state("bystander") == "VM_RUNNING", "the other VM stopped running")
    vexd.ctl("inject", "nmi", "bystander", "--vcpu", "0", "--pause-around")
    got = vexd.wait_reports("bystander", "EXC", lambda r: vec(r) == 2, 1)
    check(len(got) == 1, "vexd no longer serves the other VM")


def test_vexd_restart_reattaches(vexd, tmp):
    create_running(vexd, "durable")
    vexd.ctl("vm", "pause", "durable")
    vexd.ctl("inject", "mce", "durable", "--vcpu", "0", "--bank", "3", "--status", MC_STATUS, "--mcg-status", "0x5")
    pid = vexd.json("vm", "show", "durable")[0]["worker_pid"]
    vexd.stop()
    vexd.start()
    info = vexd.json("vm", "show", "durable")[0]
    check(info["state"] == "VM_PAUSED" and info["worker_pid"] == pid,
          f"after restart: {info['state']} pid {info['worker_pid']} (was VM_PAUSED pid {pid})")
    pending = vexd.ctl("pending", "durable").stdout
    check("#MC" in pending and "bank 3" in pending, f"pending state lost across the restart:\n{pending}")
    vexd.ctl("vm", "resume", "durable")
    got = vexd.wait_reports("durable", "EXC", lambda r: vec(r) == 18, 1)
    time.sleep(0.5)
    check(len(vexd.guest_reports("durable", "EXC")) == 1, "the #MC was not taken exactly once after re-attach")


def expect_code(proc, code, what):
    check(proc.returncode != 0, f"{what}: succeeded, expected {code}")
    check(code in proc.stderr, f"{what}: expected {code}, got: {proc.stderr.strip()}")


def test_auth_and_bad_input(vexd, tmp):
    create_running(vexd, "guarded")
    vexd.ctl("vm", "pause", "guarded")
    before = vexd.json("state", "guarded")
    expect_code(vexd.ctl("inject", "nmi", "guarded", "--vcpu", "0", token="view-token-1234567890", check_rc=False),
                "PERMISSION_DENIED", "viewer injects")
    check(vexd.ctl("pending", "guarded", token="view-token-1234567890", check_rc=False).returncode == 0,
          "a viewer may query")
    expect_code(vexd.ctl("vm", "list", token=None, check_rc=False), "UNAUTHENTICATED", "no token")
    expect_code(vexd.ctl("vm", "list", token="nope", check_rc=False), "UNAUTHENTICATED", "unknown token")
    expect_code(vexd.ctl("inject", "exception", "guarded", "--vcpu", "0", "--vector", "32", check_rc=False),
                "INVALID_ARGUMENT", "vector 32")
    expect_code(vexd.ctl("inject", "mce", "guarded", "--vcpu", "0", "--bank", "3", "--status", "0x1",
                         check_rc=False), "INVALID_ARGUMENT", "MCi_STATUS without VAL")
    expect_code(vexd.ctl("inject", "nmi", "guarded", "--vcpu", "9", check_rc=False), "NOT_FOUND", "unknown vCPU")
    expect_code(vexd.ctl("inject", "nmi", "ghost", "--vcpu", "0", check_rc=False), "NOT_FOUND", "unknown VM")
    check(vexd.json("state", "guarded") == before, "a refused request changed the VM's state")
    # Corrupt and truncated snapshots: DATA_LOSS, and no VM appears.
    good = os.path.join(tmp, "good.vexsnap")
    vexd.ctl("snapshot", "save", "guarded", good)
    data = open(good, "rb").read()
    corrupt = os.path.join(tmp, "corrupt.vexsnap")
    with open(corrupt, "wb") as f:
        f.write(data[:5000] + bytes([data[5000] ^ 0xff]) + data[5001:])
    truncated = os.path.join(tmp, "truncated.vexsnap")
    with open(truncated, "wb") as f:
        f.write(data[: len(data) // 2])
    vms_before = sorted(v["name"] for v in vexd.json("vm", "list")[0].get("vms", []))
    for bad in (corrupt, truncated):
        expect_code(vexd.ctl("snapshot", "restore", bad, "--name", "bad", check_rc=False), "DATA_LOSS", bad)
        expect_code(vexd.ctl("snapshot", "inspect", bad, check_rc=False), "DATA_LOSS", bad)
    vms_after = sorted(v["name"] for v in vexd.json("vm", "list")[0].get("vms", []))
    check(vms_before == vms_after, f"a refused restore created a VM: {vms_before} -> {vms_after}")


def parse_expect(path):
    controls, lines = [], []
    for raw in open(path):
        raw = raw.strip()
        if not raw or raw.startswith("#"):
            continue
        if raw.startswith("control "):
            controls.append(raw.split()[1:])
        else:
            lines.append(raw)
    return controls, lines


def matches(reports, expected_line):
    """How many reports have the expected kind and every field value the .expect line lists
    (the format of tests/data/snapshots/README.md: a subset of the guest's fields)."""
    words = expected_line.split()
    kind = words[1]
    wanted = {k: int(v, 0) for k, v in (w.split("=", 1) for w in words[2:])}
    n = 0
    for r in reports:
        fields = r.get("fields", {})
        if r.get("kind") == kind and all(k in fields and int(fields[k]) == v for k, v in wanted.items()):
            n += 1
    return n


def test_replay_corpus(vexd, tmp):
    files = sorted(f for f in os.listdir(CORPUS) if f.endswith(".vexsnap"))
    check(files, f"no snapshots in {CORPUS}")
    for i, name in enumerate(files):
        vm = f"corpus{i}"
        controls, expected = parse_expect(os.path.join(CORPUS, name[: -len(".vexsnap")] + ".expect"))
        vexd.ctl("snapshot", "restore", os.path.join(CORPUS, name), "--name", vm)
        for control in controls:
            args = []
            for kv in control:
                key, value = kv.split("=", 1)
                args += ["--" + key.replace("_", "-"), value]
            vexd.ctl("guest", vm, "settings", *args)
        vexd.ctl("vm", "resume", vm)
        deadline = time.time() + 15
        while True:
            reports = vexd.guest_reports(vm)
            if all(matches(reports, e) >= 1 for e in expected) or time.time() > deadline:
                break
            time.sleep(0.3)
        time.sleep(0.5)
        reports = vexd.guest_reports(vm)
        for e in expected:
            check(matches(reports, e) == 1,
                  f"{name}: expected {e!r} exactly once; guest said: {[r['line'] for r in reports]}")
        vexd.ctl("vm", "stop", vm)
        vexd.ctl("vm", "delete", vm)


TESTS = [
    test_mce_snapshot_restore,
    test_pf_payload_snapshot_restore,
    test_nmi_snapshot_restore,
    test_worker_kill_is_contained,
    test_vexd_restart_reattaches,
    test_auth_and_bad_input,
    test_replay_corpus,
]


def main():
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("/dev/kvm is not usable: this test needs real KVM", file=sys.stderr)
        return 1
    # Not TEST_TMPDIR: Unix socket paths must stay under 108 bytes.
    root = tempfile.mkdtemp(prefix="vx-e2e-", dir="/tmp")
    suite = ET.Element("testsuite", name="control_plane_test")
    failures = 0
    vexd = Vexd(root)
    vexd.start()
    try:
        for test in TESTS:
            start = time.time()
            case = ET.SubElement(suite, "testcase", name=test.__name__, classname="control_plane_test")
            try:
                test(vexd, root)
                print(f"[       OK ] {test.__name__} ({time.time() - start:.1f} s)", flush=True)
            except Exception as e:  # noqa: BLE001 - every failure is reported, then the next runs
                failures += 1
                detail = traceback.format_exc() if not isinstance(e, Failure) else str(e)
                ET.SubElement(case, "failure", message=str(e)[:500]).text = detail
                print(f"[  FAILED  ] {test.__name__}: {detail}", flush=True)
            case.set("time", f"{time.time() - start:.2f}")
    finally:
        vexd.stop()
        # Workers outlive vexd by design: stop the ones this test started.
        subprocess.run(["pkill", "-TERM", "-f", f"--socket={vexd.state}"], check=False)
        subprocess.run(["pkill", "-TERM", "-f", f"--socket {vexd.state}"], check=False)
        if failures:
            print(f"vexd log: {vexd.log}\n" + open(vexd.log).read()[-4000:])
    suite.set("tests", str(len(TESTS)))
    suite.set("failures", str(failures))
    out = os.environ.get("XML_OUTPUT_FILE")
    if out:
        ET.ElementTree(ET.Element("testsuites")).getroot().append(suite)
        root_el = ET.Element("testsuites")
        root_el.append(suite)
        ET.ElementTree(root_el).write(out)
    print(f"{len(TESTS) - failures} passed, {failures} failed")
    shutil.rmtree(root, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
