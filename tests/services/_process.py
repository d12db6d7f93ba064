"""Process plumbing shared by the service starters: free ports, bounded waits, certain stops.

Every service runs in its own process group (``start_new_session``) so a stop kills it and
anything it forked; an ``atexit`` hook stops whatever a crashed test left running.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0
PORT_ATTEMPTS = 4


class ServiceError(RuntimeError):
    """A service could not be started (missing binary, bad config, did not answer in time)."""


class PortInUse(ServiceError):
    """The service could not bind the port picked for it (taken meanwhile): pick another."""


_RUNNING: set[ServiceProcess] = set()


def require_binary(path: str | Path, *, hint: str) -> Path:
    """The executable at ``path``, or a ServiceError saying how to install it (never a skip)."""
    p = Path(path)
    if not (p.is_file() and os.access(p, os.X_OK)):
        raise ServiceError(f"{p} is missing or not executable: {hint}")
    return p


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to 0, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_answers(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts a TCP connection on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def listens_on(pid: int, port: int) -> bool:
    """True when process ``pid`` itself holds a listening TCP socket on ``port`` (Linux /proc).

    A connect test alone cannot tell the service from whatever else took the port meanwhile.
    """
    inodes: set[str] = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
    except OSError:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port \
                        and cols[9] in inodes:
                    return True
    return False


class ServiceProcess:
    """A child process in its own process group, with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, *,
                 env: dict[str, str] | None = None, cwd: Path | None = None,
                 stop_signal: int = signal.SIGTERM) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.stop_signal = stop_signal
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        try:
            self.popen = subprocess.Popen(
                self.argv, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
                env=env, cwd=cwd, start_new_session=True)
        except OSError as exc:
            self._log.close()
            raise ServiceError(f"{name}: cannot run {self.argv[0]}: {exc}") from exc
        self.pid = self.popen.pid
        _RUNNING.add(self)

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def wait_ready(self, ready: Callable[[], bool], *, timeout: float = START_TIMEOUT,
                   bind_failure: Sequence[str] = ()) -> None:
        """Poll ``ready`` until true; fail (and stop) when the process exits or time runs out.

        A log line containing one of ``bind_failure`` turns the failure into PortInUse, so the
        caller retries on another port.
        """
        deadline = time.monotonic() + timeout
        delay = 0.05
        while True:
            if not self.alive():
                self.stop()
                tail = self.log_tail()
                if any(marker in tail for marker in bind_failure):
                    raise PortInUse(f"{self.name}: port taken\n{tail}")
                raise ServiceError(
                    f"{self.name} exited with status {self.popen.returncode} before it answered "
                    f"({' '.join(self.argv)}); log {self.log_path}:\n{tail}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            if time.monotonic() > deadline:
                self.stop()
                tail = self.log_tail()
                if any(marker in tail for marker in bind_failure):
                    raise PortInUse(f"{self.name}: port taken\n{tail}")
                raise ServiceError(f"{self.name} did not answer within {timeout:.0f} s; "
                                   f"log {self.log_path}:\n{tail}")
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop the whole process group: the stop signal, then SIGKILL; always reaps."""
        if self in _RUNNING:
            _RUNNING.discard(self)
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, self.stop_signal)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Whatever the leader did, nothing of the group survives (forked children included).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        if not self._log.closed:
            self._log.close()


def retry_on_port_in_use(start: Callable[[int], T], *, attempts: int = PORT_ATTEMPTS) -> T:
    """Call ``start(port)`` with fresh free ports until one does not raise PortInUse."""
    last: PortInUse | None = None
    for _ in range(attempts):
        try:
            return start(free_port())
        except PortInUse as exc:
            last = exc
    raise ServiceError(f"no free port after {attempts} attempts: {last}")


@contextlib.contextmanager
def running(proc: ServiceProcess) -> Iterator[ServiceProcess]:
    try:
        yield proc
    finally:
        proc.stop()


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_RUNNING):
        proc.stop(timeout=3.0)
