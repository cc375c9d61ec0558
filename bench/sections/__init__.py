"""The benchmark sections, in the order bench/run.py runs them.

To add one (SPEC §8: migration vs QEMU, snapshot restore time-to-running): write
bench/sections/<name>.py with a Section subclass (see base.py: list its Bazel targets,
implement run() returning rows for the table, panels for the plot and data for the JSON),
and append an instance here. The runner does the rest: build, machine info and load,
JSON, plot, table, README.
"""
from .control_plane import ControlPlaneSection
from .exception_state import ExceptionStateSection
from .migration import MigrationSection
from .restore import RestoreSection

# Restore before migration: it is the shorter of the two, so a run bounded by --deadline
# (which stops starting new cells) loses the migration matrix's largest cells, not all of restore.
SECTIONS = [
    ExceptionStateSection(),
    ControlPlaneSection(),
    RestoreSection(),
    MigrationSection(),
]
