#!/usr/bin/env python3
"""Migration downtime and guest-visible gap between two vexd on this machine, step by step.

For comparing builds side by side (e.g. before/after a change): each --bin is a bazel-bin
with vexd, vexd_worker and vexctl; every scenario runs once per build per repetition,
alternating builds, so load changes hit both alike. Two vexd over loopback (tools/two_hosts.py,
no network namespaces), the witness guest with a 1 ms heartbeat.

Scenarios (issue 6's matrix at 512 MiB): idle after touching half of RAM, and the workload
dirtying 64 or 256 MiB/s over a 256 MiB working set. The guest first touches its working set
(~350 us a page here, notes/x86-kvm.md), so each run waits for that before migrating.

Per run it prints total and downtime as vexd reports them, the guest-visible gap (the
destination guest's first heartbeat minus the source guest's last, both host clock), and the
times after the pause from MigrationResult.timings.

usage: measure_migration.py --bin NAME=DIR [--bin NAME=DIR ...] [--scenario idle|64|256 ...]
                            [--repeat N] [--memory-mib 512] [--max-downtime-ms N]
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from two_hosts import Binaries, Failure, Lab, check  # noqa: E402

PAGE = 4096
MIB_PAGES = 1 << 20 >> 12
FIRST_TOUCH_S_PER_PAGE = 0.0004  # measured ~350 us, with margin

STEPS = [("paused_unix_ns", "paused"), ("final_state_sent_unix_ns", "state sent"), ("digest_sent_unix_ns", "digest sent"),
         ("verified_unix_ns", "verified"), ("commit_journaled_unix_ns", "journalled"),
         ("destination_resumed_unix_ns", "dest resumed"), ("finished_unix_ns", "finished")]


def scenario_settings(name, memory_mib):
    """(workset pages, dirty pages/s while touching, dirty pages/s at migration)."""
    workset = memory_mib * MIB_PAGES // 2
    if name == "idle":
        return workset, 65536, 0
    rate = int(name) * MIB_PAGES
    return workset, rate, rate


def one_run(binaries, scenario, memory_mib, max_downtime_ms):
    workset, touch_rate, rate = scenario_settings(scenario, memory_mib)
    with Lab(binaries, use_netns=False, log=lambda _: None) as lab:
        src = lab.add_host("src")
        dst = lab.add_host("dst")
        vm = "m"
        src.create_running(vm, memory_mib=memory_mib,
                           extra=["--heartbeat-ms", "1", "--workset-pages", str(workset), "--dirty-pages-per-sec",
                                  str(touch_rate)])
        time.sleep(workset * FIRST_TOUCH_S_PER_PAGE + workset / touch_rate + 1)
        if rate != touch_rate:
            src.ctl("guest", vm, "settings", "--heartbeat-ms", "1", "--workset-pages", str(workset),
                    "--dirty-pages-per-sec", str(rate))
            time.sleep(0.5)
        rc, result, _, err = src.migrate(vm, dst, "--max-downtime-ms", str(max_downtime_ms))
        check(rc == 0 and result and result.get("outcome") == "MIGRATION_COMPLETED", f"migration failed: {err}")
        time.sleep(0.3)  # a few destination heartbeats
        info = dst.json("vm", "show", vm)[0]
        t = {k: int(v) for k, v in result.get("timings", {}).items()}
        pause = t["pause_unix_ns"]
        first = int(info.get("first_heartbeat_unix_ns", 0))
        out = {
            "total_ms": int(result.get("total_ms", 0)),
            "downtime_ms": int(result.get("downtime_ms", 0)),
            "gap_ms": (first - t.get("source_last_heartbeat_unix_ns", 0)) / 1e6 if first else None,
            "rounds": int(result.get("rounds", 0)),
            "sent_mib": int(result.get("bytes_sent", 0)) / 1048576,
            "steps_ms": {label: (t[key] - pause) / 1e6 for key, label in STEPS if t.get(key)},
        }
        return out


def fmt(run):
    steps = ", ".join(f"{k} {v:.1f}" for k, v in run["steps_ms"].items())
    gap = f"{run['gap_ms']:.1f}" if run["gap_ms"] is not None else "-"
    return (f"total {run['total_ms']:5d} ms  downtime {run['downtime_ms']:4d} ms  gap {gap:>6} ms  "
            f"rounds {run['rounds']:2d}  sent {run['sent_mib']:7.1f} MiB  | after pause (ms): {steps}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin", action="append", required=True, help="NAME=bazel-bin directory (repeatable)")
    parser.add_argument("--scenario", action="append", choices=["idle", "64", "256"])
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--memory-mib", type=int, default=512)
    parser.add_argument("--max-downtime-ms", type=int, default=300)
    parser.add_argument("--json", help="write every run here")
    args = parser.parse_args()
    here = os.path.dirname(os.path.abspath(__file__))
    builds = []
    for spec in args.bin:
        name, _, path = spec.partition("=")
        builds.append((name, Binaries(vexd=os.path.join(path, "server/vexd"),
                                      worker=os.path.join(path, "server/worker/vexd_worker"),
                                      vexctl=os.path.join(path, "client/vexctl"),
                                      make_certs=os.path.join(here, "make_certs.sh"))))
    runs = []
    for scenario in args.scenario or ["idle", "64", "256"]:
        for rep in range(args.repeat):
            for name, binaries in builds:
                label = f"{args.memory_mib} MiB {scenario if scenario == 'idle' else scenario + ' MiB/s'}"
                try:
                    run = one_run(binaries, scenario, args.memory_mib, args.max_downtime_ms)
                except Failure as e:
                    print(f"{label:18s} {name:8s} #{rep}: FAILED: {e}", flush=True)
                    continue
                run.update(build=name, scenario=scenario, rep=rep)
                runs.append(run)
                print(f"{label:18s} {name:8s} #{rep}: {fmt(run)}", flush=True)
    print("\nmedians:")
    for scenario in args.scenario or ["idle", "64", "256"]:
        for name, _ in builds:
            mine = [r for r in runs if r["scenario"] == scenario and r["build"] == name]
            if not mine:
                continue
            gaps = [r["gap_ms"] for r in mine if r["gap_ms"] is not None]
            print(f"  {scenario:5s} {name:8s} n={len(mine)} total {statistics.median(r['total_ms'] for r in mine):.0f} ms"
                  f"  downtime {statistics.median(r['downtime_ms'] for r in mine):.0f} ms"
                  f"  gap {statistics.median(gaps) if gaps else float('nan'):.1f} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(runs, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
