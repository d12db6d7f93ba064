"""`aiodicom serve`'s observers and `RequestCompleted` (issue 18): the event is built per
request only when logs at DEBUG, metrics or the audit trail consume it, and with metrics and
audit on every request is still counted and every instance audited."""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.app.server.audit import AuditTrail
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.logs import LogObserver, configure_logging
from aiodicom.app.server.metrics import MetricsObserver
from aiodicom.app.server.run import build_observers, build_server, run_server
from aiodicom.core.dimse import Status
from tests.conftest import write_ct


@pytest.fixture
def aiodicom_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger("aiodicom")
    saved = (root.handlers[:], root.level, root.propagate)
    yield root
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]


def test_log_observer_wants_requests_only_at_debug(aiodicom_logger: logging.Logger) -> None:
    observer = LogObserver()
    aiodicom_logger.setLevel(logging.INFO)
    assert not observer.wants_requests
    aiodicom_logger.setLevel(logging.DEBUG)
    assert observer.wants_requests
    assert MetricsObserver.wants_requests and AuditTrail.wants_requests


@pytest.mark.parametrize(("level", "metrics", "audit", "wanted"), [
    ("info", False, False, False),
    ("warning", False, False, False),
    ("debug", False, False, True),
    ("info", True, False, True),
    ("info", False, True, True),
])
def test_serve_builds_request_events_only_for_a_consumer(
        run: Any, tmp_path: Path, aiodicom_logger: logging.Logger,
        level: str, metrics: bool, audit: bool, wanted: bool) -> None:
    options = ServeOptions(port=0, storage=tmp_path / "store",
                           metrics="127.0.0.1:0" if metrics else None,
                           audit_log=tmp_path / "audit.log" if audit else None,
                           log_level=level).check()
    configure_logging(options.log_format, options.log_level)

    async def main() -> bool:
        observer, _, trail = build_observers(options)
        server, _ = build_server(options, observer, trail)
        try:
            return server.wants_requests
        finally:
            await server.close()
            if trail is not None:
                trail.close()

    assert run(main()) is wanted


def test_serve_counts_and_audits_every_request_with_logs_at_info(
    run: Any, tmp_path: Path, aiodicom_logger: logging.Logger,
) -> None:
    """The log observer declines requests at INFO; metrics and audit still get each one."""
    files = [write_ct(tmp_path / f"{i}.dcm", size=300) for i in range(3)]
    audit_log = tmp_path / "audit.log"
    options = ServeOptions(port=0, storage=tmp_path / "store", metrics="127.0.0.1:0",
                           audit_log=audit_log, log_level="info").check()
    configure_logging(options.log_format, options.log_level)

    async def main() -> bytes:
        stop = asyncio.Event()
        bound: list[tuple[str, str, int]] = []
        ready = asyncio.Event()

        def started(addresses: list[tuple[str, str, int]]) -> None:
            bound.extend(addresses)
            ready.set()

        task = asyncio.create_task(run_server(options, started=started, stop=stop))
        await asyncio.wait([task, asyncio.create_task(ready.wait())],
                           return_when=asyncio.FIRST_COMPLETED)
        assert not task.done(), task
        ports = {kind: port for kind, _, port in bound}
        async with connect("127.0.0.1", ports["dicom"],
                           contexts=storage_contexts_for(files)) as assoc:
            for _ in range(5):
                assert await assoc.echo() == Status.SUCCESS
            for path in files:
                assert await assoc.store(path) == Status.SUCCESS
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["metrics"])
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        body = await reader.read()
        writer.close()
        stop.set()
        assert await task == 0
        return body

    body = run(main())
    lines = body.decode().splitlines()
    assert 'aiodicom_requests_total{service="C-ECHO",status_category="success"} 5.0' in lines
    assert 'aiodicom_requests_total{service="C-STORE",status_category="success"} 3.0' in lines
    assert 'aiodicom_stores_total{status="0x0000"} 3.0' in lines
    assert 'aiodicom_request_duration_seconds_count{service="C-STORE"} 3.0' in lines
    stored = [m for m in (ET.fromstring(line) for line in audit_log.read_text().splitlines())
              if (e := m.find("EventIdentification/EventID")) is not None
              and e.get("csd-code") == "110104"]
    assert len(stored) == 1  # one Instances Transferred message per study, at the end
    instances = [i.get("UID") for i in stored[0].iter("Instance")]
    import pydicom

    assert instances == [pydicom.dcmread(p).SOPInstanceUID for p in files]
