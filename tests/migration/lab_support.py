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

# Test-only fault-injection hooks, read from the SOURCE vexd's environment (its workers inherit
# them): migration/testing_phase_delay.h and migration/testing_corrupt_run.h.
PHASE_DELAY = "VEXSTATE_TESTING_PHASE_DELAY"
CORRUPT_RUN = "VEXSTATE_TESTING_CORRUPT_RUN"

MC_STATUS = "0xbc0000000000009f"
MC_ARGS = ["--bank", "3", "--status", MC_STATUS, "--addr", "0x12345000", "--misc", "0x86", "--mcg-status", "0x5"]


def run_scenarios(suite_name, scenarios, make_hosts, summary=None):
    """two_hosts.run_scenarios with this test's binaries: each scenario is called as
    scenario(lab, *make_hosts(lab)). The exit status."""
    return two_hosts.run_scenarios(suite_name, scenarios, BINARIES, make_hosts, summary=summary)


def migration_id_of(migrated):
    """The migration id a `vexctl --json migrate` run reported (parse_migration's tuple)."""
    ids = {p.get("migration_id") for p in migrated[2] if p.get("migration_id")}
    check(len(ids) == 1, f"the migration reported ids {ids}")
    return ids.pop()


def journal_holds(host, vm, migration_id):
    """Whether `host`'s vexd journal record of `vm` (a binary VmRecord) still names the migration:
    a record that does would be settled with the destination by a restarted vexd."""
    path = os.path.join(host.state, "vms", f"{vm}.record")
    if not os.path.exists(path):
        return False
    with open(path, "rb") as f:
        return migration_id.encode() in f.read()
