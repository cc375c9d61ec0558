"""Reading Google Benchmark JSON output (benchmark 1.7) across repetitions.

Every repetition of a benchmark is one "iteration" entry in the JSON, with its counters as
top-level keys (the latency counters of bench/latency.h: min_us, p50_us, p90_us, p99_us,
max_us, samples). Summaries across repetitions:
  min_us            the minimum over repetitions (the least-disturbed sample seen);
  any other key     the median over repetitions, with the spread [lowest, highest] kept
                    alongside, so one noisy repetition on a shared machine does not decide.
"""
import json
import re
import statistics
from typing import Any, Dict, List

# Suffixes Google Benchmark appends to a name for options, not for what is measured.
_OPTION_SUFFIX = re.compile(r"/(iterations:\d+|real_time|manual_time|min_time:[0-9.]+|repeats:\d+)")

_UNIT_TO_US = {"ns": 1e-3, "us": 1.0, "ms": 1e3, "s": 1e6}

# Keys that are not measurements.
_SKIP = {"name", "run_name", "run_type", "family_index", "per_family_instance_index", "repetitions",
         "repetition_index", "threads", "iterations", "time_unit", "label", "aggregate_name",
         "aggregate_unit", "error_occurred", "error_message", "cpu_time", "real_time"}


def short_name(run_name: str) -> str:
    return _OPTION_SUFFIX.sub("", run_name)


def load(path: str) -> Dict[str, Any]:
    """{"context": ..., "benchmarks": {short name: summary}, "truncated": bool} from a
    --benchmark_out JSON file (truncated: the program died; the complete entries are kept)."""
    with open(path) as f:
        text = f.read()
    truncated = False
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        # The program died mid-run: Google Benchmark writes one entry at a time, so keep
        # every complete entry (each ends with a line "    }").
        cut = text.rfind("\n    }")
        if cut < 0:
            raise
        doc = json.loads(text[:cut] + "\n    }\n  ]\n}\n")
        truncated = True
    reps: Dict[str, List[Dict[str, Any]]] = {}
    errors: Dict[str, str] = {}
    for b in doc.get("benchmarks", []):
        if b.get("run_type", "iteration") != "iteration":
            continue
        name = short_name(b.get("run_name", b["name"]))
        if b.get("error_occurred"):
            errors[name] = b.get("error_message", "error")
            continue
        reps.setdefault(name, []).append(b)
    out = {}
    for name, runs in reps.items():
        out[name] = summarize(runs)
    for name, message in errors.items():
        out.setdefault(name, {})["error"] = message
    return {"context": doc.get("context", {}), "benchmarks": out, "truncated": truncated}


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    unit = _UNIT_TO_US[runs[0].get("time_unit", "ns")]
    values: Dict[str, List[float]] = {"real_time_us": [r["real_time"] * unit for r in runs]}
    for r in runs:
        for key, value in r.items():
            if key in _SKIP or not isinstance(value, (int, float)):
                continue
            values.setdefault(key, []).append(float(value))
    summary: Dict[str, Any] = {
        "repetitions": len(runs),
        "iterations": runs[0].get("iterations"),
        "threads": runs[0].get("threads", 1),
    }
    if runs[0].get("label"):
        summary["label"] = runs[0]["label"]
    for key, vals in values.items():
        if key.endswith("min_us"):
            summary[key] = min(vals)
        else:
            summary[key] = statistics.median(vals)
        if len(vals) > 1:
            summary[key + "_spread"] = [min(vals), max(vals)]
    return summary
