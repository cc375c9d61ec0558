"""The witness guest's console as the benchmarks read it: UDP datagrams, timestamped on arrival.

Both stacks send their guest's console bytes to a UDP port of ours: QEMU through
`-chardev udp` behind COM1, vexd's workers through VEXSTATE_CONSOLE_UDP
(server/worker/console_mirror.h), one datagram per byte. One reader thread takes every
datagram of every channel and stamps it with CLOCK_MONOTONIC as it arrives, so a gap between
the last heartbeat of one channel and the first of another is measured the same way whatever
stack sent them.

A heartbeat is a '.' outside a report line (guests/common/witness_abi.h); other bytes build
lines ("VEX TOUCHED cpu=0 pages=...").
"""
import bisect
import selectors
import socket
import threading
import time
from typing import Dict, List, Optional, Tuple

HEARTBEAT = ord(".")
NEWLINE = ord("\n")


class Channel:
    """One console: the heartbeats and lines it delivered, with arrival times (ns, monotonic)."""

    def __init__(self, name: str):
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.heartbeats: List[int] = []
        self.lines: List[Tuple[int, str]] = []
        self._partial = bytearray()

    def feed(self, data: bytes, now_ns: int) -> None:
        for byte in data:
            if byte == HEARTBEAT and not self._partial:
                self.heartbeats.append(now_ns)
            elif byte == NEWLINE:
                self.lines.append((now_ns, self._partial.decode(errors="replace")))
                self._partial.clear()
            else:
                self._partial.append(byte)


class ConsoleReader:
    """Channels by name and the thread that reads them. Use as a context manager."""

    def __init__(self, names: List[str]):
        self.channels: Dict[str, Channel] = {n: Channel(n) for n in names}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        for c in self.channels.values():
            c.sock.close()
        return False

    def __getitem__(self, name: str) -> Channel:
        return self.channels[name]

    def _loop(self) -> None:
        sel = selectors.DefaultSelector()
        for c in self.channels.values():
            sel.register(c.sock, selectors.EVENT_READ, c)
        while not self._stop.is_set():
            for key, _ in sel.select(timeout=0.1):
                channel = key.data
                while True:
                    try:
                        data = channel.sock.recv(4096)
                    except BlockingIOError:
                        break
                    now = time.monotonic_ns()
                    with self._lock:
                        channel.feed(data, now)

    def reset(self, name: str) -> None:
        """Forgets what a channel saw (a new run on the same port)."""
        with self._lock:
            c = self.channels[name]
            c.heartbeats, c.lines, c._partial = [], [], bytearray()

    def heartbeats(self, name: str) -> List[int]:
        with self._lock:
            return list(self.channels[name].heartbeats)

    def wait_line(self, name: str, prefix: str, timeout: float, since_ns: int = 0) -> Optional[Tuple[int, str]]:
        """The first line of `name` starting with `prefix` that arrived after since_ns."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                for t, line in self.channels[name].lines:
                    if t >= since_ns and line.startswith(prefix):
                        return t, line
            if time.monotonic() > deadline:
                return None
            time.sleep(0.02)

    def wait_heartbeat(self, name: str, after_ns: int, timeout: float) -> Optional[int]:
        """Arrival time of the first heartbeat of `name` after after_ns."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                beats = self.channels[name].heartbeats
                i = bisect.bisect_right(beats, after_ns)
                later = beats[i] if i < len(beats) else None
            if later is not None:
                return later
            if time.monotonic() > deadline:
                return None
            time.sleep(0.005)

    def lines(self, name: str) -> List[Tuple[int, str]]:
        with self._lock:
            return list(self.channels[name].lines)


def gap(reader: ConsoleReader, source: str, destination: str, since_ns: int, timeout: float = 10.0) -> Dict:
    """The guest-visible gap of a migration started at since_ns: last source heartbeat to the
    first destination heartbeat, in ms; also the heartbeat period seen on the source before
    (the floor of any gap). overlap_ms > 0 means both guests beat at once (never expected)."""
    first_dst = reader.wait_heartbeat(destination, since_ns, timeout)
    src = [t for t in reader.heartbeats(source) if t >= since_ns]
    out: Dict = {"source_heartbeats_during": len(src)}
    before = [t for t in reader.heartbeats(source) if t < since_ns][-1000:]
    if len(before) > 10:
        periods = sorted(b - a for a, b in zip(before, before[1:]))
        out["heartbeat_period_ms_median"] = round(periods[len(periods) // 2] / 1e6, 3)
    if first_dst is None or not src:
        out["gap_ms"] = None
        out["error"] = "no destination heartbeat" if first_dst is None else "no source heartbeat after the start"
        return out
    last_src_before_dst = [t for t in src if t <= first_dst]
    last_src = src[-1]
    out["gap_ms"] = round((first_dst - (last_src_before_dst[-1] if last_src_before_dst else last_src)) / 1e6, 3)
    out["overlap_ms"] = round(max(0, last_src - first_dst) / 1e6, 3)
    return out
