"""Runs the arm64 witness under plain qemu-system-aarch64 (TCG, EL1, no KVM) and drives its
control block through QEMU's gdbstub, the way the VMM will through guest memory.

What it covers: boot (BOOT, READY, heartbeat), every command of witness_abi.h (MEMCHECK over
a running workload, READ_DISR, ESB_READ_DISR, UNMASK_SERROR, an unknown one), the
synchronous-exception path (a BRK the test plants: "VEX SYNC", hold_mask bit 1 and its
release, return past the faulting instruction), and a CPU without FEAT_RAS (cortex-a72: no
DISR_EL1, which the guest must not touch). SError delivery needs a hypervisor to make one
pending: that is tested with KVM (vmm/arch/arm64, tests/arm64).

QEMU's virt machine places its device tree in the first MiB of RAM for bare-metal images,
over the control block's page: it reads as zeros there, so the guest sees "no magic" until
the test writes the block. Usage: witness_qemu_test.py WITNESS_ELF
"""

import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

# guests/common/witness_abi.h
RAM_BASE = 0x40000000
CONTROL = RAM_BASE + 0x10000
WORKSET = RAM_BASE + 0x400000
CTL_MAGIC, CTL_HOLD_MASK, CTL_HEARTBEAT_MS = 0x00, 0x08, 0x10
CTL_WORKSET_PAGES, CTL_DIRTY_PAGES_PER_SEC = 0x20, 0x28
CTL_COMMAND_SEQ, CTL_COMMAND = 0x30, 0x38
MAGIC = 0x5645585354415445
CMD_MEMCHECK, CMD_UNMASK_SERROR, CMD_ESB_READ_DISR, CMD_READ_DISR = 1, 2, 3, 4

# Free RAM for the planted instructions: above the image, below the working set.
STUB = RAM_BASE + 0x300000
BRK_IMM = 0x42
# ESR_EL1 of `brk #0x42`: EC 0x3c (BRK from AArch64), IL=1, ISS = the immediate.
BRK_ESR = (0x3C << 26) | (1 << 25) | BRK_IMM

WITNESS = None
TIMEOUT = 20.0


class Gdb:
    """The few GDB remote-protocol packets we need, over QEMU's -gdb unix socket."""

    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(TIMEOUT)
        self.sock.connect(path)
        self.buf = b""
        self.read_packet()  # QEMU stops the VM when a debugger attaches and says so (T02)
        self.running = False

    def read_packet(self):
        while True:
            self.buf = self.buf.lstrip(b"+")
            if self.buf.startswith(b"$"):
                end = self.buf.find(b"#")
                if end >= 0 and len(self.buf) >= end + 3:
                    body, self.buf = self.buf[1:end], self.buf[end + 3 :]
                    self.sock.sendall(b"+")
                    return body.decode()
            elif self.buf:
                raise RuntimeError("gdbstub sent %r" % self.buf)
            chunk = self.sock.recv(4096)
            if not chunk:
                raise RuntimeError("gdbstub closed the connection")
            self.buf += chunk

    def send(self, body):
        self.sock.sendall(b"$%s#%02x" % (body.encode(), sum(body.encode()) & 0xFF))

    def request(self, body):
        self.send(body)
        return self.read_packet()

    def stop(self):
        if self.running:
            self.sock.sendall(b"\x03")
            self.read_packet()
            self.running = False

    def cont(self):
        self.send("c")  # the reply comes only at the next stop
        self.running = True

    def write(self, addr, data):
        reply = self.request("M%x,%x:%s" % (addr, len(data), data.hex()))
        if reply != "OK":
            raise RuntimeError("gdbstub: writing %d bytes at %#x: %r" % (len(data), addr, reply))

    def write_u64(self, addr, value):
        self.write(addr, struct.pack("<Q", value))

    def registers(self):
        """x0..x30, sp, pc as integers (the 'g' packet; cpsr follows, kept as is)."""
        raw = bytes.fromhex(self.request("g"))
        return list(struct.unpack_from("<33Q", raw)), raw

    def set_pc(self, pc):
        _, raw = self.registers()
        raw = raw[: 32 * 8] + struct.pack("<Q", pc) + raw[33 * 8 :]
        reply = self.request("G" + raw.hex())
        if reply != "OK":
            raise RuntimeError("gdbstub: setting pc: %r" % reply)


class Witness:
    """One QEMU running the witness; the console is collected in the background."""

    def __init__(self, cpu):
        self.dir = tempfile.mkdtemp(prefix="witness-qemu-")
        self.sock_path = os.path.join(self.dir, "gdb.sock")
        self.console = ""
        self.lock = threading.Lock()
        self.qemu = subprocess.Popen(
            [
                os.environ.get("QEMU_SYSTEM_AARCH64", "qemu-system-aarch64"),
                "-machine", "virt", "-cpu", cpu, "-smp", "1", "-m", "256",
                "-nographic", "-nic", "none",
                # The generic loader (not -kernel) enters the ELF at EL1 with PC = e_entry.
                "-device", "loader,file=%s,cpu-num=0" % WITNESS,
                "-gdb", "unix:%s,server=on,wait=off" % self.sock_path,
            ],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        threading.Thread(target=self._collect, daemon=True).start()
        self.gdb = None

    def _collect(self):
        for chunk in iter(lambda: self.qemu.stdout.read1(4096), b""):
            with self.lock:
                self.console += chunk.decode(errors="replace").replace("\r", "")

    def text(self):
        with self.lock:
            return self.console

    def lines(self):
        """The console without heartbeat dots, so every report starts a line."""
        return re.sub(r"\.+", "", self.text())

    def wait_for(self, pattern, count=1):
        """Waits until `pattern` (a regex) matched `count` times; returns the matches."""
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            found = re.findall(pattern, self.lines(), re.M)
            if len(found) >= count:
                return found
            if self.qemu.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError("no %d x /%s/ within %ss; console:\n%s" % (count, pattern, TIMEOUT, self.text()[-2000:]))

    def attach(self):
        self.gdb = Gdb(self.sock_path)

    def control(self, **fields):
        """Writes control-block fields (VM stopped meanwhile), then resumes."""
        self.gdb.stop()
        for offset, value in fields.items():
            self.gdb.write_u64(CONTROL + globals()[offset], value)
        self.gdb.cont()

    def command(self, seq, cmd):
        done = r"^VEX DONE cpu=0 cmd=%d$" % cmd
        # Counted before the guest can run the command: counting after cont() raced with a
        # fast guest, whose DONE was then counted as an earlier one.
        done_before = len(re.findall(done, self.lines(), re.M))
        # COMMAND before COMMAND_SEQ, as the ABI asks of the VMM (here the VM is stopped).
        self.gdb.stop()
        self.gdb.write_u64(CONTROL + CTL_COMMAND, cmd)
        self.gdb.write_u64(CONTROL + CTL_COMMAND_SEQ, seq)
        self.gdb.cont()
        self.wait_for(done, count=done_before + 1)

    def close(self):
        if self.gdb:
            self.gdb.sock.close()
        self.qemu.kill()
        self.qemu.wait()
        self.qemu.stdout.close()


class WitnessQemuTest(unittest.TestCase):
    def boot(self, cpu="max"):
        w = Witness(cpu)
        self.addCleanup(w.close)
        w.wait_for(r"^VEX BOOT cpu=0 arch=arm64$")
        w.wait_for(r"^VEX READY cpu=0$")
        w.attach()
        w.control(CTL_MAGIC=MAGIC, CTL_HEARTBEAT_MS=10)
        return w

    def test_boots_with_heartbeat_and_no_control_block(self):
        w = Witness("max")
        self.addCleanup(w.close)
        w.wait_for(r"^VEX READY cpu=0$")
        deadline = time.monotonic() + TIMEOUT  # default heartbeat (100 ms), no control block
        while w.text().count(".") < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(w.text().count("."), 3, w.text())
        self.assertNotIn("VEX SYNC", w.text())

    def test_memcheck_follows_the_workload_and_finds_a_corrupt_page(self):
        w = self.boot()
        w.control(CTL_WORKSET_PAGES=64, CTL_DIRTY_PAGES_PER_SEC=20000)
        time.sleep(0.5)  # several passes over the 64 pages
        w.command(1, CMD_MEMCHECK)
        w.wait_for(r"^VEX MEMCHECK cpu=0 seq=0 pages=64 bad=0 first_bad=0xffffffff$")
        # Stop the workload, break page 5's pattern, check again.
        w.control(CTL_DIRTY_PAGES_PER_SEC=0)
        # The main loop reads the rate at each turn: once two heartbeats (10 ms) went by, the
        # workload has stopped and cannot rewrite page 5 after we break it (a busy host may
        # not run the guest at all between cont and the next stop).
        beats = w.text().count(".")
        deadline = time.monotonic() + TIMEOUT
        while w.text().count(".") < beats + 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        w.gdb.stop()
        w.gdb.write_u64(WORKSET + 5 * 4096, 0xDEADBEEF)
        w.gdb.cont()
        w.command(2, CMD_MEMCHECK)
        w.wait_for(r"^VEX MEMCHECK cpu=0 seq=0 pages=64 bad=1 first_bad=0x5$")

    def test_disr_commands_and_serror_window(self):
        w = self.boot()
        w.command(1, CMD_READ_DISR)
        w.command(2, CMD_ESB_READ_DISR)
        w.command(3, CMD_UNMASK_SERROR)
        w.command(4, 99)  # unknown: only DONE
        self.assertEqual(w.wait_for(r"^VEX DISR cpu=0 seq=0 disr=(\S+)$", count=2), ["0x0", "0x0"])
        self.assertNotRegex(w.text(), r"VEX (SERROR|SYNC|UNEXPECTED)")

    def test_no_ras_cpu_never_touches_disr(self):
        w = self.boot("cortex-a72")
        w.command(1, CMD_READ_DISR)
        w.command(2, CMD_ESB_READ_DISR)
        w.wait_for(r"^VEX DISR cpu=0 seq=0 disr=0x0$", count=2)
        self.assertNotIn("VEX SYNC", w.text())  # an mrs of DISR_EL1 would be UNDEFINED

    def test_sync_exception_is_reported_held_and_skipped(self):
        w = self.boot()
        w.control(CTL_HOLD_MASK=1 << 1)
        # Plant `brk #0x42; b <where the vCPU was>` and send the vCPU there.
        w.gdb.stop()
        regs, _ = w.gdb.registers()
        back = regs[32]
        branch = 0x14000000 | (((back - (STUB + 4)) >> 2) & 0x3FFFFFF)
        w.gdb.write(STUB, struct.pack("<II", 0xD4200000 | (BRK_IMM << 5), branch))
        w.gdb.set_pc(STUB)
        w.gdb.cont()
        w.wait_for(r"^VEX SYNC cpu=0 seq=1 esr=%#x elr=%#x far=0x[0-9a-f]+$" % (BRK_ESR, STUB))
        w.wait_for(r"^VEX HOLD cpu=0 vec=0x1$")
        time.sleep(0.2)
        dots = w.text().count(".")
        time.sleep(0.2)
        self.assertEqual(w.text().count("."), dots, "the main loop ran during the hold")
        w.control(CTL_HOLD_MASK=0)
        deadline = time.monotonic() + TIMEOUT  # released: back in the main loop
        while w.text().count(".") < dots + 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertGreaterEqual(w.text().count("."), dots + 3, "no heartbeat after the release")
        self.assertEqual(w.text().count("VEX SYNC"), 1, "the BRK was not skipped")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: witness_qemu_test.py WITNESS_ELF [unittest args]")
    WITNESS = sys.argv.pop(1)
    unittest.main(verbosity=2)
