"""Peer-controlled names never reach a path; failed transfers leave nothing; deep nesting,
connection storms and batches of attacks leak no fd, task, association or temporary file."""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.server import Handlers
from aiodicom.core.dimse import CStoreRSP, decode_message
from aiodicom.core.pdu import AAbort, AAssociateAC, PDataTF
from tests.hostile.conftest import (
    CT,
    MAX_PDU,
    Harness,
    command_pdus,
    fd_count,
    harness,
    pdata,
    read_pdu,
    read_until_closed,
    rq_bytes,
    store_rq,
    task_count,
)
from tests.hostile.test_pdu_attacks import ATTACKS

ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"
RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def _el(group: int, elem: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element (short form VRs only)."""
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    return struct.pack("<HH2sH", group, elem, vr, len(value)) + value


def _raw_store_command(sop_instance_uid: bytes, message_id: int = 1) -> bytes:
    """A C-STORE-RQ command set built by hand, so any AffectedSOPInstanceUID bytes fit."""

    def el(elem: int, value: bytes) -> bytes:
        if len(value) % 2:
            value += b"\0"
        return struct.pack("<HHL", 0, elem, len(value)) + value

    body = b"".join([
        el(0x0002, CT.encode()),
        el(0x0100, struct.pack("<H", 0x0001)),
        el(0x0110, struct.pack("<H", message_id)),
        el(0x0700, struct.pack("<H", 0)),
        el(0x0800, struct.pack("<H", 0x0000)),
        el(0x1000, sop_instance_uid),
    ])
    return el(0x0000, struct.pack("<L", len(body))) + body


def _dataset(sop: bytes, study: bytes = b"1.2.3.4", series: bytes = b"1.2.3.4.5",
             middle: bytes = b"") -> bytes:
    return b"".join([
        _el(0x0008, 0x0016, b"UI", CT.encode()),
        _el(0x0008, 0x0018, b"UI", sop),
        middle,
        _el(0x0020, 0x000D, b"UI", study),
        _el(0x0020, 0x000E, b"UI", series),
    ])


def _nested(depth: int) -> bytes:
    """(0008,1115) sequences nested ``depth`` deep, undefined lengths throughout."""
    open_sq = struct.pack("<HH2sHL", 0x0008, 0x1115, b"SQ", 0, 0xFFFFFFFF)
    open_item = struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF)
    close_item = struct.pack("<HHL", 0xFFFE, 0xE00D, 0)
    close_sq = struct.pack("<HHL", 0xFFFE, 0xE0DD, 0)
    return (open_sq + open_item) * depth + (close_item + close_sq) * depth


async def _send_store(h: Harness, command: bytes, dataset: bytes) -> list[Any]:
    """Associate, send the command and data set, release; the PDUs that came back."""
    reader, writer = await h.associate()
    writer.write(pdata(3, 3, command))
    step = MAX_PDU - 6
    for i in range(0, len(dataset), step):
        last = i + step >= len(dataset)
        writer.write(pdata(3, 2 if last else 0, dataset[i:i + step]))
    pdus: list[Any] = []
    try:
        pdus.append(await read_pdu(reader, timeout=5.0))
        if isinstance(pdus[-1], PDataTF):
            writer.write(RELEASE_RQ)
            pdus += await read_until_closed(reader, 3.0)
    finally:
        writer.close()
    return pdus


def _store_status(pdus: list[Any]) -> int | str:
    first = pdus[0]
    if isinstance(first, AAbort):
        return f"abort {first.source}/{first.reason}"
    assert isinstance(first, PDataTF), first
    msg = decode_message(b"".join(bytes(p.data) for p in first.pdvs))
    assert isinstance(msg, CStoreRSP)
    return int(msg.status)


BAD_UIDS = [b"../../etc/x", b"1.2/3.4", b"1.2\\3.4", b"1.2\x003.4", b"1." + b"2" * 70,
            b"..", b"/tmp/x"]


@pytest.mark.parametrize("uid", BAD_UIDS, ids=lambda u: repr(u)[2:-1][:20])
def test_traversal_in_affected_sop_instance_uid(run: Any, tmp_path: Path, uid: bytes) -> None:
    root = tmp_path / "storage"
    before = set(tmp_path.rglob("*"))

    async def main() -> int | str:
        async with harness(root) as h:
            pdus = await _send_store(h, _raw_store_command(uid), _dataset(uid))
            await h.echo_ok()
            await h.settle()
            assert h.incoming() == [] and h.stored() == []
            return _store_status(pdus)

    status = run(main())
    # Measured: the DIMSE command decoder refuses every one of these UIDs, and the server
    # aborts (A-ABORT, source 0: DIMSE is above the UL). A failure status would do as well.
    assert status == "abort 0/0" or (isinstance(status, int) and status >= 0xA000), status
    after = set(tmp_path.rglob("*"))
    assert {p for p in after - before if p.is_file()} == set()
    assert not (tmp_path.parent / "etc").exists()


@pytest.mark.parametrize("field", ["study", "series", "dataset-sop"])
def test_traversal_in_dataset_uids(run: Any, tmp_path: Path, field: str) -> None:
    root = tmp_path / "storage"
    sop = b"1.2.3.4.100"
    kwargs: dict[str, bytes] = {"study": b"1.2.3", "series": b"1.2.3.4"}
    data_sop = sop
    if field == "dataset-sop":
        data_sop = b"../../x"
    else:
        kwargs[field] = b"../../x"

    async def main() -> int | str:
        async with harness(root) as h:
            pdus = await _send_store(h, _raw_store_command(sop), _dataset(data_sop, **kwargs))
            await h.echo_ok()
            await h.settle()
            assert h.incoming() == [] and h.stored() == []
            return _store_status(pdus)

    status = run(main())
    assert isinstance(status, int) and status >= 0xA000, status
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_valid_store_control(run: Any, tmp_path: Path) -> None:
    """Control for the two tests above: the same bytes with good UIDs are stored."""

    async def main() -> tuple[int | str, list[Path]]:
        async with harness(tmp_path) as h:
            pdus = await _send_store(h, _raw_store_command(b"1.2.3.4.100"),
                                     _dataset(b"1.2.3.4.100"))
            await h.settle()
            return _store_status(pdus), h.stored()

    status, stored = run(main())
    assert status == 0 and [p.name for p in stored] == ["1.2.3.4.100.dcm"]


def test_truncated_dataset_leaves_nothing(run: Any, tmp_path: Path) -> None:
    async def main() -> tuple[list[str], list[Path]]:
        async with harness(tmp_path) as h:
            reader, writer = await h.associate()
            writer.write(command_pdus(store_rq("1.2.3.4.7")))
            data = _dataset(b"1.2.3.4.7") + b"\0" * 100_000
            writer.write(pdata(3, 0, data[: MAX_PDU - 6]))
            writer.write(pdata(3, 0, data[MAX_PDU - 6: 2 * (MAX_PDU - 6)]))
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.transport.abort()  # dropped mid data set
            await h.settle()
            await h.echo_ok()
            return h.incoming(), h.stored()

    incoming, stored = run(main())
    assert incoming == [] and stored == []


def test_deeply_nested_sequences(run: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
                                 ) -> None:
    caplog.set_level(logging.WARNING)

    async def main() -> tuple[int | str, list[str]]:
        async with harness(tmp_path) as h:
            sop = b"1.2.3.4.55"
            pdus = await _send_store(h, _raw_store_command(sop),
                                     _dataset(sop, middle=_nested(2000)))
            await h.echo_ok()
            await h.settle()
            return _store_status(pdus), h.incoming()

    status, incoming = run(main())
    assert status == 0xC000, status  # answered (cannot understand), not aborted
    assert incoming == []
    crashes = [r for r in caplog.records if r.levelno >= logging.ERROR
               or "RecursionError" in r.getMessage() and r.exc_info]
    assert crashes == [], [r.getMessage() for r in crashes]


async def _storm_cycle(h: Harness) -> None:
    reader, writer = await h.open()
    writer.write(rq_bytes())
    assert isinstance(await read_pdu(reader), AAssociateAC)
    writer.write(ABORT)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


def test_connection_storm(run: Any, tmp_path: Path) -> None:
    """300 connect / associate / abort cycles, 10 at a time: nothing is left behind."""

    async def main() -> tuple[int, int, int, int, int]:
        async with harness(tmp_path) as h:
            await h.echo_ok()
            await h.settle()
            fds, tasks = fd_count(), task_count()
            for _ in range(30):
                await asyncio.gather(*(_storm_cycle(h) for _ in range(10)))
            await h.settle()
            await h.echo_ok()
            await h.settle()
            return fds, fd_count(), tasks, task_count(), h.server.stats.accepted

    fds, fds_after, tasks, tasks_after, accepted = run(main())
    assert accepted >= 301
    assert fds_after <= fds, (fds, fds_after)
    assert tasks_after <= tasks, (tasks, tasks_after)


def test_attack_batch_leaks_nothing(run: Any, tmp_path: Path) -> None:
    """Every PDU attack three times, plus truncated stores: fds, tasks and .incoming return
    to where they were."""

    async def main() -> tuple[tuple[int, int, list[str]], tuple[int, int, list[str]]]:
        async with harness(tmp_path) as h:
            await h.echo_ok()
            await h.settle()
            before = (fd_count(), task_count(), h.incoming())
            for _ in range(3):
                await asyncio.gather(*(h.attack(p, associate=a) for _, p, a, _ in ATTACKS))
                reader, writer = await h.associate()
                writer.write(command_pdus(store_rq("1.2.3.4.8")))
                writer.write(pdata(3, 0, _dataset(b"1.2.3.4.8")))
                await writer.drain()
                await asyncio.sleep(0.02)
                writer.transport.abort()
            await h.settle()
            await h.echo_ok()
            await h.settle()
            return before, (fd_count(), task_count(), h.incoming())

    before, after = run(main())
    assert after[0] <= before[0], (before, after)
    assert after[1] <= before[1], (before, after)
    assert after[2] == [] and before[2] == []


STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


def test_deeply_nested_find_identifier(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    """REFERENCE.md "Deep nesting": a 2,000-deep identifier gets a failure status, the
    handler never sees it, the association ends normally and others are served."""
    from aiodicom.aio.server import Server
    from aiodicom.core.dimse import CFindRQ, CFindRSP
    from aiodicom.core.negotiation import (
        EXPLICIT_VR_LITTLE_ENDIAN,
        IMPLICIT_VR_LITTLE_ENDIAN,
        VERIFICATION_SOP_CLASS,
        AcceptorPolicy,
    )

    caplog.set_level(logging.WARNING)
    seen: list[object] = []

    async def on_find(request: Any) -> Any:
        seen.append(request.identifier)
        yield None  # pragma: no cover - the identifier never reaches a handler

    async def main() -> tuple[list[int], int]:
        server = Server(admission=AcceptorPolicy(abstract_syntaxes={
                VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,),
                STUDY_FIND: (EXPLICIT_VR_LITTLE_ENDIAN,),
            }, max_pdu_length=MAX_PDU), handlers=Handlers(find=on_find))
        host, port = await server.listen()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(rq_bytes(contexts=[(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]),
                                            (STUDY_FIND, [EXPLICIT_VR_LITTLE_ENDIAN])]))
            assert isinstance(await read_pdu(reader), AAssociateAC)
            writer.write(command_pdus(CFindRQ(message_id=7, affected_sop_class_uid=STUDY_FIND)))
            identifier = _el(0x0008, 0x0052, b"CS", b"STUDY") + _nested(2000)
            step = MAX_PDU - 6
            for i in range(0, len(identifier), step):
                last = i + step >= len(identifier)
                writer.write(pdata(3, 2 if last else 0, identifier[i:i + step]))
            statuses = []
            first = await read_pdu(reader, timeout=5.0)
            assert isinstance(first, PDataTF), first
            msg = decode_message(b"".join(bytes(p.data) for p in first.pdvs))
            assert isinstance(msg, CFindRSP)
            statuses.append(int(msg.status))
            writer.write(RELEASE_RQ)
            await read_until_closed(reader, 3.0)
            writer.close()
            async with connect(host, port) as assoc:
                assert await assoc.echo() == 0
            return statuses, server.active
        finally:
            await server.close(drain_timeout=1.0)

    from aiodicom.aio.client import connect

    statuses, active = run(main())
    assert statuses == [0xA900], statuses  # identifier does not match SOP class: refused
    assert seen == []
    assert active == 0
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
