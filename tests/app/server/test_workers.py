"""`aiodicom serve --workers 2`: workers serve, a killed one is replaced, SIGTERM exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.interop.peers import free_port

AIODICOM = str(Path(sys.executable).with_name("aiodicom"))


def _children(pid: int) -> set[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(x) for x in path.read_text().split()} if path.exists() else set()


def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _echo(port: int) -> int:
    return subprocess.run([AIODICOM, "echo", "127.0.0.1", str(port)], capture_output=True,
                          timeout=30).returncode


def test_workers_serve_replace_and_stop(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [AIODICOM, "serve", "--workers", "2", "--port", str(port), "--storage",
         str(tmp_path / "s"), "--drain-timeout", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        _wait(lambda: len(_children(proc.pid)) == 2, 20, "two workers")
        _wait(lambda: _echo(port) == 0, 20, "a worker answering C-ECHO")
        first = _children(proc.pid)
        victim = min(first)
        os.kill(victim, signal.SIGKILL)
        _wait(lambda: len(_children(proc.pid) - first) == 1 and victim not in _children(proc.pid),
              20, "a replacement worker")
        assert len(_children(proc.pid)) == 2
        for _ in range(4):  # whichever worker the kernel picks answers
            assert _echo(port) == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None
        log = proc.stdout.read().decode(errors="replace")
        proc.stdout.close()
    assert "starting a replacement" in log


def test_worker_config_carries_every_option(tmp_path: Path) -> None:
    """What a worker reads back equals what the supervisor was given (but workers = 1)."""
    import dataclasses

    from aiodicom.app.server.config import ServeOptions, load_config, merge
    from aiodicom.app.server.workers import worker_config

    users = tmp_path / "users.toml"
    users.write_text("[users]\n")
    options = ServeOptions(
        ae_title="GW1", port=11112, storage=tmp_path / "s", workers=3, users=users,
        require_user_identity=True, tls_profile="bcp195-modified", fsync=True,
        duplicates="reject", metrics="127.0.0.1:9100", drain_timeout=2.5,
        log_format="json", require_ae_binding=True,
    )
    for index in range(3):
        path = tmp_path / f"w{index}.toml"
        path.write_text(worker_config(options, index))
        back = merge(load_config(path), {})
        expected = dataclasses.replace(options, workers=1, metrics=f"127.0.0.1:{9100 + index}")
        assert back == expected


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    """SIGKILL to the supervisor (no chance to forward anything) still ends its workers."""
    port = free_port()
    proc = subprocess.Popen(
        [AIODICOM, "serve", "--workers", "2", "--port", str(port), "--storage",
         str(tmp_path / "s"), "--drain-timeout", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: len(_children(proc.pid)) == 2, 20, "two workers")
        workers = _children(proc.pid)
        proc.kill()
        proc.wait(timeout=10)
        _wait(lambda: not any(Path(f"/proc/{pid}").exists() and
                              "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
                              for pid in workers), 20, "the orphaned workers to exit")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _children(proc.pid) if proc.poll() is None else ():
            os.kill(pid, signal.SIGKILL)
