"""Logs every CPython garbage collection of this process, with its duration, to a file.

Put this directory on PYTHONPATH and name the file in AIODICOM_BENCH_GC_LOG; `site` imports
this module at start-up, so the process under test (`aiodicom serve`, a load generator) runs
unchanged. One line per collection, line-buffered so nothing is lost when the process is
killed:

    <CLOCK_MONOTONIC start, s> <generation> <duration, ms> <objects collected>

CLOCK_MONOTONIC is system-wide, so pauses line up with echo timestamps from other processes.
Bench tooling only; never imported by the package.
"""

from __future__ import annotations

import os

_PATH = os.environ.get("AIODICOM_BENCH_GC_LOG")

if _PATH:
    import gc
    import time

    _out = open(_PATH, "a", buffering=1)  # noqa: SIM115 (lives as long as the process)
    _clock = time.monotonic
    _started = [0.0]

    def _on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            _started[0] = _clock()
            return
        t0 = _started[0]
        _out.write(
            f"{t0:.6f} {info['generation']} {(_clock() - t0) * 1000:.3f} {info['collected']}\n")

    gc.callbacks.append(_on_gc)
