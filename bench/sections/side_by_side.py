"""Figures of repeated runs, vexstate next to QEMU: min/median/max per metric, the ratio of
medians, and the markdown table and plot panel both sections (migration, restore) print."""
import statistics
from typing import Dict, List, Optional

from .base import Panel

STACKS = ("vexstate", "qemu")


def spread(values: List[Optional[float]]) -> Optional[Dict]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None
    return {"min": min(vals), "median": statistics.median(vals), "max": max(vals), "n": len(vals)}


def summarize(runs: Dict[str, List[Dict]], metrics: List[str]) -> Dict:
    """{metric: {stack: spread, "ratio_vexstate_over_qemu": median ratio}} from each stack's runs."""
    out = {}
    for metric in metrics:
        entry = {stack: spread([r.get(metric) for r in runs.get(stack, [])]) for stack in STACKS}
        v, q = entry["vexstate"], entry["qemu"]
        entry["ratio_vexstate_over_qemu"] = (round(v["median"] / q["median"], 3)
                                             if v and q and q["median"] else None)
        out[metric] = entry
    return out


def run_stacks(log, what: str, entry: Dict, stacks, metrics: List[str]) -> Dict:
    """Runs each (stack, fn) — fn() returns (runs, boot figures) — into `entry`: runs, boot,
    errors, summary. One stack failing keeps the other's numbers. Returns the summary."""
    runs_by_stack = {}
    for stack, fn in stacks:
        try:
            runs_by_stack[stack], entry[f"{stack}_boot"] = fn()
        except Exception as e:
            entry[f"{stack}_error"] = str(e)[-1500:]
            log(f"{what} {stack}: FAILED: {str(e)[-500:]}")
            runs_by_stack[stack] = []
    entry["runs"] = runs_by_stack
    entry["summary"] = summarize(runs_by_stack, metrics)
    return entry["summary"]


def matrix(entries: Dict[str, Dict]) -> Dict[str, Dict]:
    """Which cells ran, with how many runs per stack (planned and done), and which did not and why:
    the JSON says exactly what a partial matrix holds."""
    out = {}
    for name, entry in entries.items():
        if "skipped" in entry:
            out[name] = {"ran": False, "why": entry["skipped"]}
            continue
        runs = entry.get("runs", {})
        out[name] = {"ran": True, "runs_planned": entry.get("runs_planned"),
                     "runs_done": {stack: len(runs.get(stack, [])) for stack in STACKS},
                     "errors": [stack for stack in STACKS if f"{stack}_error" in entry]}
    return out


def problem_notes(section: str, entries: Dict[str, Dict]) -> List[str]:
    """A note for every skipped cell and every stack that failed in it."""
    return [f"{section} {name}: {key.replace('_', ' ')}: {entry[key][:300]}"
            for name, entry in entries.items() for key in ("skipped", "vexstate_error", "qemu_error") if key in entry]


def _num(x: float) -> str:
    if x >= 100:
        return f"{x:,.0f}"
    return f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _cell(s: Optional[Dict]) -> str:
    if not s:
        return "—"
    if s["n"] == 1:
        return _num(s["median"])
    return f"{_num(s['median'])} ({_num(s['min'])}–{_num(s['max'])})"


def table(title: str, cells: Dict[str, Dict], metrics: Dict[str, str]) -> str:
    """Markdown: one row per (cell, metric), median (min–max) per stack, ratio of medians."""
    lines = [f"**{title}**", "",
             "| cell | metric | vexstate median (min–max) | QEMU 7.2 median (min–max) | vexstate/QEMU |",
             "|---|---|---:|---:|---:|"]
    for cell, summary in cells.items():
        for metric, label in metrics.items():
            entry = summary.get(metric)
            if not entry:
                continue
            ratio = entry.get("ratio_vexstate_over_qemu")
            lines.append(f"| {cell} | {label} | {_cell(entry['vexstate'])} | {_cell(entry['qemu'])} | "
                         f"{'' if ratio is None else f'{ratio:.2f}x'} |")
    return "\n".join(lines)


def panel(title: str, ylabel: str, cells: Dict[str, Dict], metric: str, logscale: bool = True) -> Panel:
    names = {"vexstate": "vexstate", "qemu": "QEMU 7.2"}
    series = {names[s]: [(summary.get(metric, {}).get(s) or {}).get("median") for summary in cells.values()]
              for s in STACKS}
    return Panel(title=title, ylabel=ylabel, categories=list(cells), series=series, logscale=logscale)
