"""`aiodicom serve --workers 2`: workers serve, a killed one is replaced, SIGTERM exits 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
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
        expected = dataclasses.replace(options, workers=1)  # the supervisor serves metrics
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


def _scrape(port: int) -> dict[str, float]:
    from tests.app.server.test_metrics import parse

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return parse(answer.read().decode())


def _accepted_in_files(directory: Path, pid: int) -> float:
    """One worker's own count, read from its multiprocess file (not through the endpoint)."""
    from prometheus_client.mmap_dict import MmapedDict

    path = directory / f"counter_{pid}.db"
    if not path.exists():
        return 0.0
    total = 0.0
    for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
        _, name, labels, _ = json.loads(key)
        if name == "aiodicom_associations_total" and labels == {"result": "accepted"}:
            total += value
    return total


def test_one_metrics_endpoint_sums_the_workers(tmp_path: Path) -> None:
    """--workers 2 --metrics PORT: associations land on both workers, one scrape shows the
    sum; each worker's process metrics carry its pid; a killed worker's counts stay."""
    port, metrics_port = free_port(), free_port()
    # The server's log goes to a file: the loop below may make hundreds of associations
    # while the kernel keeps choosing one worker (under load the other starts late), and
    # an undrained pipe fills at 64 KiB and blocks the workers' log writes (a CI failure).
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [AIODICOM, "serve", "--workers", "2", "--port", str(port), "--storage",
         str(tmp_path / "s"), "--drain-timeout", "2", "--metrics", str(metrics_port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        _wait(lambda: len(_children(proc.pid)) == 2, 20, "two workers")
        workers = sorted(_children(proc.pid))
        environ = Path(f"/proc/{workers[0]}/environ").read_bytes().split(b"\0")
        directory = Path(next(v for v in environ if v.startswith(b"PROMETHEUS_MULTIPROC_DIR="))
                         .split(b"=", 1)[1].decode())
        _wait(lambda: _echo_in_process(port), 20, "a worker answering C-ECHO")
        sent = 1
        deadline = time.monotonic() + 60
        while not all(_accepted_in_files(directory, pid) > 0 for pid in workers):
            assert time.monotonic() < deadline, "the kernel never chose one of the workers"
            assert _echo_in_process(port)
            sent += 1
        # the release is counted just after the client sees it: wait for the last one
        _wait(lambda: _scrape(metrics_port).get(
            'aiodicom_associations_ended_total{how="released"}') == sent, 20, "the releases")
        samples = _scrape(metrics_port)
        per_worker = [_accepted_in_files(directory, pid) for pid in workers]
        assert sum(per_worker) == sent and min(per_worker) >= 1
        assert samples['aiodicom_associations_total{result="accepted"}'] == sent
        assert samples['aiodicom_requests_total{service="C-ECHO",status_category="success"}'] \
            == sent
        assert samples["aiodicom_associations_active"] == 0
        for pid in workers:
            assert samples[f'process_resident_memory_bytes{{pid="{pid}"}}'] > 1_000_000
        assert "process_resident_memory_bytes" not in samples  # never one unlabelled process

        os.kill(workers[0], signal.SIGKILL)
        _wait(lambda: len(_children(proc.pid)) == 2 and workers[0] not in _children(proc.pid),
              20, "a replacement worker")
        assert _echo_in_process(port)
        after = _scrape(metrics_port)
        assert after['aiodicom_associations_total{result="accepted"}'] == sent + 1
        assert f'process_resident_memory_bytes{{pid="{workers[0]}"}}' not in after
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert not directory.exists()  # the supervisor removes its run's directory
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _echo_in_process(port: int) -> bool:
    import asyncio

    from aiodicom.aio.client import connect
    from aiodicom.core.dimse import Status

    async def main() -> bool:
        async with connect("127.0.0.1", port) as assoc:
            return await assoc.echo() == Status.SUCCESS

    from aiodicom.errors import ConnectError

    try:
        return asyncio.run(main())
    except (OSError, ConnectError):  # not listening yet
        return False
