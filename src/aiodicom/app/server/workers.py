"""`aiodicom serve --workers N`: N worker processes sharing the listening ports.

Each worker is `aiodicom serve --config WORKER.toml` (every option, written by the
supervisor) with one event loop, binding with SO_REUSEPORT so the kernel
spreads connections across them. The supervisor replaces a worker that dies (logged), with
an exponential backoff (`RestartBackoff`) so a worker that fails at start is not restarted
twice a second forever; it forwards SIGHUP (reload) and on SIGTERM/SIGINT asks every worker
to drain, then exits 0 if every worker stopped by itself, 1 if one had to be killed (SIGKILL
after ``drain_timeout`` + 5 s) or stopped with an error.
With ``--metrics``, the supervisor serves the one ``/metrics`` of the run: the workers
write prometheus_client's multiprocess files (`app/server/metrics_shared.py`).

The worker configs and the metrics files live in a private directory (0700) under
``$RUNTIME_DIRECTORY`` (systemd's ``RuntimeDirectory=``) or ``$XDG_RUNTIME_DIR`` when set,
else under ``TMPDIR``; either way the supervisor touches them hourly, so a /tmp cleaner
(systemd-tmpfiles ages /tmp entries by 10 days) never removes them under a long run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

import tomli_w

from aiodicom.app.server.config import ServeOptions

__all__ = ["RestartBackoff", "keep_fresh", "run_workers", "runtime_dir", "worker_argv",
           "worker_config"]

log = logging.getLogger("aiodicom.workers")

WORKER_ENV = "AIODICOM_WORKER"
TOUCH_INTERVAL = 3600.0
"""Seconds between two touches of the run's private directories (`keep_fresh`)."""


class RestartBackoff:
    """Delay before restarting a worker slot: ``first`` after a worker that stayed up
    ``stable`` seconds or more, else twice the previous delay, at most ``cap``."""

    def __init__(self, first: float = 0.5, cap: float = 30.0, stable: float = 60.0) -> None:
        self.first, self.cap, self.stable = first, cap, stable
        self._next = first

    def delay(self, uptime: float) -> float:
        """The worker exited after ``uptime`` seconds: wait this long before the next."""
        if uptime >= self.stable:
            self._next = self.first
        delay = self._next
        self._next = min(self.cap, delay * 2)
        return delay


def runtime_dir(prefix: str) -> Path:
    """A new private directory (0700) for this run: under ``$RUNTIME_DIRECTORY`` or
    ``$XDG_RUNTIME_DIR`` when one is set and usable, else under ``TMPDIR`` (/tmp)."""
    for name in ("RUNTIME_DIRECTORY", "XDG_RUNTIME_DIR"):
        base = os.environ.get(name, "").split(":")[0]
        if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            return Path(tempfile.mkdtemp(prefix=prefix, dir=base))
    return Path(tempfile.mkdtemp(prefix=prefix))  # mkdtemp: mode 0700


def keep_fresh(*directories: Path) -> None:
    """Touch each directory and what it holds (atime and mtime now): an age-based cleaner
    of /tmp (systemd-tmpfiles) then never finds them old. Missing entries are skipped."""
    for directory in directories:
        for path in (directory, *directory.glob("*")):
            try:
                os.utime(path)
            except OSError:
                pass


def _plain(value: object) -> object:
    """A value tomli-w can write: paths as strings, mappings as dicts, None left out above."""
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def worker_config(options: ServeOptions, index: int = 0) -> str:
    """Worker ``index``'s options as TOML: every option travels, none can be dropped.

    Written by tomli-w, which quotes any path or AE title correctly (a non-BMP character
    included). ``metrics`` travels as given: a worker records, the supervisor serves.
    """
    values = {f.name: getattr(options, f.name) for f in dataclasses.fields(options)}
    values["workers"] = 1
    return tomli_w.dumps({k: _plain(v) for k, v in values.items() if v is not None})


def worker_argv(config_path: Path) -> list[str]:
    return [sys.executable, "-m", "aiodicom.app.cli.main", "serve", "--config", str(config_path)]


def run_workers(options: ServeOptions) -> int:
    from aiodicom.app.server.run import configure_logging

    configure_logging(options.log_format, options.log_level)
    if 0 in (options.port, options.tls_port):
        log.error("--workers needs fixed ports (port 0 would give each worker its own port)")
        return 2
    config_dir = runtime_dir("aiodicom-workers-")
    argvs = []
    for i in range(options.workers):
        path = config_dir / f"worker{i}.toml"
        path.write_text(worker_config(options, i), encoding="utf-8")
        argvs.append(worker_argv(path))
    env = {**os.environ, WORKER_ENV: str(os.getpid())}  # workers watch this pid
    workers: list[subprocess.Popen[bytes] | None] = []
    stopping = False
    shared = None
    fresh = [config_dir]
    if options.metrics is not None:  # only then is prometheus_client imported at all
        from aiodicom.app.server.metrics_shared import SharedMetrics
        from aiodicom.errors import ConfigurationError

        shared = SharedMetrics(options.metrics, lambda: [p.pid for p in workers if p is not None
                                                         and p.returncode is None],
                               directory=runtime_dir("aiodicom-metrics-"))
        fresh.append(shared.directory)
        try:
            host, port = shared.start()
        except ConfigurationError as exc:
            log.error("%s", exc)
            shutil.rmtree(config_dir, ignore_errors=True)
            return 1  # as a single process whose metrics port cannot be bound
        env.update(shared.env())
        log.info("listening for metrics on %s:%d (all workers)", host, port)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum: int, frame: FrameType | None) -> None:
        for proc in workers:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    workers += [subprocess.Popen(argv, env=env) for argv in argvs]
    started = [time.monotonic()] * len(workers)
    backoffs = [RestartBackoff() for _ in workers]
    restart_at: list[float | None] = [None] * len(workers)
    touched = time.monotonic()
    log.info("started %d workers: %s", len(workers),
             ", ".join(str(p.pid) for p in workers if p is not None))
    while not stopping:
        now = time.monotonic()
        for i, proc in enumerate(workers):
            if proc is not None and (code := proc.poll()) is not None:
                uptime = now - started[i]
                delay = backoffs[i].delay(uptime)
                log.error("worker %d exited with %d after %.1f s; starting a replacement in "
                          "%.1f s", proc.pid, code, uptime, delay)
                if shared is not None:
                    shared.worker_exited(proc.pid)
                workers[i], restart_at[i] = None, now + delay
            at = restart_at[i]
            if workers[i] is None and at is not None and now >= at and not stopping:
                workers[i], restart_at[i] = subprocess.Popen(argvs[i], env=env), None
                started[i] = now
        if now - touched >= TOUCH_INTERVAL:
            keep_fresh(*fresh)
            touched = now
        time.sleep(0.5)  # supervisor only: no association waits on this loop
    live = [p for p in workers if p is not None]
    for proc in live:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + options.drain_timeout + 5
    status = 0
    for proc in live:
        try:
            code = proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error("worker %d did not stop within %.0f s of SIGTERM: killed (SIGKILL); "
                      "exit status 1", proc.pid, options.drain_timeout + 5)
            proc.kill()
            proc.wait()
            status = 1
            continue
        if code not in (0, -signal.SIGTERM):  # -SIGTERM: still starting, nothing served
            log.error("worker %d stopped with status %d; exit status 1", proc.pid, code)
            status = 1
    if shared is not None:
        shared.close()
    shutil.rmtree(config_dir, ignore_errors=True)
    return status
