"""Process plumbing: free ports, CPU pinning, /proc accounting of a process tree, clean kills.

CPU time and memory are read from /proc for the server's whole process tree (aiodicom's
worker processes, a forking server's children): utime+stime+cutime+cstime of every live
process, so reaped children still count through their parent's cutime/cstime.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CLIENT_CPU", "CLIENT_ENV", "SERVER_CPU", "ClientRun", "RssSampler", "cpu_seconds", "free_port",
    "listening", "pinned", "rss_kb", "run_client", "stop_process", "tree_pids", "vmhwm_kb",
]

_TICKS = os.sysconf("SC_CLK_TCK")
_CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPU: int | None = _CPUS[0] if len(_CPUS) >= 2 else None
CLIENT_CPU: int | None = _CPUS[1] if len(_CPUS) >= 2 else None
_TASKSET = shutil.which("taskset")

# DCMTK leaves Nagle on unless told; without this every DCMTK peer is ~50x slower.
CLIENT_ENV = {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    """A port the kernel just handed out (bind to 0, close): free at the time of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def pinned(argv: Sequence[str], cpu: int | None) -> list[str]:
    """`argv` run under `taskset -c cpu` when there is a core to pin to."""
    if cpu is None or _TASKSET is None:
        return list(argv)
    return [_TASKSET, "-c", str(cpu), *argv]


def listening(port: int) -> bool:
    """True when some socket is in LISTEN state on `port` (no connection attempt is made)."""
    want = f":{port:04X} "
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if (parts[1] + " ").endswith(want) and parts[3] == "0A":
                return True
    return False


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def tree_pids(root: int) -> list[int]:
    """`root` and all its live descendants."""
    children = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def cpu_seconds(root: int) -> float:
    """User+system CPU seconds of the tree under `root`, reaped children included."""
    total = 0
    for pid in tree_pids(root):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state): utime..cstime are fields 14..17.
        total += sum(int(x) for x in fields[11:15])
    return total / _TICKS


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kb(root: int) -> int:
    """Current resident set of the tree, KiB."""
    return sum(_status_kb(pid, "VmRSS:") for pid in tree_pids(root))


def vmhwm_kb(root: int) -> int:
    """Sum of each live process's peak resident set (VmHWM), KiB."""
    return sum(_status_kb(pid, "VmHWM:") for pid in tree_pids(root))


@dataclass
class RssSampler:
    """Samples the tree's VmRSS every `interval` seconds in a thread; `peak_kb` is the max."""

    root: int
    interval: float = 0.05
    peak_kb: int = 0
    trace: list[tuple[float, int]] = field(default_factory=list)
    """(time.monotonic(), KiB) of every sample: where in a run the peak falls."""
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> RssSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        kb = rss_kb(self.root)
        self.trace.append((time.monotonic(), kb))
        self.peak_kb = max(self.peak_kb, kb)


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientRun:
    argv: list[str]
    returncode: int
    wall: float
    cpu: float
    output: str

    def tail(self, lines: int = 8) -> str:
        return "\n".join(self.output.strip().splitlines()[-lines:])


def run_client(argv: Sequence[str], timeout: float = 600.0) -> ClientRun:
    """Run a client pinned to the client core; wall time and its CPU time (rusage)."""
    full = pinned(argv, CLIENT_CPU)
    before = os.times()
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            full, env=CLIENT_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            timeout=timeout, check=False,
        )
        wall = time.perf_counter() - start
        code, out = proc.returncode, proc.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired as exc:
        wall = time.perf_counter() - start
        raw = exc.stdout or b""
        code, out = -1, (raw if isinstance(raw, bytes) else raw.encode()).decode(errors="replace")
        out += f"\n(timed out after {timeout:.0f} s)"
    after = os.times()
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return ClientRun(argv=list(full), returncode=code, wall=wall, cpu=cpu, output=out)


def stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """SIGTERM the process group we created for `proc`; SIGKILL whatever of it lingers."""
    members = tree_pids(proc.pid) if proc.poll() is None else []
    if members:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    for pid in members:  # workers or forks that outlived the leader, only from our group
        try:
            if os.getpgid(pid) == proc.pid:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if proc.poll() is None:
        proc.kill()
        proc.wait(grace)
