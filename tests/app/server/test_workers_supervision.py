"""The `--workers` supervisor: exit status after a forced kill, restart backoff, bounded
metrics files after restarts, private directories kept fresh (`app/server/workers.py`)."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aiodicom.app.server.metrics_shared import fold_into_archive
from aiodicom.app.server.workers import RestartBackoff, keep_fresh, runtime_dir

SUPERVISOR = """
import sys
from pathlib import Path
import aiodicom.app.server.workers as w
from aiodicom.app.server.config import ServeOptions
w.worker_argv = lambda path: [sys.executable, "-c", sys.argv[1]]
sys.exit(w.run_workers(ServeOptions(port=int(sys.argv[2]), storage=Path(sys.argv[3]),
                                    workers=1, drain_timeout=0)))
"""

STUBBORN = """
import signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print("ready", flush=True)
while True:
    time.sleep(1)
"""


def _supervisor(worker_code: str, tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", SUPERVISOR, worker_code, "11112",
                             str(tmp_path / "s")], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _read_until(proc: subprocess.Popen[str], pattern: str, lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        if re.search(pattern, line):
            return
    raise AssertionError(f"{pattern!r} never logged:\n{''.join(lines)}")


def test_a_worker_killed_after_the_drain_timeout_is_exit_status_1(tmp_path: Path) -> None:
    proc = _supervisor(STUBBORN, tmp_path)
    lines: list[str] = []
    try:
        _read_until(proc, "ready", lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        lines.append(proc.stdout.read())
        proc.stdout.close()
    assert "killed (SIGKILL)" in "".join(lines)


def test_a_worker_failing_at_start_is_restarted_with_growing_delays(tmp_path: Path) -> None:
    proc = _supervisor("raise SystemExit(3)", tmp_path)
    lines: list[str] = []
    try:
        for _ in range(3):
            _read_until(proc, "starting a replacement", lines)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0  # every live worker (none) stopped by itself
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        proc.stdout.close()
    delays = [float(m.group(1)) for line in lines
              if (m := re.search(r"exited with 3 .*replacement in ([0-9.]+) s", line))]
    assert delays == [0.5, 1.0, 2.0], lines


def test_restart_backoff_doubles_caps_and_resets_after_a_stable_run() -> None:
    backoff = RestartBackoff(first=0.5, cap=4.0, stable=60.0)
    assert [backoff.delay(0.1) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert backoff.delay(61.0) == 0.5  # it had stayed up: a fresh start
    assert backoff.delay(0.1) == 1.0


def test_dead_workers_files_fold_into_one_archive_and_totals_stay(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.mmap_dict import MmapedDict, mmap_key
    from prometheus_client.multiprocess import MultiProcessCollector

    key = mmap_key("jobs", "jobs_total", ["kind"], ["a"], "jobs done")
    for pid, value in ((101, 3.0), (102, 4.0), (103, 5.0)):
        f = MmapedDict(str(tmp_path / f"counter_{pid}.db"))
        f.write_value(key, value, 0.0)
        f.close()
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))

    def total() -> str:
        return generate_latest(registry).decode()

    assert 'jobs_total{kind="a"} 12.0' in total()
    for pid in (101, 102):  # two restarts
        fold_into_archive(tmp_path / f"counter_{pid}.db", tmp_path / "counter_archive.db")
        assert 'jobs_total{kind="a"} 12.0' in total()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["counter_103.db",
                                                          "counter_archive.db"]
    fold_into_archive(tmp_path / "counter_999.db", tmp_path / "counter_archive.db")  # none
    assert 'jobs_total{kind="a"} 12.0' in total()


def test_runtime_dir_prefers_the_runtime_directory(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNTIME_DIRECTORY", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    made = runtime_dir("aiodicom-test-")
    assert made.parent == tmp_path and stat.S_IMODE(made.stat().st_mode) == 0o700
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path / "missing"))
    assert runtime_dir("aiodicom-test-").parent == tmp_path  # an unusable one is skipped


def test_keep_fresh_touches_the_directory_and_its_files(tmp_path: Path) -> None:
    (tmp_path / "worker0.toml").write_text("x")
    old = time.time() - 11 * 86400  # older than systemd-tmpfiles' 10 days for /tmp
    for path in (tmp_path / "worker0.toml", tmp_path):
        os.utime(path, (old, old))
    keep_fresh(tmp_path, tmp_path / "gone")
    for path in (tmp_path / "worker0.toml", tmp_path):
        assert path.stat().st_mtime > old + 86400 and path.stat().st_atime > old + 86400
