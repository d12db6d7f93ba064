"""`aiodicom serve --workers N`: N worker processes sharing the listening ports.

Each worker is `aiodicom serve --config WORKER.toml` (every option, written by the
supervisor) with one event loop, binding with SO_REUSEPORT so the kernel
spreads connections across them. The supervisor replaces a worker that dies (logged),
forwards SIGHUP (reload) and on SIGTERM/SIGINT asks every worker to drain, then exits 0.
With ``--metrics``, the supervisor serves the one ``/metrics`` of the run: the workers
write prometheus_client's multiprocess files (`app/server/metrics_shared.py`).
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

__all__ = ["run_workers", "worker_argv", "worker_config"]

log = logging.getLogger("aiodicom.workers")

WORKER_ENV = "AIODICOM_WORKER"


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
    config_dir = Path(tempfile.mkdtemp(prefix="aiodicom-workers-"))
    argvs = []
    for i in range(options.workers):
        path = config_dir / f"worker{i}.toml"
        path.write_text(worker_config(options, i), encoding="utf-8")
        argvs.append(worker_argv(path))
    env = {**os.environ, WORKER_ENV: str(os.getpid())}  # workers watch this pid
    workers: list[subprocess.Popen[bytes]] = []
    stopping = False
    shared = None
    if options.metrics is not None:  # only then is prometheus_client imported at all
        from aiodicom.app.server.metrics_shared import SharedMetrics
        from aiodicom.errors import ConfigurationError

        shared = SharedMetrics(options.metrics, lambda: [p.pid for p in workers
                                                         if p.returncode is None])
        try:
            host, port = shared.start()
        except ConfigurationError as exc:
            log.error("%s", exc)
            shutil.rmtree(config_dir, ignore_errors=True)
            return 2
        env.update(shared.env())
        log.info("listening for metrics on %s:%d (all workers)", host, port)

    def on_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    def on_hup(signum: int, frame: FrameType | None) -> None:
        for proc in workers:
            proc.send_signal(signal.SIGHUP)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)
    workers += [subprocess.Popen(argv, env=env) for argv in argvs]
    log.info("started %d workers: %s", len(workers), ", ".join(str(p.pid) for p in workers))
    while not stopping:
        for i, proc in enumerate(workers):
            code = proc.poll()
            if code is not None and not stopping:
                log.error("worker %d exited with %d; starting a replacement", proc.pid, code)
                if shared is not None:
                    shared.worker_exited(proc.pid)
                workers[i] = subprocess.Popen(argvs[i], env=env)
        time.sleep(0.5)  # supervisor only: no association waits on this loop
    for proc in workers:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + options.drain_timeout + 5
    for proc in workers:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if shared is not None:
        shared.close()
    shutil.rmtree(config_dir, ignore_errors=True)
    return 0
