"""vexd hosts for the benchmarks, on loopback: tools/two_hosts.py's Lab (state dirs, tokens,
mutual-TLS migration listeners from tools/make_certs.sh, clean-up of daemons and workers),
with each host's guest console mirrored to a UDP channel of ours (VEXSTATE_CONSOLE_UDP)."""
import contextlib
import os
import shutil
import socket
import sys
from typing import Optional

from .base import Context

VEXD = "//server:vexd"
WORKER = "//server/worker:vexd_worker"
VEXCTL = "//client:vexctl"
WITNESS = "//guests/x86_64:witness_elf"
TARGETS = [VEXD, WORKER, VEXCTL, WITNESS]


def two_hosts(ctx: Context):
    """The tools/two_hosts module (imported from the repository's tools/)."""
    tools = os.path.join(ctx.root, "tools")
    if tools not in sys.path:
        sys.path.insert(0, tools)
    import two_hosts  # noqa: E402
    return two_hosts


@contextlib.contextmanager
def lab(ctx: Context, section: str):
    th = two_hosts(ctx)
    binaries = th.Binaries(vexd=ctx.binary(VEXD), worker=ctx.binary(WORKER), vexctl=ctx.binary(VEXCTL),
                           make_certs=os.path.join(ctx.root, "tools", "make_certs.sh"))
    # Loopback even as root: the benchmark compares with QEMU over loopback TCP.
    with th.Lab(binaries, use_netns=False, log=ctx.log) as lab_:
        try:
            yield lab_
        finally:
            keep_logs(lab_, os.path.join(ctx.work_dir, f"vexd-logs-{section}"))


def keep_logs(lab_, into: str) -> None:
    """Copies every host's vexd and worker logs out of the lab (which deletes its directory on
    exit) into the run's work directory: where a migration spent its time is in them."""
    for host in lab_.hosts:
        home = os.path.dirname(host.state)  # vexd.log and the state dir (workers' logs)
        for root, _, files in os.walk(home):
            for f in files:
                if f.endswith(".log"):
                    dst = os.path.join(into, host.name, os.path.relpath(os.path.join(root, f), home))
                    os.makedirs(os.path.dirname(dst), exist_ok=True)
                    shutil.copyfile(os.path.join(root, f), dst)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def add_host(lab_, name: str, console_address: str):
    """A vexd on loopback whose VMs' consoles go to console_address."""
    lab_.next_port = free_port()  # not the Lab's fixed 7500: a test may be using it
    return lab_.add_host("src", name=name, env={"VEXSTATE_CONSOLE_UDP": console_address})


def host_tsc_khz(host) -> Optional[int]:
    """KVM's TSC rate as vexd reports it (`vexctl host caps`), for QEMU's guest pacing."""
    for doc in host.json("host", "caps"):
        found = _find(doc, "tsc_khz")
        if found:
            return int(found)
    return None


def _find(doc, key):
    if isinstance(doc, dict):
        for k, v in doc.items():
            if k == key:
                return v
            found = _find(v, key)
            if found:
                return found
    elif isinstance(doc, list):
        for v in doc:
            found = _find(v, key)
            if found:
                return found
    return None


def witness_flags(settings) -> list:
    """vexctl flags for the witness settings (the same keys as the QEMU command line)."""
    names = {"heartbeat_ms": "--heartbeat-ms", "workset_pages": "--workset-pages",
             "dirty_pages_per_sec": "--dirty-pages-per-sec", "touch_pages": "--touch-pages"}
    out = []
    for key, value in settings.items():
        if key in names:
            out += [names[key], str(int(value))]
    return out
