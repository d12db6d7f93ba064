"""app.metrics: the exposition format, the observer end to end, the HTTP endpoint."""

from __future__ import annotations

import asyncio
import math
import re
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.app.server.metrics import (
    Metrics,
    MetricsObserver,
    escape_label_value,
    format_value,
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


def test_format_values_and_escaping() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


def test_render_counter_gauge_histogram() -> None:
    m = Metrics()
    c = m.counter("x_total", "Things.\nSecond line \\ slash", ("kind",))
    g = m.gauge("y", "A level.")
    h = m.histogram("z_seconds", "Durations.", ("op",), buckets=(0.1, 1.0))
    c.inc(kind='q"uote')
    c.inc(2, kind='q"uote')
    g.set(5)
    g.dec(2)
    for value in (0.05, 0.5, 0.5, 7.0):
        h.observe(value, op="a")
    text = m.render()
    lines = text.splitlines()
    assert lines[:2] == ["# HELP x_total Things.\\nSecond line \\\\ slash",
                         "# TYPE x_total counter"]
    assert 'x_total{kind="q\\"uote"} 3' in lines
    assert "# TYPE y gauge" in lines and "y 3" in lines
    assert "# TYPE z_seconds histogram" in lines
    assert 'z_seconds_bucket{op="a",le="0.1"} 1' in lines
    assert 'z_seconds_bucket{op="a",le="1.0"} 3' in lines
    assert 'z_seconds_bucket{op="a",le="+Inf"} 4' in lines
    assert 'z_seconds_sum{op="a"} 8.05' in lines
    assert 'z_seconds_count{op="a"} 4' in lines
    parse(text)


def test_registry_refuses_bad_names_labels_and_decrements() -> None:
    m = Metrics()
    with pytest.raises(ConfigurationError):
        m.counter("1bad", "x")
    with pytest.raises(ConfigurationError):
        m.counter("ok_total", "x", ("__reserved",))
    with pytest.raises(ConfigurationError):
        m.histogram("h", "x", ("le",))
    c = m.counter("ok_total", "x", ("a",))
    with pytest.raises(ConfigurationError):
        m.counter("ok_total", "again")
    with pytest.raises(ValueError):
        c.inc(-1, a="x")
    with pytest.raises(ValueError):
        c.inc(b="wrong label")


def test_process_metrics_from_proc() -> None:
    samples = parse(MetricsObserver().metrics.render())
    if Path("/proc/self/statm").exists():
        assert samples["process_resident_memory_bytes"] > 1_000_000
        assert samples["process_open_fds"] >= 3
    assert samples["process_cpu_seconds_total"] > 0
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
    assert s['aiodicom_request_duration_seconds_bucket{service="C-ECHO",le="+Inf"}'] == 1
    assert s["aiodicom_association_duration_seconds_count"] == 1
    assert s["aiodicom_bytes_received_total"] > 2000


def test_endpoint_answers_only_metrics(run: Any) -> None:
    async def main() -> list[tuple[str, dict[str, str], bytes]]:
        endpoint = await serve_metrics("127.0.0.1", 0, Metrics())
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
