"""Live migration, vexstate (vexd -> vexd) next to QEMU 7.2, over loopback, same guest.

Matrix (issue 6): guest RAM 512 MiB, 2 GiB, 8 GiB x {idle after touching half of RAM,
dirtying 64 MiB/s, dirtying 256 MiB/s over a 256 MiB working set} x 3 runs. `--quick`: one
cell, 512 MiB idle after touching 16 MiB, one run.

Both stacks run the same witness.elf with the same settings: vexd through the control block
(`vexctl vm create --heartbeat-ms ... --touch-pages ...`), QEMU through the Multiboot command
line (`-append "heartbeat_ms=1 ..."`). The guest first touches its pages (`touch_pages`: half of
RAM when idle, the working set when dirtying, so the workload never pays first-touch costs
during a migration), reports TOUCHED, and the run waits SETTLE_S before migrating.

Per run, per stack: total time and downtime as the stack reports them (QEMU `query-migrate`
total-time/downtime; vexctl migrate --json total_ms/downtime_ms), bytes sent, throughput
(bytes / total time), and the guest-visible gap: CLOCK_MONOTONIC from the arrival of the last
heartbeat byte of the source guest to the first of the destination guest, 1 ms heartbeat,
both consoles read by this process the same way (guest_console.py). Both limits alike:
unlimited bandwidth (QEMU max-bandwidth 100 GB/s; vexd 0 = none), downtime limit 300 ms
(QEMU's default; vexctl --max-downtime-ms 300).

Runs ping-pong: the guest boots and touches once per cell and stack, then migrates A -> B,
B -> A, A -> B (QEMU: a fresh -incoming process each time). The first touch costs ~33-350 us
per page on this machine's KVM (a 4 GiB touch takes minutes), paid once, not per run.
"""
import os
import time
from typing import Dict, List, Tuple

from . import qemu_vm, side_by_side, vexd_lab
from .base import Context, Section, SectionResult
from .guest_console import ConsoleReader, gap

MIB = 1 << 20
PAGE = 4096
HEARTBEAT_MS = 1
WORKSET_MIB = 256
DOWNTIME_LIMIT_MS = 300
SETTLE_S = 2.0
MIGRATE_TIMEOUT_S = 900
RUNS = 3
RAM_MIB = [512, 2048, 8192]
WORKLOADS = {"idle": 0, "64MiB/s": 64, "256MiB/s": 256}  # dirty MiB/s
METRICS = {"gap_ms": "guest-visible gap, ms", "total_ms": "total time, ms",
           "downtime_ms": "downtime as reported, ms", "mib_sent": "MiB sent", "mib_per_s": "throughput, MiB/s"}


def cell_name(ram_mib: int, workload: str) -> str:
    ram = f"{ram_mib // 1024} GiB" if ram_mib >= 1024 else f"{ram_mib} MiB"
    return f"{ram} {workload}"


def settings_for(ram_mib: int, workload: str, tsc_khz: int, quick: bool) -> Dict[str, int]:
    rate = WORKLOADS[workload]
    if rate == 0:
        touch_mib = 16 if quick else ram_mib // 2
        return {"heartbeat_ms": HEARTBEAT_MS, "tsc_khz": tsc_khz, "touch_pages": touch_mib * MIB // PAGE}
    pages = WORKSET_MIB * MIB // PAGE
    return {"heartbeat_ms": HEARTBEAT_MS, "tsc_khz": tsc_khz, "touch_pages": pages, "workset_pages": pages,
            "dirty_pages_per_sec": rate * MIB // PAGE}


def touch_timeout(settings: Dict[str, int]) -> float:
    return 120 + settings.get("touch_pages", 0) * 400e-6  # worst first-touch cost seen here


def mem_available_mib() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    return 0


def memory_shortfall(need_mib: int):
    """Why a cell needing need_mib of free memory cannot run now, or None."""
    available = mem_available_mib()
    return f"needs ~{need_mib} MiB free, {available} MiB available" if available < need_mib else None


def _run_figures(total_ms, downtime_ms, bytes_sent, g: Dict) -> Dict:
    out = {"total_ms": total_ms, "downtime_ms": downtime_ms, "mib_sent": round(bytes_sent / MIB, 1),
           "mib_per_s": round(bytes_sent / MIB / (total_ms / 1000), 1) if total_ms else None}
    out.update(g)
    return out


def _wait_touched(reader: ConsoleReader, channel: str, settings: Dict[str, int], since_ns: int) -> float:
    """Seconds from READY to TOUCHED (the guest's first touch of its pages)."""
    ready = reader.wait_line(channel, "VEX READY", 120, since_ns)
    if not ready:
        raise RuntimeError(f"{channel}: the guest never reported READY (lines: {reader.lines(channel)[-5:]})")
    touched = reader.wait_line(channel, "VEX TOUCHED", touch_timeout(settings), since_ns)
    if not touched:
        raise RuntimeError(f"{channel}: the guest never reported TOUCHED")
    return round((touched[0] - ready[0]) / 1e9, 2)


def run_vexd(ctx: Context, reader: ConsoleReader, hosts, ram_mib: int, settings: Dict[str, int],
             runs: int) -> Tuple[List[Dict], Dict]:
    a, b = hosts
    # A name per cell: a stopped VM stays listed (the benchmark does not delete VMs, see the
    # DeleteVm note in bench/README.md), so the next cell cannot reuse the last one's name.
    vm = f"m{ram_mib}-{settings.get('dirty_pages_per_sec', 0)}"
    since = time.monotonic_ns()
    a.ctl("vm", "create", vm, "--arch", "x86_64", "--vcpus", "1", "--memory-mib", str(ram_mib), "--guest", "witness",
          *vexd_lab.witness_flags(settings), "--start", timeout=120)
    try:
        boot = {"touch_s": _wait_touched(reader, a.name, settings, since)}
        time.sleep(SETTLE_S)
        results = []
        src, dst = a, b
        for i in range(runs):
            since = time.monotonic_ns()
            rc, result, _, stderr = src.migrate(vm, dst, "--max-downtime-ms", str(DOWNTIME_LIMIT_MS),
                                                timeout=MIGRATE_TIMEOUT_S)
            wall_ms = round((time.monotonic_ns() - since) / 1e6, 1)
            if rc != 0 or not result or result.get("outcome") != "MIGRATION_COMPLETED":
                raise RuntimeError(f"vexd migration {src.name} -> {dst.name} failed (exit {rc}): "
                                   f"{(result or {}).get('error') or stderr}")
            g = gap(reader, src.name, dst.name, since)
            run = _run_figures(int(result["total_ms"]), int(result["downtime_ms"]), int(result["bytes_sent"]), g)
            run.update({"run": i + 1, "from": src.name, "to": dst.name, "rounds": result.get("rounds"),
                        "host_wall_ms": wall_ms})
            results.append(run)
            ctx.log(f"migration: vexstate {ram_mib} MiB run {i + 1}: {run}")
            src, dst = dst, src
            time.sleep(SETTLE_S)
        return results, boot
    finally:
        for h in hosts:
            if vm in h.vm_names():
                h.ctl("vm", "stop", vm, check_rc=False)


def run_qemu(ctx: Context, reader: ConsoleReader, witness: str, ram_mib: int, settings: Dict[str, int],
             runs: int) -> Tuple[List[Dict], Dict]:
    channels = ["QA", "QB"]
    since = time.monotonic_ns()
    src = qemu_vm.QemuVm(ctx.work_dir, "qemu0", witness, ram_mib, settings, reader[channels[0]].address)
    dst = None
    try:
        boot = {"touch_s": _wait_touched(reader, channels[0], settings, since)}
        time.sleep(SETTLE_S)
        results = []
        for i in range(runs):
            port = vexd_lab.free_port()
            dst = qemu_vm.QemuVm(ctx.work_dir, f"qemu{i + 1}", witness, ram_mib, settings,
                                 reader[channels[(i + 1) % 2]].address, incoming=f"tcp:127.0.0.1:{port}")
            dst.connect()  # listening once QMP answers
            since = time.monotonic_ns()
            info = src.migrate(f"tcp:127.0.0.1:{port}", qemu_vm.MAX_BANDWIDTH, DOWNTIME_LIMIT_MS, MIGRATE_TIMEOUT_S)
            if info.get("status") != "completed":
                raise RuntimeError(f"QEMU migration failed: {info}")
            g = gap(reader, channels[i % 2], channels[(i + 1) % 2], since)
            ram = info.get("ram", {})
            run = _run_figures(int(info["total-time"]), int(info.get("downtime", 0)), int(ram.get("transferred", 0)),
                               g)
            run.update({"run": i + 1, "from": channels[i % 2], "to": channels[(i + 1) % 2],
                        "host_wall_ms": info["host_wall_ms"], "setup_ms": info.get("setup-time"),
                        "qemu_mbps": ram.get("mbps"), "dirty_sync_count": ram.get("dirty-sync-count")})
            results.append(run)
            ctx.log(f"migration: QEMU {ram_mib} MiB run {i + 1}: {run}")
            src.stop()
            src, dst = dst, None
            time.sleep(SETTLE_S)
        return results, boot
    finally:
        for q in (src, dst):
            if q:
                q.stop()


class MigrationSection(Section):
    name = "migration"
    title = "Live migration vs QEMU 7.2 (loopback, same witness guest, 1 vCPU)"
    bazel_targets = vexd_lab.TARGETS

    def unavailable(self):
        return qemu_vm.available()

    def run(self, ctx: Context) -> SectionResult:
        witness = os.path.join(ctx.bazel_bin, "guests", "x86_64", "witness.elf")
        cells = [(512, "idle")] if ctx.quick else [(r, w) for r in RAM_MIB for w in WORKLOADS]
        default_runs = 1 if ctx.quick else RUNS
        data = {"config": {"heartbeat_ms": HEARTBEAT_MS, "downtime_limit_ms": DOWNTIME_LIMIT_MS,
                           "qemu_max_bandwidth_bytes_per_s": qemu_vm.MAX_BANDWIDTH, "vexd_max_bandwidth": "0 (none)",
                           "transport": "loopback TCP; vexd: mutual TLS (tools/make_certs.sh); QEMU: plain TCP",
                           "qemu": qemu_vm.version(), "qemu_firmware": " ".join(qemu_vm.firmware()) or "SeaBIOS",
                           "runs_per_cell": default_runs,
                           "runs_per_ram_mib": {str(r): ctx.runs_for(r, default_runs) for r in RAM_MIB},
                           "order": "ping-pong A->B, B->A, ... after one boot+touch",
                           "gap": "CLOCK_MONOTONIC, last source heartbeat byte to first destination heartbeat "
                                  "byte, both consoles over UDP to this process",
                           "settle_s": SETTLE_S},
                "cells": {}}
        summaries = {}
        with ConsoleReader(["A", "B", "QA", "QB"]) as reader, vexd_lab.lab(ctx, "migration") as lab:
            hosts = (vexd_lab.add_host(lab, "A", reader["A"].address), vexd_lab.add_host(lab, "B", reader["B"].address))
            tsc_khz = vexd_lab.host_tsc_khz(hosts[0]) or 0
            data["config"]["tsc_khz"] = tsc_khz
            for ram_mib, workload in cells:
                name = cell_name(ram_mib, workload)
                settings = settings_for(ram_mib, workload, tsc_khz, ctx.quick)
                runs = ctx.runs_for(ram_mib, default_runs)
                cell = {"ram_mib": ram_mib, "workload": workload, "settings": settings, "runs_planned": runs}
                need = 2 * (settings.get("touch_pages", 0) * PAGE // MIB) + 1024
                skipped = ctx.past_deadline() or memory_shortfall(need)
                if skipped:
                    cell["skipped"] = skipped
                    data["cells"][name] = cell
                    ctx.log(f"migration: {name}: skipped: {cell['skipped']}")
                    continue
                ctx.log(f"migration: {name} (settings {settings})")
                summaries[name] = side_by_side.run_stacks(
                    ctx.log, f"migration: {name}", cell,
                    (("vexstate", lambda: run_vexd(ctx, reader, hosts, ram_mib, settings, runs)),
                     ("qemu", lambda: run_qemu(ctx, reader, witness, ram_mib, settings, runs))), list(METRICS))
                data["cells"][name] = cell
        data["matrix"] = side_by_side.matrix(data["cells"])
        table_md = side_by_side.table(self.title, summaries, METRICS)
        panels = [side_by_side.panel("Migration: guest-visible gap (ms, median)", "ms (log)", summaries, "gap_ms"),
                  side_by_side.panel("Migration: total time (ms, median)", "ms (log)", summaries, "total_ms")]
        notes = []
        for name, s in summaries.items():
            g, t = s["gap_ms"], s["total_ms"]
            if g["ratio_vexstate_over_qemu"] is not None:
                notes.append(f"migration {name}: gap vexstate/QEMU {g['ratio_vexstate_over_qemu']:.2f}x "
                             f"(target <= 0.2x: {'met' if g['ratio_vexstate_over_qemu'] <= 0.2 else 'NOT met'}), "
                             f"total time {t['ratio_vexstate_over_qemu']:.2f}x (target <= 1x: "
                             f"{'met' if (t['ratio_vexstate_over_qemu'] or 9) <= 1 else 'NOT met'}).")
        notes += side_by_side.problem_notes("migration", data["cells"])
        return SectionResult(data=data, rows=[], panels=panels, notes=notes, tables=[table_md])
