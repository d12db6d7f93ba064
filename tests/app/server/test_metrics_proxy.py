"""PROXY listener counters (`Server.proxy_stats`) on /metrics, one process and --workers 2."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

from aiodicom.aio._proxy import ProxyStats
from aiodicom.app.server.metrics import Metrics, register_proxy_metrics
from aiodicom.core.proxy_header import encode_proxy_header
from tests.app.server.test_metrics import parse
from tests.app.server.test_workers import AIODICOM, _children, _scrape, _wait
from tests.interop.peers import free_port

NAMES = ("aiodicom_proxy_refused_sources_total", "aiodicom_proxy_bad_headers_total",
         "aiodicom_proxy_header_timeouts_total", "aiodicom_proxy_probes_total",
         "aiodicom_proxy_relayed_total")


def test_proxy_counters_follow_the_stats_once_per_change() -> None:
    stats = ProxyStats()
    metrics = Metrics()
    register_proxy_metrics(metrics, stats)
    s = parse(metrics.render())
    assert [s[name] for name in NAMES] == [0, 0, 0, 0, 0]
    assert "# TYPE aiodicom_proxy_probes_total counter" in metrics.render()
    stats.refused_sources, stats.bad_headers, stats.timeouts = 3, 2, 1
    stats.probes, stats.relayed = 7, 11
    s = parse(metrics.render())
    assert [s[name] for name in NAMES] == [3, 2, 1, 7, 11]
    s = parse(metrics.render())  # scraped again, nothing new: not counted again
    assert [s[name] for name in NAMES] == [3, 2, 1, 7, 11]
    stats.probes += 1
    assert parse(metrics.render())["aiodicom_proxy_probes_total"] == 8


def test_stats_read_at_scrape_time_in_a_single_process() -> None:
    """A stats object that is not a ProxyStats but has its fields (duck typing) is read."""
    stats = SimpleNamespace(refused_sources=0, bad_headers=0, timeouts=0, probes=0, relayed=0)
    metrics = Metrics()
    register_proxy_metrics(metrics, stats)
    stats.bad_headers = 4
    assert parse(metrics.render())["aiodicom_proxy_bad_headers_total"] == 4


def _connect(port: int, payload: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        try:  # the server may close as soon as it has seen enough
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(4096):  # the server closes: read to EOF
                pass
        except OSError:
            pass


def test_workers_sum_proxy_counters_without_double_counting(tmp_path: Path) -> None:
    """serve --workers 2 --proxy-protocol --metrics: garbage instead of a header and LOCAL
    health-check probes land on both workers; the one endpoint shows exactly as many as
    were sent (each worker counts its own, the supervisor sums the files)."""
    port, metrics_port = free_port(), free_port()
    output = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [AIODICOM, "serve", "--workers", "2", "--port", str(port), "--storage",
         str(tmp_path / "s"), "--drain-timeout", "2", "--metrics", str(metrics_port),
         "--proxy-protocol", "--proxy-from", "127.0.0.1"],
        stdout=output, stderr=subprocess.STDOUT,
    )
    try:
        _wait(lambda: len(_children(proc.pid)) == 2, 20, "two workers")
        deadline = time.monotonic() + 30
        while True:  # both workers listening (SO_REUSEPORT): a connect succeeds
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the workers never listened"
                time.sleep(0.2)
        bad, probes = 30, 30
        for _ in range(bad):
            _connect(port, b"GET / HTTP/1.0\r\n\r\n" + b"x" * 16)
        for _ in range(probes):
            _connect(port, encode_proxy_header(None))
        # the first connect above (no header, closed at once) is a bad header or a probe;
        # workers refresh their files every 2 s: wait for every connection to be counted
        def counted() -> bool:
            s = _scrape(metrics_port)
            return (s.get("aiodicom_proxy_bad_headers_total", 0)
                    + s.get("aiodicom_proxy_probes_total", 0)) >= bad + probes + 1
        _wait(counted, 30, "the workers' PROXY counters")
        time.sleep(4.5)  # two more refreshes of each worker: nothing may be added twice
        s = _scrape(metrics_port)
        assert s["aiodicom_proxy_bad_headers_total"] + s["aiodicom_proxy_probes_total"] \
            == bad + probes + 1
        assert bad <= s["aiodicom_proxy_bad_headers_total"] <= bad + 1
        assert probes <= s["aiodicom_proxy_probes_total"] <= probes + 1
        assert s["aiodicom_proxy_refused_sources_total"] == 0
        assert s["aiodicom_proxy_relayed_total"] == 0
        assert 'aiodicom_proxy_bad_headers_total{pid=' not in str(s)  # one sum, no per-worker
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in _children(proc.pid) if proc.poll() is None else ():
            os.kill(pid, signal.SIGKILL)
        output.close()
