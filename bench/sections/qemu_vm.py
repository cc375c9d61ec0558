"""QEMU 7.2 running the witness guest, driven through QMP: the reference stack of the
migration and restore benchmarks.

The guest is the same witness.elf vexd runs (`-kernel`, Multiboot). SeaBIOS zeroes the
witness control block, so the guest takes its settings from the Multiboot command line
(`-append`, guests/common/witness_abi.h). COM1 goes to a UDP port of the benchmark
(guest_console.py). The firmware is qboot when QEMU ships it: it boots in ~0.5 s where
SeaBIOS takes 5-11 s on this machine, and nothing the benchmarks measure runs in firmware
(qboot leaves LAPIC LINT1 masked, so no NMIs: not needed here).
"""
import json
import os
import shutil
import socket
import subprocess
import time
from typing import Dict, List, Optional

QEMU = "qemu-system-x86_64"
QBOOT = "/usr/share/qemu/qboot.rom"
MAX_BANDWIDTH = 100 * 10**9  # bytes/s for migrate-set-parameters: "unlimited" on loopback


def available() -> Optional[str]:
    """Why QEMU cannot run here, or None."""
    if not shutil.which(QEMU):
        return f"{QEMU} is not installed (apt-get install qemu-system-x86)"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "/dev/kvm is missing or not accessible"
    return None


def version() -> str:
    proc = subprocess.run([QEMU, "--version"], capture_output=True, text=True)
    return proc.stdout.splitlines()[0] if proc.returncode == 0 and proc.stdout else "?"


def firmware() -> List[str]:
    return ["-bios", QBOOT] if os.path.exists(QBOOT) else []


def cmdline(settings: Dict[str, int]) -> str:
    """The witness's Multiboot command line for these settings (witness_abi.h keys)."""
    return " ".join(f"{k}={int(v)}" for k, v in settings.items())


class Qmp:
    """A minimal QMP client over a Unix socket: one command at a time, events skipped."""

    def __init__(self, path: str, timeout: float = 30.0):
        deadline = time.time() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                self.sock.connect(path)
                break
            except OSError:
                self.sock.close()
                if time.time() > deadline:
                    raise RuntimeError(f"QMP socket {path} did not come up")
                time.sleep(0.02)
        self.file = self.sock.makefile("rwb", buffering=0)
        self._read()  # greeting
        self.command("qmp_capabilities")

    def _read(self) -> Dict:
        line = self.file.readline()
        if not line:
            raise RuntimeError("QMP connection closed")
        return json.loads(line)

    def command(self, name: str, **arguments) -> Dict:
        message = {"execute": name}
        if arguments:
            message["arguments"] = arguments
        self.file.write(json.dumps(message).encode() + b"\n")
        while True:
            reply = self._read()
            if "return" in reply:
                return reply["return"]
            if "error" in reply:
                raise RuntimeError(f"QMP {name}: {reply['error'].get('desc', reply['error'])}")

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class QemuVm:
    """One qemu-system-x86_64 process with the witness, its console on `console_address`.
    `incoming`: a -incoming URI (the VM then waits for a migration instead of booting)."""

    def __init__(self, work_dir: str, name: str, witness: str, memory_mib: int, settings: Dict[str, int],
                 console_address: str, incoming: Optional[str] = None, extra: List[str] = ()):
        self.qmp_path = os.path.join(work_dir, f"{name}.qmp")
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
        host, port = console_address.rsplit(":", 1)
        self.argv = [QEMU, "-accel", "kvm", "-cpu", "host,-arch-capabilities", "-smp", "1",
                     "-m", str(memory_mib), "-display", "none", "-net", "none", "-no-reboot", "-monitor", "none",
                     *firmware(), "-kernel", witness, "-append", cmdline(settings),
                     "-chardev", f"udp,id=console,host={host},port={port}", "-serial", "chardev:console",
                     "-qmp", f"unix:{self.qmp_path},server=on,wait=off", *extra]
        if incoming:
            self.argv += ["-incoming", incoming]
        self.log_path = os.path.join(work_dir, f"{name}.log")
        self.started_ns = time.monotonic_ns()
        self.proc = subprocess.Popen(self.argv, stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT)
        self.qmp: Optional[Qmp] = None

    def connect(self) -> Qmp:
        if self.qmp is None:
            try:
                self.qmp = Qmp(self.qmp_path)
            except RuntimeError:
                raise RuntimeError(f"{' '.join(self.argv)}: {self.log_tail()}")
        return self.qmp

    def log_tail(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def migrate(self, uri: str, max_bandwidth: int, downtime_limit_ms: int, timeout: float) -> Dict:
        """`migrate` to uri and poll query-migrate until it ends; QEMU's final query-migrate plus
        the host-side wall time of the whole exchange."""
        qmp = self.connect()
        qmp.command("migrate-set-parameters", **{"max-bandwidth": max_bandwidth, "downtime-limit": downtime_limit_ms})
        started = time.monotonic()
        qmp.command("migrate", uri=uri)
        deadline = started + timeout
        while True:
            info = qmp.command("query-migrate")
            if info.get("status") in ("completed", "failed", "cancelled"):
                wall_ms = round((time.monotonic() - started) * 1000, 1)
                if info["status"] == "completed":
                    info = self._final_figures(qmp, info)
                info["host_wall_ms"] = wall_ms
                return info
            if time.monotonic() > deadline:
                qmp.command("migrate_cancel")
                raise RuntimeError(f"QEMU migration did not finish within {timeout:.0f} s: {info}")
            time.sleep(0.005)

    @staticmethod
    def _final_figures(qmp: Qmp, info: Dict, timeout: float = 5.0) -> Dict:
        """query-migrate once QEMU has filled in its totals. QEMU 7.2 reports "completed" a
        moment before it computes total-time and downtime: a poll in between read
        total-time 0 and no downtime (seen once in 27 runs), so ask again until both are set."""
        deadline = time.monotonic() + timeout
        while not (info.get("total-time") and "downtime" in info) and time.monotonic() < deadline:
            time.sleep(0.01)
            info = qmp.command("query-migrate")
        if not (info.get("total-time") and "downtime" in info):
            raise RuntimeError(f"QEMU reported the migration completed but no total-time/downtime: {info}")
        return info

    def stop(self) -> None:
        if self.qmp:
            self.qmp.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
