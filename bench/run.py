#!/usr/bin/env python3
"""vexstate benchmark runner (SPEC §8, issue 6): `./vexstate bench [--quick]`.

Builds the benchmark programs (-c opt), runs every section of bench/sections/ on this
machine, and writes
  bench/results/<date>-<host>[-quick].json   machine info, load, every number
  bench/results/<date>-<host>[-quick].png    the plot (gnuplot; installed if missing)
and prints the table. A full run also writes the table into bench/README.md.

This machine may be shared: every latency is reported as min/p50/p99 over repeated runs, and
the load average and CPU use are sampled before, during and after, so a reader can judge.
"""
import argparse
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)

from sections import SECTIONS  # noqa: E402
from sections.base import Context, Panel, Row, SectionResult  # noqa: E402

README = os.path.join(HERE, "README.md")
TABLE_BEGIN = "<!-- bench:latest:begin (written by bench/run.py) -->"
TABLE_END = "<!-- bench:latest:end -->"


def log(message: str) -> None:
    print(f"\033[1m[bench]\033[0m {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- machine and load

def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _cpu_times():
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    fields = [int(x) for x in _read("/proc/stat").splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields) - idle, sum(fields)


def load_snapshot() -> Dict:
    parts = _read("/proc/loadavg").split()
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return {"loadavg_1_5_15": [float(x) for x in parts[:3]], "runnable_total": parts[3], "uptime": uptime}


class LoadSampler:
    """Samples the 1-minute load average and the whole machine's CPU use once a second."""

    def __init__(self):
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        prev = _cpu_times()
        while not self._stop.wait(1.0):
            cur = _cpu_times()
            busy = (cur[0] - prev[0]) / max(1, cur[1] - prev[1])
            prev = cur
            self.samples.append((time.time(), float(_read("/proc/loadavg").split()[0]), busy))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def summary(self, since: float, until: float) -> Dict:
        window = [s for s in self.samples if since <= s[0] <= until]
        if not window:
            return {}
        loads = [s[1] for s in window]
        busy = [s[2] for s in window]
        return {"loadavg_1m_min": min(loads), "loadavg_1m_max": max(loads),
                "cpu_busy_percent_mean": round(100 * sum(busy) / len(busy), 1), "samples": len(window)}


def busy_percent(seconds: float) -> float:
    """Whole-machine CPU use over the next `seconds`, in percent of all CPUs."""
    before = _cpu_times()
    time.sleep(seconds)
    after = _cpu_times()
    return round(100 * (after[0] - before[0]) / max(1, after[1] - before[1]), 1)


def machine_info() -> Dict:
    cpu_model = ""
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    # /sys/module lists built-in modules too (this host's kernel has no /proc/modules).
    kvm_modules = sorted(m for m in os.listdir("/sys/module") if m.startswith("kvm")) \
        if os.path.isdir("/sys/module") else []
    mem_kib = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                    if line.startswith("MemTotal:")), 0)
    git = {}
    for key, argv in (("commit", ["git", "rev-parse", "HEAD"]), ("dirty", ["git", "status", "--porcelain"])):
        proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode == 0:
            git[key] = proc.stdout.strip() if key == "commit" else bool(proc.stdout.strip())
    return {
        "host": socket.gethostname(),
        "uname": " ".join(platform.uname()),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kvm_modules": kvm_modules,
        "kvm_module_note": "kvm_pvm is software nested virtualization: every vCPU ioctl costs ~6 us here, "
                           "far more than on hardware KVM; compare ratios, not absolute times"
                           if "kvm_pvm" in kvm_modules else "",
        "git": git,
    }


# ----------------------------------------------------------------------------- build

# The flags of every build the runner makes; `--build-only` prints the equivalent command.
# --symlink_prefix=/: no convenience symlinks, so .bazel/bin does not follow this -c opt build
# (other commands, e.g. ./vexstate demo, read it).
# --incompatible_strict_action_env: without it every action's key includes the caller's PATH,
# and this runner's PATH is not the shell's (pyenv's python3 shim puts its own directories in
# front), so a `bazel build -c opt` from the shell never matched the runner's build and the
# runner compiled everything again (the 900 s timeout of the first migration run). With a
# fixed action PATH the keys no longer depend on who calls Bazel.
BUILD_FLAGS = ["-c", "opt", "--symlink_prefix=/", "--incompatible_strict_action_env"]


def bazel(args: argparse.Namespace, *argv: str, **kwargs) -> subprocess.CompletedProcess:
    startup = [f"--output_base={args.output_base}"] if args.output_base else []
    return subprocess.run(["bazel", *startup, *argv, *BUILD_FLAGS], cwd=ROOT, **kwargs)


def build(args: argparse.Namespace, targets: List[str], work_dir: str) -> str:
    log(f"building (-c opt): {' '.join(targets)}")
    build_log = os.path.join(work_dir, "build.log")
    with open(build_log, "w") as f:
        proc = bazel(args, "build", *targets, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        sys.stderr.write(_read(build_log)[-4000:])
        raise SystemExit(f"build failed (log {build_log})")
    return bazel(args, "info", "bazel-bin", capture_output=True, text=True, check=True).stdout.strip()


# ----------------------------------------------------------------------------- output

def _fmt(value: Optional[float]) -> str:
    if value is None:
        return ""
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def table(results: Dict[str, SectionResult], titles: Dict[str, str]) -> str:
    """The latency table of every section with rows, then each section's own tables."""
    parts = []
    with_rows = {name: r for name, r in results.items() if r.rows}
    if with_rows:
        lines = ["| benchmark | min µs | p50 µs | p99 µs | notes |", "|---|---:|---:|---:|---|"]
        for name, result in with_rows.items():
            lines.append(f"| **{titles[name]}** | | | | |")
            for row in result.rows:
                lines.append(f"| {row.benchmark} | {_fmt(row.min_us)} | {_fmt(row.p50_us)} | {_fmt(row.p99_us)} | "
                             f"{row.other} |")
        parts.append("\n".join(lines))
    parts += [t for r in results.values() for t in r.tables]
    return "\n\n".join(parts)


def ensure_gnuplot() -> Optional[str]:
    """gnuplot, installed from Debian (gnuplot-nox) if missing; None if that fails."""
    if shutil.which("gnuplot"):
        return shutil.which("gnuplot")
    log("installing gnuplot-nox (Debian) for the plot")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = sudo + ["apt-get", "install", "-y", "-qq", "gnuplot-nox"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(sudo + ["apt-get", "update", "-qq"], env=env, capture_output=True)
        subprocess.run(install, env=env, capture_output=True)
    return shutil.which("gnuplot")


def _gp_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def plot(panels: List[Panel], title: str, png: str, work_dir: str) -> bool:
    gnuplot = ensure_gnuplot()
    if not gnuplot or not panels:
        log("no plot: gnuplot is not available" if not gnuplot else "no plot: nothing to draw")
        return False
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    terminals = subprocess.run([gnuplot, "-e", "set terminal"], capture_output=True, text=True)
    terminal = "pngcairo" if "pngcairo" in terminals.stdout + terminals.stderr else "png"
    script = [f"set terminal {terminal} size {800 * cols},{520 * rows + 40} font ',10'",
              f"set output {_gp_str(png)}",
              f"set multiplot layout {rows},{cols} title {_gp_str(title)}",
              "set style data histograms", "set style histogram clustered gap 1",
              "set style fill solid 0.85 border -1", "set boxwidth 0.9", "set grid ytics",
              "set key top left", "set datafile missing 'NaN'"]
    for i, panel in enumerate(panels):
        names = list(panel.series)
        script.append(f"$D{i} << EOD")
        for c, category in enumerate(panel.categories):
            values = [panel.series[n][c] for n in names]
            script.append(" ".join([_gp_str(category)] + ["NaN" if v is None else repr(float(v)) for v in values]))
        script.append("EOD")
        script += [f"set title {_gp_str(panel.title)}", f"set ylabel {_gp_str(panel.ylabel)}",
                   "set logscale y" if panel.logscale else "unset logscale y",
                   "set yrange [*:*]" if panel.logscale else "set yrange [0:*]"]
        plots = [f"$D{i} using {j + 2}{':xtic(1)' if j == 0 else ''} title {_gp_str(n)}" for j, n in enumerate(names)]
        script.append("plot " + ", ".join(plots))
    script.append("unset multiplot")
    path = os.path.join(work_dir, "plot.gp")
    with open(path, "w") as f:
        f.write("\n".join(script) + "\n")
    proc = subprocess.run([gnuplot, path], capture_output=True, text=True)
    if proc.returncode != 0:
        log(f"gnuplot failed ({path}): {proc.stderr.strip()[-500:]}")
        return False
    return True


def machine_line(doc: Dict) -> str:
    m = doc["machine"]
    load = doc["load"]
    during = [s.get("loadavg_1m_max") for s in load.get("during", {}).values() if s]
    busy = [s.get("cpu_busy_percent_mean") for s in load.get("during", {}).values() if s]
    others = [s.get("others_cpu_busy_percent_before") for s in load.get("during", {}).values() if s]
    return (f"{doc['date']} on `{m['host']}`: {m['cpu_model']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, "
            f"`{m['uname']}`, KVM modules {', '.join(m['kvm_modules']) or 'none'}. "
            f"Load average before: {', '.join(map(str, load['before']['loadavg_1_5_15']))}; "
            f"1-min load during sections up to {max(during) if during else '?'}, "
            f"CPU busy without us right before each section {', '.join(f'{o}%' for o in others) or '?'}, "
            f"with us during it {', '.join(f'{b}%' for b in busy) or '?'}; "
            f"after: {', '.join(map(str, load['after']['loadavg_1_5_15']))}.")


def readme_markers(only: List[str]):
    """The README block a run owns: the whole-run block, or with --only its own block for
    those sections, so a partial run never erases the other sections' latest table."""
    if not only:
        return TABLE_BEGIN, TABLE_END, "## Latest results"
    key = ",".join(sorted(only))
    return (f"<!-- bench:latest:begin[{key}] (written by bench/run.py) -->", f"<!-- bench:latest:end[{key}] -->",
            f"## Latest results: {', '.join(sorted(only))}")


def update_readme(doc: Dict, table_md: str, notes: List[str], png_rel: Optional[str], json_rel: str,
                  only: List[str]) -> None:
    begin, end, heading = readme_markers(only)
    block = [begin, "", f"Run {'(quick) ' if doc['quick'] else ''}{machine_line(doc)}", "",
             f"Raw data: [`{json_rel}`]({json_rel})" + (f", plot: [`{png_rel}`]({png_rel})" if png_rel else "") + ".",
             "", table_md, ""]
    block += [f"- {n}" for n in notes]
    block += ["", end]
    text = _read(README)
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + "\n".join(block) + tail
    else:
        text = text.rstrip() + f"\n\n{heading}\n\n" + "\n".join(block) + "\n"
    with open(README, "w") as f:
        f.write(text)


# ----------------------------------------------------------------------------- main

def _stop(signum, frame):
    # Unwinds through the sections' clean-up (a section's vexd and its workers), which a
    # plain SIGTERM death would skip: workers outlive vexd by design.
    raise SystemExit(f"bench: stopped by signal {signum}; cleaned up")


def main() -> int:
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGHUP, _stop)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="CI-sized run, under 2 minutes once built")
    parser.add_argument("--only", action="append", default=[], metavar="SECTION",
                        help=f"run only these sections ({', '.join(s.name for s in SECTIONS)})")
    parser.add_argument("--repetitions", type=int, help="repetitions per benchmark (default 5, quick 1)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="profiles where a section has them: callgrind instruction counts, perf CPU split "
                             "(default: on unless --quick)")
    parser.add_argument("--update-readme", action=argparse.BooleanOptionalAction, default=None,
                        help="write the table into bench/README.md (default: on unless --quick)")
    parser.add_argument("--output-base", default=os.environ.get("VEXSTATE_BENCH_OUTPUT_BASE", ""),
                        help="Bazel --output_base (default: $VEXSTATE_BENCH_OUTPUT_BASE, else Bazel's own)")
    parser.add_argument("--results-dir", default=os.path.join(HERE, "results"))
    parser.add_argument("--runs-per-ram", action="append", default=[], metavar="MIB=N",
                        help="migration/restore: N runs for the cells of a MIB guest instead of the default "
                             "(recorded per cell in the JSON)")
    parser.add_argument("--deadline", metavar="HH:MM",
                        help="start no new migration/restore cell after this local time; the cells left are "
                             "recorded as skipped")
    parser.add_argument("--build-only", action="store_true",
                        help="build what the selected sections need (the runner's own flags) and stop")
    parser.add_argument("--baseline", metavar="JSON",
                        help="an earlier results file: sections record their numbers next to it (before/after)")
    args = parser.parse_args()
    repetitions = args.repetitions or (1 if args.quick else 5)
    profile = (not args.quick) if args.profile is None else args.profile
    update = (not args.quick) if args.update_readme is None else args.update_readme

    runs_per_ram = {}
    for spec in args.runs_per_ram:
        ram, _, runs = spec.partition("=")
        if not (ram.isdigit() and runs.isdigit() and int(runs) > 0):
            parser.error(f"--runs-per-ram {spec!r}: expected MIB=N, e.g. 8192=1")
        runs_per_ram[int(ram)] = int(runs)
    deadline = None
    if args.deadline:
        try:
            clock = datetime.datetime.strptime(args.deadline, "%H:%M").time()
        except ValueError:
            parser.error(f"--deadline {args.deadline!r}: expected HH:MM")
        deadline = datetime.datetime.combine(datetime.date.today(), clock).timestamp()
    unknown = set(args.only) - {s.name for s in SECTIONS}
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    sections = [s for s in SECTIONS if not args.only or s.name in args.only]

    started = time.time()
    now = datetime.datetime.now()
    doc = {"schema": 1, "date": now.strftime("%Y-%m-%d %H:%M:%S"), "quick": args.quick,
           "repetitions": repetitions, "machine": machine_info(), "build": {"compilation_mode": "opt"},
           "load": {"before": load_snapshot(), "during": {}}, "sections": {}}
    log(f"load before: {doc['load']['before']['uptime']}")
    work_dir = tempfile.mkdtemp(prefix="vexstate-bench-")
    log(f"raw outputs and logs: {work_dir}")

    runnable = []
    for section in sections:
        reason = section.unavailable()
        if reason:
            log(f"{section.name}: skipped: {reason}")
            doc["sections"][section.name] = {"skipped": reason}
        else:
            runnable.append(section)
    targets = sorted({t for s in runnable for t in s.bazel_targets})
    bazel_bin = build(args, targets, work_dir) if targets else ""
    doc["build"]["seconds"] = round(time.time() - started, 1)
    doc["build"]["flags"] = BUILD_FLAGS
    if args.build_only:
        log(f"built in {doc['build']['seconds']} s: bazel build {' '.join(targets + BUILD_FLAGS)}")
        return 0

    baseline = None
    if args.baseline:
        with open(args.baseline) as f:
            baseline = json.load(f)
        doc["baseline"] = {"file": os.path.relpath(os.path.abspath(args.baseline), HERE), "date": baseline.get("date"),
                           "git": baseline.get("machine", {}).get("git")}
    ctx = Context(root=ROOT, bazel_bin=bazel_bin, quick=args.quick, repetitions=repetitions, work_dir=work_dir,
                  profile=profile, log=log, baseline=baseline, runs_per_ram=runs_per_ram, deadline=deadline)
    doc["options"] = {"runs_per_ram_mib": {str(k): v for k, v in runs_per_ram.items()},
                      "deadline": args.deadline}
    results: Dict[str, SectionResult] = {}
    failed = []
    with LoadSampler() as sampler:
        for section in runnable:
            # What the others on this machine use while this run is idle: the load our
            # numbers were measured under (the "during" figures include our own work).
            others = busy_percent(2.0)
            log(f"{section.name}: running (CPU busy before it, without us: {others}%)")
            t0 = time.time()
            try:
                result = section.run(ctx)
                results[section.name] = result
                doc["sections"][section.name] = result.data
            except Exception as e:  # one broken section must not hide the others' results
                traceback.print_exc()
                failed.append(section.name)
                doc["sections"][section.name] = {"error": str(e)[-2000:]}
            t1 = time.time()
            doc["sections"].setdefault(section.name, {})["seconds"] = round(t1 - t0, 1)
            doc["load"]["during"][section.name] = dict(sampler.summary(t0, t1),
                                                       others_cpu_busy_percent_before=others)
            log(f"{section.name}: {t1 - t0:.0f} s, load {doc['load']['during'][section.name]}")
    doc["load"]["after"] = load_snapshot()
    doc["seconds"] = round(time.time() - started, 1)

    titles = {s.name: s.title for s in SECTIONS}
    table_md = table(results, titles)
    notes = [n for r in results.values() for n in r.notes]
    doc["table"] = {name: [vars(row) for row in r.rows] for name, r in results.items()}

    os.makedirs(args.results_dir, exist_ok=True)
    host = doc["machine"]["host"]
    # A partial run (--only) is named after its sections: it never replaces a whole run's file.
    only = "".join(f"-{name}" for name in sorted(args.only))
    stem = os.path.join(args.results_dir, f"{now.strftime('%Y-%m-%d')}-{host}{only}{'-quick' if args.quick else ''}")
    panels = [p for r in results.values() for p in r.panels]
    png = stem + ".png"
    plotted = plot(panels, f"vexstate benchmarks, {host}, {doc['date']} (load avg before "
                           f"{doc['load']['before']['loadavg_1_5_15'][0]})", png, work_dir)
    doc["plot"] = os.path.basename(png) if plotted else None
    with open(stem + ".json", "w") as f:
        json.dump(doc, f, indent=1, sort_keys=False)
        f.write("\n")

    print()
    print(machine_line(doc))
    print()
    print(table_md)
    print()
    for note in notes:
        print(f"- {note}")
    print(f"\nresults: {stem}.json" + (f", {png}" if plotted else "") + f" ({doc['seconds']:.0f} s)")
    if update and results:
        rel = os.path.relpath(stem, HERE)
        update_readme(doc, table_md, notes, rel + ".png" if plotted else None, rel + ".json", args.only)
        log(f"wrote the table into {os.path.relpath(README, ROOT)}")
    if failed:
        log(f"FAILED sections: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
