"""What a benchmark section is, and what it hands back to bench/run.py.

A section measures one thing of SPEC §8 (exception-state capture/restore, control plane,
and later migration vs QEMU and snapshot restore). The runner builds the Bazel targets every
section lists, then calls each section's run() with a Context, and turns the results into
the JSON file, the table and the plot. A section never writes results files itself.
"""
import dataclasses
import os
import subprocess
import time
from typing import Any, Callable, Dict, List, Optional


@dataclasses.dataclass
class Context:
    """What the runner gives every section."""
    root: str             # the repository
    bazel_bin: str        # bazel-bin of the -c opt build
    quick: bool           # --quick: CI-sized, the whole run under 2 minutes
    repetitions: int      # repetitions of each benchmark (Google Benchmark --benchmark_repetitions)
    work_dir: str         # scratch space for this run (raw outputs, logs); kept for inspection
    profile: bool         # run profiles (callgrind, perf) where a section has them
    log: Callable[[str], None]
    baseline: Optional[Dict[str, Any]] = None  # an earlier results file (--baseline), to compare with
    # --runs-per-ram MIB=N: fewer (or more) runs for the cells of one guest size, when the
    # whole matrix does not fit the time there is; the sections record what each cell ran.
    runs_per_ram: Dict[int, int] = dataclasses.field(default_factory=dict)
    # --deadline: wall-clock time (time.time()) after which a section starts no new cell; the
    # cells it did not start are recorded as skipped, with this reason.
    deadline: Optional[float] = None

    def runs_for(self, ram_mib: int, default: int) -> int:
        return self.runs_per_ram.get(ram_mib, default)

    def past_deadline(self) -> Optional[str]:
        """Why no new cell may start now (the --deadline has passed), or None."""
        if self.deadline is not None and time.time() >= self.deadline:
            return f"not started: past the run's --deadline {time.strftime('%H:%M', time.localtime(self.deadline))}"
        return None

    def baseline_section(self, name: str) -> Optional[Dict[str, Any]]:
        """The baseline's data for section `name`, if it has any."""
        data = (self.baseline or {}).get("sections", {}).get(name)
        return data if data and "error" not in data and "skipped" not in data else None

    def binary(self, label: str) -> str:
        """Path of a built binary, e.g. '//bench:exception_state_bench'."""
        package, name = label.lstrip("/").split(":")
        return os.path.join(self.bazel_bin, package, name)

    def run(self, argv: List[str], log_name: str, timeout: float, **kwargs) -> subprocess.CompletedProcess:
        """Runs argv with stdout+stderr to work_dir/log_name; raises on a non-zero exit."""
        path = os.path.join(self.work_dir, log_name)
        with open(path, "w") as log:
            proc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, timeout=timeout, **kwargs)
        if proc.returncode != 0:
            with open(path) as log:
                tail = log.read()[-3000:]
            raise RuntimeError(f"{os.path.basename(argv[0])} exited with {proc.returncode} (log {path}):\n{tail}")
        return proc


@dataclasses.dataclass
class Row:
    """One line of the results table. Times in microseconds; None = not applicable."""
    benchmark: str
    min_us: Optional[float] = None
    p50_us: Optional[float] = None
    p99_us: Optional[float] = None
    other: str = ""       # throughput, ratio, ... already formatted


@dataclasses.dataclass
class Panel:
    """One plot: clustered bars, one cluster per category, one bar per series."""
    title: str
    ylabel: str
    categories: List[str]
    series: Dict[str, List[Optional[float]]]  # name -> one value per category (None = missing)
    logscale: bool = False


@dataclasses.dataclass
class SectionResult:
    data: Dict[str, Any]                 # goes into the JSON file under the section's name
    rows: List[Row]
    panels: List[Panel] = dataclasses.field(default_factory=list)
    notes: List[str] = dataclasses.field(default_factory=list)  # printed under the table
    # Markdown tables of the section's own shape (e.g. vexstate | QEMU | ratio per cell),
    # printed after the latency table; a section may give rows, tables or both.
    tables: List[str] = dataclasses.field(default_factory=list)


class Section:
    """Subclass, set the class attributes, implement run(); list it in sections/__init__.py."""
    name = ""                 # JSON key and --only value
    title = ""                # table heading
    bazel_targets: List[str] = []

    def unavailable(self) -> Optional[str]:
        """Why this section cannot run on this machine (None: it can)."""
        return None

    def run(self, ctx: Context) -> SectionResult:
        raise NotImplementedError
