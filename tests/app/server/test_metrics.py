"""app.metrics: the exposition format, the observer end to end, the HTTP endpoint."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.app.server.metrics import (
    MetricsObserver,
    parse_listen_address,
    serve_metrics,
)
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)
from aiodicom.errors import AssociationRejected, ConfigurationError
from tests.conftest import write_ct

CT = "1.2.840.10008.5.1.4.1.1.2"
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')


def parse(text: str) -> dict[str, float]:
    """Exposition text -> {'name{labels}': value}; checks every line's shape on the way."""
    assert text.endswith("\n")
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            assert kind in ("counter", "gauge", "histogram")
            assert name not in types, f"TYPE twice for {name}"
            types[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match.group(1)
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in types or base in types, f"sample {name} before its TYPE"
        key = name + (match.group(2) or "")
        samples[key] = float(match.group(4))
    return samples


def test_names_types_and_labels_as_operators_know_them() -> None:
    """prometheus_client writes the names dashboards use (counters end in _total already),
    no ``_created`` series, label values escaped."""
    observer = MetricsObserver(process=False)
    observer.requests.labels(service='q"uote\\', status_category="success").inc(3)
    text = observer.metrics.render()
    lines = text.splitlines()
    for name, kind in [("aiodicom_associations_active", "gauge"),
                       ("aiodicom_associations_total", "counter"),
                       ("aiodicom_associations_ended_total", "counter"),
                       ("aiodicom_bytes_received_total", "counter"),
                       ("aiodicom_requests_total", "counter"),
                       ("aiodicom_stores_total", "counter"),
                       ("aiodicom_request_duration_seconds", "histogram"),
                       ("aiodicom_association_duration_seconds", "histogram"),
                       ("aiodicom_tls_handshake_failures_total", "counter")]:
        assert f"# TYPE {name} {kind}" in lines
    assert "_created" not in text
    assert 'aiodicom_requests_total{service="q\\"uote\\\\",status_category="success"} 3.0' in lines
    samples = parse(text)
    assert samples['aiodicom_associations_ended_total{how="aborted"}'] == 0
    assert samples["aiodicom_association_duration_seconds_count"] == 0


def test_observer_reuses_its_label_children() -> None:
    """An event costs the increments: the label children are looked up once."""
    from aiodicom.aio.events import RequestCompleted

    observer = MetricsObserver(process=False)
    event = RequestCompleted(info=None, service="C-STORE",  # type: ignore[arg-type]
                             sop_class_uid=CT, sop_instance_uid="1.2", status=0xA700,
                             bytes=10, duration=0.002)
    observer(event)
    first = observer._per_request["C-STORE"][0xA700]
    observer(event)
    assert observer._per_request["C-STORE"][0xA700] is first
    s = parse(observer.metrics.render())
    assert s['aiodicom_stores_total{status="0xA700"}'] == 2
    assert s['aiodicom_requests_total{service="C-STORE",status_category="failure"}'] == 2
    assert s['aiodicom_request_duration_seconds_bucket{le="0.005",service="C-STORE"}'] == 2


def test_plain_serve_does_not_import_prometheus_client(tmp_path: Path) -> None:
    code = (
        "import sys, asyncio\n"
        "from aiodicom.app.server.config import ServeOptions\n"
        "from aiodicom.app.server.run import build_observers, build_server\n"
        f"o = ServeOptions(port=0, storage={str(tmp_path / 's')!r})\n"
        "obs, metrics, audit = build_observers(o)\n"
        "build_server(o, obs, audit)\n"
        "assert metrics is None\n"
        "print(sorted(m for m in sys.modules if m.startswith('prometheus_client')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_process_metrics_from_proc() -> None:
    samples = parse(MetricsObserver().metrics.render())
    if Path("/proc/self/statm").exists():
        assert samples["process_resident_memory_bytes"] > 1_000_000
        assert samples["process_open_fds"] >= 3
    assert samples["process_cpu_seconds_total"] > 0
    assert samples["process_max_fds"] > 0
    assert samples["aiodicom_associations_active"] == 0
    assert samples['aiodicom_associations_total{result="rejected"}'] == 0


@pytest.mark.parametrize(("text", "expected"), [
    ("9100", ("127.0.0.1", 9100)),
    ("0.0.0.0:9100", ("0.0.0.0", 9100)),
    ("[::1]:9100", ("::1", 9100)),
])
def test_parse_listen_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen_address(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "x:99999", "::1:80", "abc"])
def test_parse_listen_address_rejects(text: str) -> None:
    with pytest.raises(ConfigurationError):
        parse_listen_address(text)


def _policy() -> AcceptorPolicy:
    return AcceptorPolicy(
        ae_title="STRICT",
        abstract_syntaxes={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,),
                           CT: (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)},
    )


async def _http(port: int, request: bytes) -> tuple[str, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    raw = await reader.read()  # the server closes: read to EOF
    writer.close()
    await writer.wait_closed()
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *header_lines = head.decode("ascii").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return status, headers, body


def test_end_to_end_counters_scraped_over_http(run: Any, tmp_path: Path) -> None:
    path = write_ct(tmp_path / "a.dcm", size=2000)

    async def on_store(request: StoreRequest) -> Status:
        async for _ in request.fragments():
            pass
        return Status.SUCCESS

    async def main() -> tuple[str, dict[str, str], bytes]:
        observer = MetricsObserver()
        server = Server(admission=_policy(), handlers=Handlers(store=on_store), observer=observer)
        host, port = await server.listen()
        async with connect(host, port, called_ae_title="STRICT",
                           contexts=storage_contexts_for([path])) as assoc:
            assert await assoc.echo() == Status.SUCCESS
            assert await assoc.store(path) == Status.SUCCESS
        with pytest.raises(AssociationRejected):
            async with connect(host, port, called_ae_title="OTHER"):
                pass
        await server.close()
        endpoint = await serve_metrics("127.0.0.1", 0, observer.metrics)
        try:
            return await _http(endpoint.sockets[0].getsockname()[1],
                               b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            endpoint.close()
            await endpoint.wait_closed()

    status, headers, body = run(main())
    assert status == "HTTP/1.1 200 OK"
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    assert int(headers["content-length"]) == len(body)
    assert headers["connection"] == "close"
    s = parse(body.decode())
    assert s['aiodicom_associations_total{result="accepted"}'] == 1
    assert s['aiodicom_associations_total{result="rejected"}'] == 1
    assert s["aiodicom_associations_active"] == 0
    assert s['aiodicom_associations_ended_total{how="released"}'] == 1
    assert s['aiodicom_associations_ended_total{how="aborted"}'] == 0
    assert s['aiodicom_requests_total{service="C-ECHO",status_category="success"}'] == 1
    assert s['aiodicom_requests_total{service="C-STORE",status_category="success"}'] == 1
    assert s['aiodicom_stores_total{status="0x0000"}'] == 1
    assert s['aiodicom_request_duration_seconds_count{service="C-STORE"}'] == 1
    assert s['aiodicom_request_duration_seconds_bucket{le="+Inf",service="C-ECHO"}'] == 1
    assert s["aiodicom_association_duration_seconds_count"] == 1
    assert s["aiodicom_bytes_received_total"] > 2000


def test_endpoint_answers_only_metrics(run: Any) -> None:
    async def main() -> list[tuple[str, dict[str, str], bytes]]:
        endpoint = await serve_metrics("127.0.0.1", 0, MetricsObserver(process=False).metrics)
        port = endpoint.sockets[0].getsockname()[1]
        try:
            return [
                await _http(port, b"GET / HTTP/1.1\r\n\r\n"),
                await _http(port, b"POST /metrics HTTP/1.1\r\n\r\n"),
                await _http(port, b"HEAD /metrics HTTP/1.0\r\n\r\n"),
                await _http(port, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 12000 + b"\r\n\r\n"),
                await _http(port, b"\x00garbage\r\n\r\n"),
            ]
        finally:
            endpoint.close()
            await endpoint.wait_closed()

    missing, post, head, huge, garbage = run(main())
    assert missing[0] == "HTTP/1.1 404 Not Found"
    assert post[0] == "HTTP/1.1 405 Method Not Allowed" and post[1]["allow"] == "GET, HEAD"
    assert head[0] == "HTTP/1.1 200 OK" and head[2] == b""
    assert int(head[1]["content-length"]) > 0
    assert huge[0] == "HTTP/1.1 431 Request Header Fields Too Large"
    assert garbage[0] == "HTTP/1.1 400 Bad Request"


def test_trust_metrics_follow_the_mirrors_counts() -> None:
    """register_trust_metrics: counters move by the mirrors' own counts at each refresh
    (no prometheus_client in trust_source), the reload-failing gauge follows last_error."""
    from types import SimpleNamespace

    from aiodicom.app.server.metrics import Metrics, register_trust_metrics
    from aiodicom.app.server.trust_source import TrustStats

    stats = TrustStats()
    mirrors = SimpleNamespace(files=[SimpleNamespace(option="crl", stats=stats)])
    tls_context = SimpleNamespace(last_error=None)
    metrics = Metrics()
    register_trust_metrics(metrics, mirrors, tls_context)
    s = parse(metrics.render())
    assert s['aiodicom_trust_fetches_total{option="crl",result="failed"}'] == 0
    assert s["aiodicom_tls_reload_failing"] == 0
    for result in ("updated", "unchanged", "unchanged", "failed"):
        stats.count(result)
    stats.last_success = 1234.0
    tls_context.last_error = "no CRL from CA ..."
    s = parse(metrics.render())
    assert s['aiodicom_trust_fetches_total{option="crl",result="unchanged"}'] == 2
    assert s['aiodicom_trust_fetches_total{option="crl",result="failed"}'] == 1
    assert s['aiodicom_trust_last_success_timestamp_seconds{option="crl"}'] == 1234
    assert s["aiodicom_tls_reload_failing"] == 1
    stats.count("refused")
    s = parse(metrics.render())  # counted once, not again at the next scrape
    assert s['aiodicom_trust_fetches_total{option="crl",result="failed"}'] == 1
    assert s['aiodicom_trust_fetches_total{option="crl",result="refused"}'] == 1
