"""Where the CPU went during a window: a system-wide `perf record -e cpu-clock` (a software
event: this VM has no PMU for perf), split by process kind, library and symbol.

On a shared 2-CPU machine a latency is as much "who else ran" as "what our code did", so the
split starts with our processes against everyone else's, then says, per process kind, how much
was kernel (scheduling, futexes, sockets), gRPC, KVM ioctls, or our own code.
"""
import collections
import os
import re
import shutil
import subprocess
from typing import Callable, Dict

_FRAME = re.compile(r"\s*[0-9a-f]+ (.*) \((.*)\)\s*$")


def available() -> bool:
    return shutil.which("perf") is not None


def record(out_dir: str, seconds: float) -> Dict[str, str]:
    """Records every CPU for `seconds`, with a `ps` snapshot taken meanwhile (pid -> program)."""
    data = os.path.join(out_dir, "perf.data")
    ps_file = os.path.join(out_dir, "perf.ps.txt")
    perf = subprocess.Popen(["perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", "499", "-o", data, "--",
                             "sleep", str(seconds)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        perf.wait(timeout=min(2.0, seconds / 2))
    except subprocess.TimeoutExpired:
        pass
    with open(ps_file, "w") as f:
        subprocess.run(["ps", "-eo", "pid,args"], stdout=f)
    perf.wait()
    return {"data": data, "ps": ps_file}


def split(files: Dict[str, str], classify: Callable[[str], str]) -> Dict:
    """{kind: {percent, by_dso, top_symbols, entry_points}}; `classify` maps a program name
    ("vexd", "cc1plus", ...) to a kind ("vexd", "others", ...)."""
    programs = {}
    with open(files["ps"]) as f:
        for line in f.read().splitlines()[1:]:
            pid, _, args = line.strip().partition(" ")
            programs[pid] = os.path.basename(args.split()[0]) if args else "?"
    script = subprocess.run(["perf", "script", "-i", files["data"], "-F", "pid,tid,ip,sym,dso"],
                            capture_output=True, text=True).stdout
    kinds = collections.Counter()
    dsos = collections.defaultdict(collections.Counter)
    syms = collections.defaultdict(collections.Counter)
    entries = collections.defaultdict(collections.Counter)
    for block in script.split("\n\n"):
        lines = [line for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        pid = lines[0].strip().split("/")[0]
        kind = "idle" if pid == "0" else classify(programs.get(pid, "exited"))
        kinds[kind] += 1
        frames = [m for m in (_FRAME.match(line) for line in lines[1:]) if m]
        if not frames:
            continue
        dsos[kind][os.path.basename(frames[0].group(2))] += 1
        syms[kind][frames[0].group(1)[:80]] += 1
        # The first user-space frame: which call took the process into the kernel (or ran).
        user = next((m for m in frames if "kernel" not in m.group(2) and m.group(1) != "[unknown]"), None)
        if user:
            entries[kind][user.group(1)[:80]] += 1
    total = sum(kinds.values()) or 1
    out = {"samples": total}
    for kind, n in kinds.most_common():
        entry = {"percent_of_all_cpu": round(100 * n / total, 1)}
        if kind not in ("idle", "others"):
            entry["by_dso_percent"] = {d: round(100 * c / n, 1) for d, c in dsos[kind].most_common(6)}
            entry["top_symbols_percent"] = {s: round(100 * c / n, 1) for s, c in syms[kind].most_common(6)}
            entry["entry_points_percent"] = {s: round(100 * c / n, 1) for s, c in entries[kind].most_common(6)}
        out[kind] = entry
    return out
