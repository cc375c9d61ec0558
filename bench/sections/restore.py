"""Snapshot restore time-to-running, vexstate next to QEMU 7.2, as guest memory grows.

Guests of 256 MiB, 1 GiB and 4 GiB (`--quick`: 256 MiB with 16 MiB touched, one run) run the
witness with a 1 ms heartbeat after touching half of their RAM, so the snapshot holds that much
written memory. Then:
  vexstate: `vexctl snapshot save VM FILE --pause-around`, the VM stopped, and per run
            `vexctl snapshot restore FILE --name rN --resume`: time from the request to the first
            heartbeat byte of the restored guest (its console mirrored over UDP, guest_console.py);
  QEMU:     the same guest saved with QMP `migrate "exec:cat > FILE"` (live, so the restored VM
            starts running by itself), and per run a new process with `-incoming "exec:cat FILE"`:
            time from process start to the first heartbeat byte.
The snapshot is written once per stack and size and restored RUNS times; both files sit in the
run's work directory, so both are read from the page cache alike.
"""
import os
import time
from typing import Dict, List, Tuple

from . import qemu_vm, side_by_side, vexd_lab
from .base import Context, Section, SectionResult
from .guest_console import ConsoleReader
from .migration import MIB, PAGE, _wait_touched, memory_shortfall

RAM_MIB = [256, 1024, 4096]
RUNS = 3
SETTLE_S = 1.0
FIRST_BEAT_TIMEOUT_S = 300
SNAPSHOT_TIMEOUT_S = 600
METRICS = {"ttr_ms": "time to running (request to first heartbeat), ms", "request_ms": "restore request returned, ms",
           "save_ms": "save, ms", "snapshot_mib": "snapshot file, MiB"}


def ram_name(ram_mib: int) -> str:
    return f"{ram_mib // 1024} GiB" if ram_mib >= 1024 else f"{ram_mib} MiB"


def settings_for(ram_mib: int, tsc_khz: int, quick: bool) -> Dict[str, int]:
    touch_mib = 16 if quick else ram_mib // 2
    return {"heartbeat_ms": 1, "tsc_khz": tsc_khz, "touch_pages": touch_mib * MIB // PAGE}


def _first_beat(reader: ConsoleReader, channel: str, since_ns: int) -> int:
    t = reader.wait_heartbeat(channel, since_ns, FIRST_BEAT_TIMEOUT_S)
    if t is None:
        raise RuntimeError(f"{channel}: no heartbeat within {FIRST_BEAT_TIMEOUT_S} s of the restore")
    return t


def run_vexd(ctx: Context, reader: ConsoleReader, host, ram_mib: int, settings: Dict[str, int], runs: int,
             path: str) -> Tuple[List[Dict], Dict]:
    # Names of this size only: a stopped VM stays listed (the benchmark does not delete VMs, see
    # the DeleteVm note in bench/README.md), so the next size cannot reuse "orig" or "r1".
    original = f"orig{ram_mib}"
    since = time.monotonic_ns()
    host.ctl("vm", "create", original, "--arch", "x86_64", "--vcpus", "1", "--memory-mib", str(ram_mib), "--guest",
             "witness", *vexd_lab.witness_flags(settings), "--start", timeout=120)
    names = [original]
    try:
        boot = {"touch_s": _wait_touched(reader, host.name, settings, since)}
        time.sleep(SETTLE_S)
        t0 = time.monotonic()
        # --timeout: vexctl's 30 s default per call is less than writing a 4 GiB guest takes here.
        host.ctl("snapshot", "save", original, path, "--pause-around", "--timeout", f"{SNAPSHOT_TIMEOUT_S}s",
                 timeout=SNAPSHOT_TIMEOUT_S + 30)
        save_ms = round((time.monotonic() - t0) * 1000, 1)
        host.ctl("vm", "stop", original)
        size_mib = round(os.path.getsize(path) / MIB, 1)
        results = []
        for i in range(runs):
            name = f"r{ram_mib}-{i + 1}"
            names.append(name)
            since = time.monotonic_ns()
            host.ctl("snapshot", "restore", path, "--name", name, "--resume", "--timeout", f"{SNAPSHOT_TIMEOUT_S}s",
                     timeout=SNAPSHOT_TIMEOUT_S + 30)
            returned = time.monotonic_ns()
            beat = _first_beat(reader, host.name, since)
            results.append({"run": i + 1, "ttr_ms": round((beat - since) / 1e6, 1),
                            "request_ms": round((returned - since) / 1e6, 1), "save_ms": save_ms,
                            "snapshot_mib": size_mib})
            ctx.log(f"restore: vexstate {ram_mib} MiB run {i + 1}: {results[-1]}")
            host.ctl("vm", "stop", name)
        return results, boot
    finally:
        for name in names:
            host.ctl("vm", "stop", name, check_rc=False)
        if os.path.exists(path):
            os.unlink(path)


def run_qemu(ctx: Context, reader: ConsoleReader, witness: str, ram_mib: int, settings: Dict[str, int], runs: int,
             path: str) -> Tuple[List[Dict], Dict]:
    since = time.monotonic_ns()
    vm = qemu_vm.QemuVm(ctx.work_dir, "qsave", witness, ram_mib, settings, reader["Q"].address)
    try:
        boot = {"touch_s": _wait_touched(reader, "Q", settings, since)}
        time.sleep(SETTLE_S)
        info = vm.migrate(f"exec:cat > {path}", qemu_vm.MAX_BANDWIDTH, 300, 900)
        if info.get("status") != "completed":
            raise RuntimeError(f"QEMU save to {path} failed: {info}")
        save_ms = info["host_wall_ms"]
    finally:
        vm.stop()
    size_mib = round(os.path.getsize(path) / MIB, 1)
    results = []
    try:
        for i in range(runs):
            since = time.monotonic_ns()
            restored = qemu_vm.QemuVm(ctx.work_dir, f"qrestore{i + 1}", witness, ram_mib, settings,
                                      reader["Q"].address, incoming=f"exec:cat {path}")
            try:
                beat = _first_beat(reader, "Q", since)
                restored.connect()
                status = restored.qmp.command("query-status")
            finally:
                restored.stop()
            results.append({"run": i + 1, "ttr_ms": round((beat - since) / 1e6, 1), "request_ms": None,
                            "save_ms": save_ms, "snapshot_mib": size_mib, "status_after": status.get("status")})
            ctx.log(f"restore: QEMU {ram_mib} MiB run {i + 1}: {results[-1]}")
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return results, boot


class RestoreSection(Section):
    name = "restore"
    title = "Snapshot restore time-to-running vs QEMU 7.2 (same witness guest, half of RAM touched)"
    bazel_targets = vexd_lab.TARGETS

    def unavailable(self):
        return qemu_vm.available()

    def run(self, ctx: Context) -> SectionResult:
        witness = os.path.join(ctx.bazel_bin, "guests", "x86_64", "witness.elf")
        sizes = [256] if ctx.quick else RAM_MIB
        default_runs = 1 if ctx.quick else RUNS
        data = {"config": {"qemu": qemu_vm.version(), "runs": default_runs, "heartbeat_ms": 1,
                           "runs_per_ram_mib": {str(r): ctx.runs_for(r, default_runs) for r in RAM_MIB},
                           "vexstate": "vexctl snapshot save --pause-around; vexctl snapshot restore --resume; "
                                       "request to first heartbeat byte",
                           "qemu_reference": "migrate exec:cat > FILE (live); -incoming exec:cat FILE; "
                                             "process start to first heartbeat byte",
                           "files": "in the run's work directory " + ctx.work_dir},
                "sizes": {}}
        summaries = {}
        with ConsoleReader(["A", "Q"]) as reader, vexd_lab.lab(ctx, "restore") as lab:
            host = vexd_lab.add_host(lab, "A", reader["A"].address)
            tsc_khz = vexd_lab.host_tsc_khz(host) or 0
            data["config"]["tsc_khz"] = tsc_khz
            for ram_mib in sizes:
                name = ram_name(ram_mib)
                settings = settings_for(ram_mib, tsc_khz, ctx.quick)
                runs = ctx.runs_for(ram_mib, default_runs)
                entry = {"ram_mib": ram_mib, "settings": settings, "runs_planned": runs}
                need = 3 * (settings["touch_pages"] * PAGE // MIB) + 1024  # guest, file, restored guest
                skipped = ctx.past_deadline() or memory_shortfall(need)
                if skipped:
                    entry["skipped"] = skipped
                    data["sizes"][name] = entry
                    ctx.log(f"restore: {name}: skipped: {skipped}")
                    continue
                ctx.log(f"restore: {name} (settings {settings})")
                summaries[name] = side_by_side.run_stacks(
                    ctx.log, f"restore: {name}", entry,
                    (("vexstate", lambda: run_vexd(ctx, reader, host, ram_mib, settings, runs,
                                                   os.path.join(ctx.work_dir, f"vexd-{ram_mib}.snap"))),
                     ("qemu", lambda: run_qemu(ctx, reader, witness, ram_mib, settings, runs,
                                               os.path.join(ctx.work_dir, f"qemu-{ram_mib}.mig")))), list(METRICS))
                data["sizes"][name] = entry
        data["matrix"] = side_by_side.matrix(data["sizes"])
        table_md = side_by_side.table(self.title, summaries, METRICS)
        panels = [side_by_side.panel("Snapshot restore: time to running (ms, median)", "ms (log)", summaries,
                                     "ttr_ms")]
        notes = []
        for name, s in summaries.items():
            r = s["ttr_ms"]["ratio_vexstate_over_qemu"]
            if r is not None:
                notes.append(f"restore {name}: time to running vexstate/QEMU {r:.2f}x.")
        notes += side_by_side.problem_notes("restore", data["sizes"])
        return SectionResult(data=data, rows=[], panels=panels, notes=notes, tables=[table_md])
