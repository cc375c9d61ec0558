"""What the two-host migration tests share beyond tools/two_hosts.py (which holds the Lab, the
witness checks and the scenario runner): their binaries from Bazel runfiles, the #MC they
inject, and a runner bound to those binaries."""
import os
import sys

RUNFILES = os.environ.get("TEST_SRCDIR", "")
WORKSPACE = os.environ.get("TEST_WORKSPACE", "vexstate")


def runfile(path):
    for base in (os.path.join(RUNFILES, WORKSPACE), os.getcwd()):
        candidate = os.path.join(base, path)
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(path)


sys.path.insert(0, os.path.dirname(runfile("tools/two_hosts.py")))
import two_hosts  # noqa: E402
from two_hosts import (NMI_HOLD_MASK, WORKLOAD, Binaries, Failure, Lab, check, exc_reports,  # noqa: E402,F401
                       expect_memory_intact, hold_nmi_and_make_one_pending, last_sequence, parse_migration,
                       paused_events, release_nmi_and_expect_once, vec)

BINARIES = Binaries.from_runfiles(runfile)

MC_STATUS = "0xbc0000000000009f"
MC_ARGS = ["--bank", "3", "--status", MC_STATUS, "--addr", "0x12345000", "--misc", "0x86", "--mcg-status", "0x5"]


def run_scenarios(suite_name, scenarios, make_hosts, summary=None):
    """two_hosts.run_scenarios with this test's binaries: each scenario is called as
    scenario(lab, *make_hosts(lab)). The exit status."""
    return two_hosts.run_scenarios(suite_name, scenarios, BINARIES, make_hosts, summary=summary)
