"""app.logfmt: JSON/text lines carry association fields; `aiodicom serve` wiring end to end."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.events import AssociationAccepted, AssociationEnded
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.logs import (
    AssociationContext,
    JsonFormatter,
    LogObserver,
    TextFormatter,
    association_fields,
    configure_logging,
)
from aiodicom.app.server.run import run_server
from aiodicom.core.dimse import Status
from tests.conftest import write_ct

FIELDS = {"assoc_id", "peer", "calling_ae", "called_ae", "subject"}


class _Subject:
    subject = "CN=CT01,O=Hospital"


INFO = AssociationInfo(id=42, calling_ae_title="CT01", called_ae_title="PACS",
                       peer_address=("10.1.2.3", 5000), identity=_Subject())


@pytest.fixture
def aiodicom_logger() -> Iterator[logging.Logger]:
    root = logging.getLogger("aiodicom")
    saved = (root.handlers[:], root.level, root.propagate)
    flags = (logging._srcfile, logging.logThreads,
             logging.logProcesses, logging.logMultiprocessing)
    yield root
    root.handlers[:], root.level, root.propagate = saved[0], saved[1], saved[2]
    (logging._srcfile, logging.logThreads,
     logging.logProcesses, logging.logMultiprocessing) = flags


def _capture(fmt: logging.Formatter, context: AssociationContext | None = None,
             ) -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(fmt)
    if context is not None:
        handler.addFilter(context)
    logger = logging.getLogger("aiodicom")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream


def test_json_formatter_writes_extra_fields(aiodicom_logger: logging.Logger) -> None:
    logger, stream = _capture(JsonFormatter())
    log = logging.getLogger("aiodicom.test")
    log.info("association %d: hello \"%s\"", 42, "x", extra=association_fields(INFO))
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("failed", extra={"path": Path("/a")})
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == 'association 42: hello "x"'
    assert first["level"] == "info" and first["logger"] == "aiodicom.test"
    assert {k: first[k] for k in FIELDS} == {
        "assoc_id": 42, "peer": "10.1.2.3:5000", "calling_ae": "CT01", "called_ae": "PACS",
        "subject": "CN=CT01,O=Hospital"}
    assert "args" not in first and "msg" not in first
    assert second["path"] == "/a" and "RuntimeError: boom" in second["traceback"]


def test_text_formatter_appends_fields(aiodicom_logger: logging.Logger) -> None:
    logger, stream = _capture(TextFormatter())
    logging.getLogger("aiodicom.test").info("plain")
    logging.getLogger("aiodicom.test").info("with", extra=association_fields(INFO))
    plain, with_fields = stream.getvalue().splitlines()
    assert plain.endswith("aiodicom.test: plain")
    assert with_fields.endswith(
        "with [assoc_id=42 peer=10.1.2.3:5000 calling_ae=CT01 called_ae=PACS "
        "subject=CN=CT01,O=Hospital]")


def test_context_fills_library_lines_while_the_association_lives(
    aiodicom_logger: logging.Logger,
) -> None:
    context = AssociationContext()
    logger, stream = _capture(JsonFormatter(), context)
    observer = LogObserver(context=context)
    library = logging.getLogger("aiodicom.server")
    observer(AssociationAccepted(info=INFO))
    library.warning("association %d: request on unaccepted context %d, aborting", 42, 3)
    observer(AssociationEnded(info=INFO, peer_address=INFO.peer_address, aborted=True,
                              reason="peer vanished", bytes_received=99, duration=0.5))
    library.warning("association %d: late line", 42)
    accepted, warning, ended, late = (json.loads(x) for x in stream.getvalue().splitlines())
    for entry in (accepted, warning, ended):
        assert {k: entry[k] for k in FIELDS} == association_fields(INFO)
    assert accepted["logger"] == "aiodicom.events" and accepted["level"] == "debug"
    assert ended["level"] == "info" and "'CT01' -> 'PACS' from 10.1.2.3:5000" in ended["message"]
    assert ended["how"] == "aborted" and ended["bytes_received"] == 99
    assert "peer vanished" in ended["message"]
    assert late["assoc_id"] == 42 and "peer" not in late  # forgotten once ended
    assert context.known == {}


def test_one_info_line_per_association(aiodicom_logger: logging.Logger) -> None:
    """At INFO an association costs one line, at its end, naming everything the accepted
    line named; nothing is formatted for the DEBUG lines."""
    context = AssociationContext()
    logger, stream = _capture(TextFormatter(), context)
    logger.setLevel(logging.INFO)
    observer = LogObserver(context=context)
    observer(AssociationAccepted(info=INFO))
    assert context.known[42]["calling_ae"] == "CT01"
    observer(AssociationEnded(info=INFO, peer_address=INFO.peer_address, aborted=False,
                              reason="released", bytes_received=7, duration=0.25))
    (line,) = stream.getvalue().splitlines()
    assert " INFO aiodicom.events: association 42 released after 0.250 s, 7 bytes received: " \
        "'CT01' -> 'PACS' from 10.1.2.3:5000 [assoc_id=42 " in line
    assert "how=released" in line and context.known == {}


def test_text_formatter_matches_the_stdlib_line(aiodicom_logger: logging.Logger) -> None:
    """The cached time and the direct line are what logging.Formatter would have written."""
    plain = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    ours = TextFormatter()
    for created in (1_700_000_000.0, 1_700_000_000.5, 1_700_000_001.25, 1_700_000_001.999):
        record = logging.LogRecord("aiodicom.x", logging.INFO, "", 0, "a %d", (1,), None)
        record.created, record.msecs = created, (created - int(created)) * 1000
        assert ours.format(record) == plain.format(record)
        json_time = json.loads(JsonFormatter().format(record))["time"]
        assert json_time == plain.formatTime(record, "%Y-%m-%dT%H:%M:%S%z")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("aiodicom.x", logging.ERROR, "", 0, "failed", None,
                                   sys.exc_info())
    assert ours.format(record) == plain.format(record)
    assert "ValueError: boom" in ours.format(record)


def test_serve_wiring_json_logs_metrics_and_audit(
    run: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    aiodicom_logger: logging.Logger,
) -> None:
    path = write_ct(tmp_path / "a.dcm", size=1000)
    audit_log = tmp_path / "audit.log"
    options = ServeOptions(port=0, storage=tmp_path / "store", metrics="127.0.0.1:0",
                           audit_log=audit_log, log_format="json", log_level="debug").check()
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
                           contexts=storage_contexts_for([path])) as assoc:
            assert await assoc.echo() == Status.SUCCESS
            assert await assoc.store(path) == Status.SUCCESS
        reader, writer = await asyncio.open_connection("127.0.0.1", ports["metrics"])
        writer.write(b"GET /metrics HTTP/1.0\r\n\r\n")
        body = await reader.read()
        writer.close()
        stop.set()
        assert await task == 0
        return body

    body = run(main())
    assert b'aiodicom_associations_total{result="accepted"} 1' in body
    assert b'aiodicom_stores_total{status="0x0000"} 1' in body
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    about = [e for e in entries if e.get("logger") in ("aiodicom.events", "aiodicom.serve")
             and "assoc_id" in e]
    messages = [e["message"] for e in about]
    assert any(" accepted: " in m for m in messages)
    assert any(" stored " in m for m in messages)
    assert any(" released after " in m for m in messages)
    assert any("C-STORE status 0x0000" in m for m in messages)
    for entry in about:
        assert entry.keys() >= FIELDS
        assert entry["calling_ae"] == "AIODICOM" and entry["peer"].startswith("127.0.0.1:")
        assert entry["subject"] == ""
    events = [ET.fromstring(line).find("EventIdentification/EventID")
              for line in audit_log.read_text().splitlines()]
    assert [e.get("csd-code") for e in events if e is not None] == [
        "110100", "110114", "110104", "110114", "110100"]


def test_example_config_loads_and_names_every_key() -> None:
    import dataclasses
    import re

    from aiodicom.app.server.config import load_config

    example = Path(__file__).parents[3] / "examples" / "aiodicom.toml"
    values = load_config(example)
    assert values["metrics"] == "127.0.0.1:9100" and values["log_format"] == "json"
    mentioned = set(re.findall(r"^#? ?([a-z_]+) = ", example.read_text(), re.MULTILINE))
    assert mentioned == {f.name for f in dataclasses.fields(ServeOptions)}


def _ended_lines(observer: LogObserver, stream: io.StringIO) -> list[str]:
    stream.seek(0)
    stream.truncate()
    for aborted, reason in ((False, "released"), (True, "peer vanished"),
                            (True, "two\nlines")):
        observer(AssociationAccepted(info=INFO))
        observer(AssociationEnded(info=INFO, peer_address=INFO.peer_address, aborted=aborted,
                                  reason=reason, bytes_received=7, duration=0.25))
    return stream.getvalue().splitlines()


@pytest.mark.parametrize("created", [1_700_000_000.0, 1_700_000_000.5, 1_700_000_001.999])
def test_direct_ended_line_is_the_logging_line(aiodicom_logger: logging.Logger,
                                               monkeypatch: pytest.MonkeyPatch,
                                               created: float) -> None:
    """The end-of-association line written without a LogRecord (only our text handler is
    listening) is the line logging writes, time stamp included; any other consumer (a
    logger filter, a second handler, another formatter, WARNING level) goes through logging."""
    monkeypatch.setattr("time.time", lambda: created)
    context = AssociationContext()
    logger, stream = _capture(TextFormatter(), context)
    logger.setLevel(logging.INFO)
    observer = LogObserver(context=context)
    direct = _ended_lines(observer, stream)
    assert len(direct) == 4 and direct[3] == "lines"  # fields after the first line
    assert direct[2].endswith(": two [assoc_id=42 peer=10.1.2.3:5000 calling_ae=CT01 "
                              "called_ae=PACS subject=CN=CT01,O=Hospital how=aborted "
                              "bytes_received=7 duration=0.25]")
    records: list[logging.LogRecord] = []

    class Spy(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            records.append(record)
            return True

    observer.log.addFilter(Spy())
    try:
        assert _ended_lines(observer, stream) == direct
    finally:
        observer.log.filters.clear()
    assert len(records) == 3  # the filter saw every record: logging built them
    extra = logging.StreamHandler(io.StringIO())
    logger.addHandler(extra)
    assert _ended_lines(observer, stream) == direct
    assert len(extra.stream.getvalue().splitlines()) == 4  # the user's handler got them too
    logger.removeHandler(extra)
    logger.setLevel(logging.WARNING)
    assert _ended_lines(observer, stream) == []


def test_direct_ended_line_falls_back_when_the_write_fails(
        aiodicom_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    context = AssociationContext()
    logger, stream = _capture(TextFormatter(), context)
    logger.setLevel(logging.INFO)
    handler = logger.handlers[0]
    errors: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", errors.append)

    def broken(text: str) -> int:
        raise OSError("disk full")

    monkeypatch.setattr(stream, "write", broken)
    LogObserver(context=context)(AssociationEnded(
        info=INFO, peer_address=INFO.peer_address, aborted=False, reason="released",
        bytes_received=7, duration=0.25))
    assert len(errors) == 1 and errors[0].getMessage().startswith("association 42 released")


def _end(context: AssociationContext) -> None:
    LogObserver(context=context)(AssociationEnded(
        info=INFO, peer_address=INFO.peer_address, aborted=False, reason="released",
        bytes_received=7, duration=0.25))


def test_direct_ended_line_is_not_written_twice_when_the_flush_fails(
        aiodicom_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The write succeeded, its flush failed (disk full): logging's own emit reports the
    error once and does not write the line again; neither may the direct path."""
    context = AssociationContext()
    logger, stream = _capture(TextFormatter(), context)
    logger.setLevel(logging.INFO)
    handler = logger.handlers[0]
    errors: list[logging.LogRecord] = []
    monkeypatch.setattr(handler, "handleError", errors.append)

    def full() -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stream, "flush", full)
    _end(context)  # the association path does not see the error
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and "association 42 released" in lines[0]
    assert len(errors) == 1 and errors[0].getMessage().startswith("association 42 released")


def test_direct_ended_line_stamps_under_the_handler_lock(
        aiodicom_logger: logging.Logger, monkeypatch: pytest.MonkeyPatch) -> None:
    """The formatter's one-second cache is shared with every thread logging through the
    handler (the index writer's), which uses it under the handler's lock; so must the
    direct path, or a torn cache stamps a line with another second."""
    context = AssociationContext()
    logger, stream = _capture(TextFormatter(), context)
    logger.setLevel(logging.INFO)
    handler = logger.handlers[0]
    formatter = handler.formatter
    assert isinstance(formatter, TextFormatter)
    held: list[bool] = []
    stamp = formatter.stamp

    def spy(created: float, msecs: float, datefmt: str | None = None) -> str:
        assert handler.lock is not None
        held.append(handler.lock._is_owned())  # type: ignore[attr-defined]
        return stamp(created, msecs, datefmt)

    monkeypatch.setattr(formatter, "stamp", spy)
    _end(context)
    assert "association 42 released" in stream.getvalue()
    assert held == [True]


def test_direct_stored_line_is_the_logging_line(aiodicom_logger: logging.Logger,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The per-instance "stored" line written by `info_line` straight to the text handler is
    the line logging writes for the same call; with a logger filter logging builds it."""
    from aiodicom.app.server.logs import info_line

    monkeypatch.setattr("time.time", lambda: 1_700_000_000.25)
    context = AssociationContext()
    logger, stream = _capture(TextFormatter(), context)
    logger.setLevel(logging.INFO)
    log = logging.getLogger("aiodicom.app.server.run")
    msg = "association %d: stored %s from %r (%d bytes)"
    args = (42, "1.2.3.4", "CT 01", 2048)
    info_line(log, msg, args, association_fields(INFO))
    direct = stream.getvalue()
    stream.seek(0)
    stream.truncate()
    records: list[logging.LogRecord] = []

    class Spy(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            records.append(record)
            return True

    log.addFilter(Spy())
    try:
        info_line(log, msg, args, association_fields(INFO))
    finally:
        log.filters.clear()
    assert len(records) == 1 and records[0].created == 1_700_000_000.25
    assert stream.getvalue() == direct
    assert direct.endswith(" INFO aiodicom.app.server.run: association 42: stored 1.2.3.4 from "
                           "'CT 01' (2048 bytes) [assoc_id=42 peer=10.1.2.3:5000 "
                           "calling_ae=CT01 called_ae=PACS subject=CN=CT01,O=Hospital]\n")
    logger.setLevel(logging.WARNING)
    stream.seek(0)
    stream.truncate()
    info_line(log, msg, args, association_fields(INFO))
    assert stream.getvalue() == ""


def test_json_lines_hold_whatever_line_breaks_a_value_carries(
    aiodicom_logger: logging.Logger,
) -> None:
    """U+2028, U+2029 and NEL are line breaks to str.splitlines (and to some log shippers);
    JSON leaves them raw. Escaped, every record stays one line and decodes to the value."""
    logger, stream = _capture(JsonFormatter())
    value = "a\u2028b\u2029c\x85d\ne\x1cf"
    logging.getLogger("aiodicom.test").info("value %s", value, extra={"patient": value})
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["message"] == f"value {value}" and entry["patient"] == value
