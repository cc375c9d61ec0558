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
import tempfile
import time

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


def run(*cmd, check_rc=True, **kw):
    proc = subprocess.run(list(cmd), capture_output=True, text=True, **kw)
    if check_rc and proc.returncode != 0:
        raise Failure(f"{' '.join(cmd)} -> exit {proc.returncode}: {proc.stderr.strip()}")
    return proc


class Host:
    """One vexd: state dir, control socket, tokens, migration listener."""

    def __init__(self, lab, name, netns, ip, port, tls_dir, extra_flags, extra_env=None):
        self.lab, self.name, self.netns, self.ip, self.port = lab, name, netns, ip, port
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
        self.extra_env = dict(extra_env or {})  # e.g. VEXSTATE_CONSOLE_UDP for the benchmarks
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
                                     env=dict(os.environ, **self.extra_env))
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

    def migrate(self, vm, dst, *flags, timeout=300):
        """`vexctl --json migrate`: (exit code, result dict or None, progress dicts, stderr)."""
        proc = run(*self.migrate_cmd(vm, dst, *flags), check_rc=False, timeout=timeout)
        return parse_migration(proc)


def parse_migration(proc):
    progress = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    result = progress[-1].get("result") if progress else None
    return proc.returncode, result, progress, proc.stderr.strip()


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

    def add_host(self, side, extra_flags=(), tls_dir=None, name=None, extra_env=None):
        """A started vexd on `side` ("src" or "dst"), on a port of its own; `extra_env` is added to
        its environment (its VM workers inherit it)."""
        name = name or side
        host = Host(self, name, self.namespaces.get(side), self.ip(side), self.next_port, tls_dir or self.tls_dir,
                    extra_flags, extra_env)
        self.next_port += 1
        self.hosts.append(host)
        return host.start()

    def set_link(self, side, up):
        """Cuts (or restores) the veth link from inside `side`'s namespace."""
        check(self.use_netns, "cutting the link needs network namespaces (root)")
        run("ip", "netns", "exec", self.namespaces[side], "ip", "link", "set", self.veth[side],
            "up" if up else "down")

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
