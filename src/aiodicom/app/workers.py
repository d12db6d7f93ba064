"""`aiodicom serve --workers N`: N worker processes sharing the listening ports.

Each worker is `aiodicom serve` with one event loop, binding with SO_REUSEPORT so the kernel
spreads connections across them. The supervisor replaces a worker that dies (logged),
forwards SIGHUP (reload) and on SIGTERM/SIGINT asks every worker to drain, then exits 0.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from aiodicom.app.config import ServeOptions

__all__ = ["run_workers", "worker_argv"]

log = logging.getLogger("aiodicom.workers")

WORKER_ENV = "AIODICOM_WORKER"


def worker_argv(options: ServeOptions, index: int = 0) -> list[str]:
    """The command line of worker ``index``; each worker gets its own metrics port
    (PORT + index), since a Prometheus endpoint reports one process."""
    argv = [sys.executable, "-m", "aiodicom.app.cli", "serve", "--workers", "1"]
    metrics = None
    if options.metrics is not None:
        from aiodicom.app.metrics import parse_listen_address

        host, port = parse_listen_address(options.metrics)
        metrics = f"[{host}]:{port + index}" if ":" in host else f"{host}:{port + index}"
    for name, value in (
        ("--policy", options.policy), ("--audit-log", options.audit_log),
        ("--audit-syslog", options.audit_syslog), ("--metrics", metrics),
        ("--ae-title", options.ae_title), ("--host", options.host), ("--port", options.port),
        ("--tls-port", options.tls_port), ("--cert", options.cert), ("--key", options.key),
        ("--ca", options.ca), ("--crl", options.crl), ("--storage", options.storage),
        ("--log-format", options.log_format), ("--log-level", options.log_level),
        ("--drain-timeout", options.drain_timeout),
        ("--max-associations", options.max_associations),
        ("--max-pdu-length", options.max_pdu_length),
    ):
        if value is not None:
            argv += [name, str(value)]
    if options.require_ae_binding:
        argv.append("--require-ae-binding")
    return argv


def run_workers(options: ServeOptions) -> int:
    from aiodicom.app.serve import configure_logging

    configure_logging(options.log_format, options.log_level)
    if 0 in (options.port, options.tls_port):
        log.error("--workers needs fixed ports (port 0 would give each worker its own port)")
        return 2
    argvs = [worker_argv(options, i) for i in range(options.workers)]
    env = {**os.environ, WORKER_ENV: "1"}
    workers: list[subprocess.Popen[bytes]] = []
    stopping = False

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
    return 0
