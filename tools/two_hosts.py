"""Two vexd "hosts" on one machine, for the migration test and the migration demo.

As root each host is its own network namespace, the two joined by a veth pair (SRC_IP and
DST_IP on a /24); otherwise both share the loopback address. Each host runs its own vexd with
its own state dir, a Unix control socket (reachable from the root namespace: Unix sockets are
files, not network endpoints) and `--migration_listen tcp:IP:PORT` with mutual-TLS
certificates from tools/make_certs.sh. vexctl drives everything, as an operator would.

    with Lab(binaries) as lab:
        src = lab.add_host("src")
        dst = lab.add_host("dst", extra_flags=["--max_mce_banks", "10"])
        src.create_running("vm", ...)
        result, progress = src.migrate("vm", dst)

Everything the Lab made (namespaces, veth, daemons, their VM workers, temporary files) is
removed on exit, also after a failure.
"""
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET

SRC_IP = "10.77.0.1"
DST_IP = "10.77.0.2"
LOOPBACK_IP = "127.0.0.1"
OPERATOR_TOKEN = "op-token-1234567890"


class Failure(Exception):
    pass


def check(condition, message):
    if not condition:
        raise Failure(message)


class Binaries:
    def __init__(self, vexd, worker, vexctl, make_certs):
        self.vexd, self.worker, self.vexctl, self.make_certs = vexd, worker, vexctl, make_certs

    @classmethod
    def from_runfiles(cls, runfile):
        """The binaries of a Bazel test's runfiles; `runfile(path)` resolves a workspace path."""
        return cls(vexd=runfile("server/vexd"), worker=runfile("server/worker/vexd_worker"),
                   vexctl=runfile("client/vexctl"), make_certs=runfile("tools/make_certs.sh"))


def run(*cmd, check_rc=True, **kw):
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if check_rc and proc.returncode != 0:
        raise Failure(f"{' '.join(cmd)} -> exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


class Host:
    """One vexd: state dir, control socket, tokens, migration listener."""

    def __init__(self, lab, name, side, netns, ip, port, tls_dir, extra_flags, env=None):
        self.lab, self.name, self.side, self.netns, self.ip, self.port = lab, name, side, netns, ip, port
        root = os.path.join(lab.root, name)
        self.state = os.path.join(root, "s")
        os.makedirs(self.state)
        self.socket = os.path.join(self.state, "vexd.sock")
        self.tokens = os.path.join(root, "tokens")
        with open(self.tokens, "w") as f:
            f.write(f"{OPERATOR_TOKEN} operator ops\n")
        os.chmod(self.tokens, 0o600)
        self.log = os.path.join(root, "vexd.log")
        self.tls_dir = tls_dir
        self.extra_flags = list(extra_flags)
        # Added to vexd's environment (its workers inherit it): the VEXSTATE_TESTING_* hooks.
        self.env = dict(env or {})
        self.proc = None

    @property
    def migration_address(self):
        return f"tcp:{self.ip}:{self.port}"

    def start(self):
        cmd = [self.lab.bin.vexd, f"--state_dir={self.state}", f"--listen=unix:{self.socket}",
               f"--tokens={self.tokens}", f"--worker_binary={self.lab.bin.worker}",
               f"--migration_listen={self.migration_address}", f"--migration_tls_dir={self.tls_dir}",
               *self.extra_flags]
        if self.netns:
            cmd = ["ip", "netns", "exec", self.netns] + cmd  # ip execs vexd: same pid
        self.proc = subprocess.Popen(cmd, stdout=open(self.log, "a"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **self.env})
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise Failure(f"{self.name}: vexd exited with {self.proc.returncode}: {self.log_tail()}")
            if os.path.exists(self.socket) and self.ctl("vm", "list", check_rc=False).returncode == 0:
                return self
            time.sleep(0.1)
        raise Failure(f"{self.name}: vexd did not come up within 30 s: {self.log_tail()}")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        # Workers outlive vexd by design: stop this host's, found by pid through its state dir.
        for pid in pids_mentioning(self.state):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def workers(self):
        """This host's VM worker processes: {pid: VM name} (the name of the socket it serves)."""
        found = {}
        for pid in pids_mentioning(self.state):
            args = read_cmdline(pid).split(b"\0")
            if not args[0].endswith(b"vexd_worker"):
                continue
            for i, arg in enumerate(args):
                socket = arg[len(b"--socket="):] if arg.startswith(b"--socket=") else (
                    args[i + 1] if arg == b"--socket" and i + 1 < len(args) else None)
                if socket:
                    found[pid] = os.path.basename(socket.decode()).rsplit(".", 1)[0]
        return found

    def hidden_workers(self):
        """Workers of VMs this host does not list: incoming migrations not (yet) committed."""
        listed = set(self.vm_names())
        return {pid: vm for pid, vm in self.workers().items() if vm not in listed}

    def worker_logs(self):
        """Everything this host's VM workers wrote (their logs in the state dir)."""
        text = ""
        for root, _, files in os.walk(self.state):
            for f in files:
                if f.endswith(".log"):
                    with open(os.path.join(root, f), errors="replace") as log:
                        text += log.read()
        return text

    def kill(self):
        """SIGKILL: vexd dies without any cleanup; its workers (and their VMs) live on."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def worker_pids(self, vm):
        """The pids of this host's worker processes for `vm` (found by their socket path)."""
        return pids_mentioning(os.path.join(self.state, "vms", f"{vm}.sock"))

    def kill_worker(self, vm):
        pids = self.worker_pids(vm)
        check(len(pids) == 1, f"{self.name}: expected one worker of {vm}, found pids {pids}")
        os.kill(pids[0], signal.SIGKILL)
        return pids[0]

    def log_size(self):
        try:
            return os.path.getsize(self.log)
        except OSError:
            return 0

    def wait_log(self, needle, since=0, timeout=60.0):
        """Waits until vexd's log (from byte `since`) has a line containing `needle`; returns it."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            with open(self.log, errors="replace") as f:
                f.seek(since)
                for line in f.read().splitlines():
                    if needle in line:
                        return line
            time.sleep(0.1)
        raise Failure(f"{self.name}: no log line with {needle!r} within {timeout:.0f} s: {self.log_tail()}")

    def log_tail(self, n=3000):
        try:
            return open(self.log).read()[-n:]
        except OSError:
            return ""

    # ------------------------------------------------------------------------------ vexctl

    def ctl_cmd(self, *args, json_out=False):
        cmd = [self.lab.bin.vexctl, f"--host=unix:{self.socket}", f"--token={OPERATOR_TOKEN}"]
        if json_out:
            cmd.append("--json")
        return cmd + list(args)

    def ctl(self, *args, check_rc=True, json_out=False, timeout=60):
        proc = run(*self.ctl_cmd(*args, json_out=json_out), check_rc=False, timeout=timeout)
        if check_rc and proc.returncode != 0:
            raise Failure(f"{self.name}: vexctl {' '.join(args)} -> exit {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def json(self, *args, **kw):
        out = self.ctl(*args, json_out=True, **kw).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def events(self, vm):
        return self.json("events", vm)

    def guest_reports(self, vm, kind=None):
        return [e["guest_report"] for e in self.events(vm)
                if "guest_report" in e and (kind is None or e["guest_report"].get("kind") == kind)]

    def wait_reports(self, vm, kind, predicate, count, timeout=15.0):
        deadline = time.time() + timeout
        while True:
            got = [r for r in self.guest_reports(vm, kind) if predicate(r)]
            if len(got) >= count or time.time() > deadline:
                return got
            time.sleep(0.3)

    def vm_names(self):
        return sorted(v["name"] for v in self.json("vm", "list")[0].get("vms", []))

    def vm_state(self, vm):
        return self.json("vm", "show", vm)[0]["state"]

    def create_running(self, vm, vcpus=1, memory_mib=32, extra=()):
        self.ctl("vm", "create", vm, "--arch", "x86_64", "--vcpus", str(vcpus), "--memory-mib", str(memory_mib),
                 "--guest", "witness", *extra)
        self.ctl("vm", "start", vm)
        ready = self.wait_reports(vm, "READY", lambda r: True, vcpus, timeout=30)
        check(len(ready) >= vcpus, f"{self.name}/{vm}: the guest never reported READY ({len(ready)} of {vcpus})")

    def memcheck(self, vm):
        """The guest's own check of its workload pattern: the MEMCHECK report's fields."""
        response = self.json("guest", vm, "memcheck", "--wait-ms", "5000", timeout=30)[0]
        reports = [r for r in response.get("reports", []) if r.get("kind") == "MEMCHECK"]
        check(len(reports) == 1, f"{self.name}/{vm}: expected one MEMCHECK report, got {response}")
        return {k: int(v) for k, v in reports[0]["fields"].items()}

    def migrate_cmd(self, vm, dst, *flags, json_out=True):
        return self.ctl_cmd("migrate", vm, "--to", dst.migration_address, *flags, json_out=json_out)

    def migration_status(self, vm):
        """`vexctl --json migrate-status`: the MigrationStatus dict, or None if there is none."""
        proc = self.ctl("migrate-status", vm, json_out=True, check_rc=False)
        if proc.returncode != 0:
            return None
        return json.loads(proc.stdout.splitlines()[0])

    def migrate(self, vm, dst, *flags, timeout=300):
        """`vexctl --json migrate`: (exit code, result dict or None, progress dicts, stderr)."""
        proc = run(*self.migrate_cmd(vm, dst, *flags), check_rc=False, timeout=timeout)
        return parse_migration(proc)


# ------------------------------------------------------------------------------ the witness

# 2048 pages (8 MiB) dirtied at 16384 pages/s = 64 MiB/s.
WORKLOAD = ["--workset-pages", "2048", "--dirty-pages-per-sec", "16384"]
NMI_HOLD_MASK = "0x4"  # the NMI handler (vector 2) holds: NMIs stay masked until it is cleared


def vec(report):
    return int(report["fields"].get("vec", "-1"))


def exc_reports(host, vm, vector):
    return [r for r in host.guest_reports(vm, "EXC") if vec(r) == vector]


def expect_memory_intact(host, vm):
    check_result = host.memcheck(vm)
    check(check_result.get("bad", -1) == 0 and check_result.get("pages", 0) > 0,
          f"{host.name}/{vm}: guest memcheck {check_result}")


def last_sequence(host, vm):
    return max((int(e.get("sequence", "0")) for e in host.events(vm)), default=0)


def paused_events(host, vm, after_sequence):
    return [e for e in host.events(vm) if int(e.get("sequence", "0")) > after_sequence and
            e.get("lifecycle", {}).get("state") == "VM_PAUSED"]


def hold_nmi_and_make_one_pending(host, vm):
    """vCPU 1 takes an NMI and holds in its handler (NMIs masked); a second NMI is made pending
    (--pause-around) and stays pending while the VM runs. vCPU 0 keeps running the workload."""
    host.ctl("inject", "nmi", vm, "--vcpu", "1", "--pause-around")
    held = host.wait_reports(vm, "HOLD", lambda r: vec(r) == 2, 1)
    check(len(held) == 1, f"{host.name}/{vm}: the NMI handler did not hold")
    host.ctl("inject", "nmi", vm, "--vcpu", "1", "--pause-around")
    pending = host.ctl("pending", vm).stdout
    check("NMI" in pending, f"`vexctl pending {vm}` does not show the NMI:\n{pending}")
    check(len(exc_reports(host, vm, 2)) == 1, f"{host.name}/{vm}: the masked NMI was taken at once")


def release_nmi_and_expect_once(host, vm):
    """Clears the hold: the handler returns, NMIs unmask, and the pending one is taken.

    The pending NMI is vCPU 1's second exception since boot (seq 2); its first (seq 1) is the
    NMI the setup made it take before migrating, which is in this host's history only when
    the VM never left it. So exactly-once is checked on the NMIs after the first: exactly one,
    and it is seq 2."""
    host.ctl("guest", vm, "settings", "--hold-mask", "0")

    def after_first(r):
        return vec(r) == 2 and int(r["fields"]["cpu"]) == 1 and int(r["fields"]["seq"]) >= 2

    host.wait_reports(vm, "EXC", after_first, 1)
    time.sleep(0.5)
    got = [r for r in host.guest_reports(vm, "EXC") if after_first(r)]
    check(len(got) == 1 and int(got[0]["fields"]["seq"]) == 2,
          f"{host.name}/{vm}: expected the pending NMI (seq 2) exactly once, got {[r['line'] for r in got]}")


def parse_migration(proc):
    progress = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    result = progress[-1].get("result") if progress else None
    return proc.returncode, result, progress, proc.stderr.strip()


def read_cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def pids_mentioning(text):
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            pass
    return pids


class Lab:
    """Namespaces (as root), certificates, and the hosts added to it."""

    def __init__(self, binaries, use_netns=None, log=print):
        self.bin = binaries
        self.use_netns = os.geteuid() == 0 if use_netns is None else use_netns
        self.log = log
        self.tag = secrets.token_hex(3)
        # Not TEST_TMPDIR: Unix socket paths must stay under 108 bytes.
        self.root = tempfile.mkdtemp(prefix="vxm-", dir="/tmp")
        self.namespaces = {}  # "src"/"dst" -> netns name
        self.veth = {}  # "src"/"dst" -> interface name inside that namespace
        self.hosts = []
        self.next_port = 7500
        self.tls_dir = None

    def __enter__(self):
        try:
            if self.use_netns:
                self._make_namespaces()
            self.tls_dir = self.make_certs("certs")
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def ip(self, side):
        if not self.use_netns:
            return LOOPBACK_IP
        return SRC_IP if side == "src" else DST_IP

    def _make_namespaces(self):
        for side, ip in (("src", SRC_IP), ("dst", DST_IP)):
            self.namespaces[side] = f"vx-{side}-{self.tag}"
            self.veth[side] = f"vx{side[0]}{self.tag}"  # at most 15 bytes
            run("ip", "netns", "add", self.namespaces[side])
        run("ip", "link", "add", self.veth["src"], "type", "veth", "peer", "name", self.veth["dst"])
        for side, ip in (("src", SRC_IP), ("dst", DST_IP)):
            ns = self.namespaces[side]
            run("ip", "link", "set", self.veth[side], "netns", ns)
            run("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ip}/24", "dev", self.veth[side])
            run("ip", "netns", "exec", ns, "ip", "link", "set", self.veth[side], "up")
            run("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        self.log(f"network namespaces {self.namespaces['src']} ({SRC_IP}) and {self.namespaces['dst']} "
                 f"({DST_IP}), veth {self.veth['src']} <-> {self.veth['dst']}")

    def make_certs(self, name):
        """A new CA and leaf certificates (both hosts' IPs as names) in ROOT/name."""
        path = os.path.join(self.root, name)
        run(self.bin.make_certs, path, SRC_IP, DST_IP)
        return path

    def add_host(self, side, extra_flags=(), tls_dir=None, name=None, env=None):
        """A started vexd on `side` ("src" or "dst"), on a port of its own; `env` adds to its
        environment (e.g. a VEXSTATE_TESTING_* hook, or VEXSTATE_CONSOLE_UDP for the benchmarks)."""
        name = name or side
        host = Host(self, name, side, self.namespaces.get(side), self.ip(side), self.next_port,
                    tls_dir or self.tls_dir, extra_flags, env)
        self.next_port += 1
        self.hosts.append(host)
        return host.start()

    def set_link(self, side, up):
        """Cuts (or restores) the veth link from inside `side`'s namespace."""
        check(self.use_netns, "cutting the link needs network namespaces (root)")
        run("ip", "netns", "exec", self.namespaces[side], "ip", "link", "set", self.veth[side],
            "up" if up else "down")

    def in_netns(self, side, *cmd):
        """`cmd` as run from inside `side`'s namespace (as is without namespaces)."""
        return (["ip", "netns", "exec", self.namespaces[side]] if self.use_netns else []) + list(cmd)

    def close(self):
        for host in self.hosts:
            host.stop()
        if self.veth:
            # Deleting a namespace deletes the veth pair with it; this is for a half-made lab.
            run("ip", "link", "del", self.veth["src"], check_rc=False)
        for ns in self.namespaces.values():
            run("ip", "netns", "del", ns, check_rc=False)
        self.namespaces.clear()
        self.veth.clear()
        shutil.rmtree(self.root, ignore_errors=True)


def run_scenarios(suite_name, scenarios, binaries, make_hosts, summary=None):
    """Runs each scenario (a function of (lab, *hosts)) in one Lab with network namespaces, prints
    "[ RUN ]"/"[ OK ]" lines and "N passed, N failed", writes JUnit XML to $XML_OUTPUT_FILE, and
    returns the exit code. Command-line arguments select scenarios by (part of) their name.
    `make_hosts(lab)` returns the hosts; `summary()` prints after the scenarios."""
    only = sys.argv[1:]
    tests = [t for t in scenarios if not only or any(o in t.__name__ for o in only)]
    if os.geteuid() != 0:
        print("this test needs root (ip netns)", file=sys.stderr)
        return 1
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        print("/dev/kvm is not usable: this test needs real KVM", file=sys.stderr)
        return 1
    suite = ET.Element("testsuite", name=suite_name)
    failures = 0
    with Lab(binaries, use_netns=True) as lab:
        hosts = make_hosts(lab)
        for test in tests:
            start = time.time()
            case = ET.SubElement(suite, "testcase", name=test.__name__, classname=suite_name)
            print(f"[ RUN      ] {test.__name__}", flush=True)
            try:
                test(lab, *hosts)
                print(f"[       OK ] {test.__name__} ({time.time() - start:.1f} s)", flush=True)
            except Exception as e:  # noqa: BLE001 - every failure is reported, then the next runs
                failures += 1
                detail = traceback.format_exc() if not isinstance(e, Failure) else str(e)
                ET.SubElement(case, "failure", message=str(e)[:500]).text = detail
                print(f"[  FAILED  ] {test.__name__}: {detail}", flush=True)
            case.set("time", f"{time.time() - start:.2f}")
        if failures:
            for host in lab.hosts:
                print(f"--- {host.name} vexd log (tail) ---\n{host.log_tail()}")
    if summary:
        summary()
    suite.set("tests", str(len(tests)))
    suite.set("failures", str(failures))
    out = os.environ.get("XML_OUTPUT_FILE")
    if out:
        root_el = ET.Element("testsuites")
        root_el.append(suite)
        ET.ElementTree(root_el).write(out)
    print(f"{len(tests) - failures} passed, {failures} failed")
    return 1 if failures else 0
