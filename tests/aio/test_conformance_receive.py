"""Issue 13, receiving: what a real peer sends that we must answer, not abort (both loops).

Each case scripts a raw peer against an in-process `Server` (tests/hostile/conftest.py) and
checks the bytes that come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.client import connect
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.core.dimse import (
    CEchoRQ,
    CEchoRSP,
    CStoreRSP,
    Status,
    decode_message,
    encode_command_set,
)
from aiodicom.core.negotiation import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)
from aiodicom.core.pdu import AAbort, AAssociateAC, PDataTF, encode_pdu
from aiodicom.settings import AssociationSettings, Limits
from tests.hostile.conftest import (
    CT,
    command_pdus,
    harness,
    pdata,
    read_pdu,
    read_until_closed,
    rq_bytes,
    store_rq,
)

ABORT = encode_pdu(AAbort(source=0, reason=0))


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


def _item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


async def _response(reader: asyncio.StreamReader) -> Any:
    pdu = await read_pdu(reader)
    assert isinstance(pdu, PDataTF), pdu
    (pdv,) = pdu.pdvs
    assert pdv.is_command and pdv.is_last
    return decode_message(bytes(pdv.data))


def test_unknown_items_in_the_request_are_skipped(run: Any, tmp_path: Path) -> None:
    """PS3.8 9.3.1: an item of unknown type after user information, and a sub-item of
    unknown type inside a presentation context, are ignored: we accept and answer."""
    raw = bytearray(rq_bytes())
    pc_at = raw.index(b"\x20\x00", 74)  # first presentation context item
    (pc_len,) = struct.unpack_from(">H", raw, pc_at + 2)
    stray = _item(0x4F, b"\x01\x02\x03")
    raw[pc_at + 4 + 4 : pc_at + 4 + 4] = stray  # before its abstract syntax sub-item
    struct.pack_into(">H", raw, pc_at + 2, pc_len + len(stray))
    raw += _item(0x77, b"unknown item after user information")
    struct.pack_into(">L", raw, 2, len(raw) - 6)

    async def main() -> Any:
        async with harness(tmp_path) as h:
            reader, writer = await h.open()
            writer.write(bytes(raw))
            ac = await read_pdu(reader)
            assert isinstance(ac, AAssociateAC)
            assert ac.presentation_contexts[0].result == 0
            writer.write(command_pdus(CEchoRQ(message_id=5), context_id=1))
            rsp = await _response(reader)
            await _close(writer)
            return rsp

    rsp = run(main())
    assert isinstance(rsp, CEchoRSP) and rsp.status == Status.SUCCESS


def test_reserved_control_bits_and_wrong_group_length(run: Any, tmp_path: Path) -> None:
    """PS3.8 E.2: reserved bits of the message control header are not tested; a
    CommandGroupLength that disagrees with the elements is advice (DCMTK, pynetdicom)."""
    body = encode_command_set({0x0002: VERIFICATION_SOP_CLASS, 0x0100: 0x0030,
                               0x0110: 9, 0x0800: 0x0101})
    wrong = body[:8] + struct.pack("<L", 1234) + body[12:]

    async def main() -> Any:
        async with harness(tmp_path) as h:
            reader, writer = await h.associate()
            writer.write(pdata(1, 0x03 | 0xF0, wrong))
            rsp = await _response(reader)
            await _close(writer)
            return rsp

    rsp = run(main())
    assert isinstance(rsp, CEchoRSP) and rsp.message_id_being_responded_to == 9


def test_echo_announcing_a_data_set_is_read_and_dropped(run: Any, tmp_path: Path) -> None:
    """A small stray data set after C-ECHO-RQ is read and dropped; a large one aborts
    instead of pausing reading forever with it pinned in memory."""

    async def main() -> tuple[Any, Any, list[Any]]:
        async with harness(tmp_path) as h:
            reader, writer = await h.associate()
            writer.write(command_pdus(CEchoRQ(message_id=1, has_dataset=True), context_id=1))
            writer.write(pdata(1, 0x02, b"\0" * 1000))
            first = await _response(reader)
            writer.write(command_pdus(CEchoRQ(message_id=2), context_id=1))
            second = await _response(reader)
            await _close(writer)
            reader, writer = await h.associate()
            writer.write(command_pdus(CEchoRQ(message_id=3, has_dataset=True), context_id=1))
            for _ in range(64):  # 1 MiB, past the 256 KiB receive high water of this server
                writer.write(pdata(1, 0x00, b"\0" * 16000))
            # until the server closes (ARTIM after its A-ABORT): it reads on and drops the rest
            with_abort = await read_until_closed(reader, 5, stop_at_abort=False)
            writer.transport.abort()  # 1 MiB may still be queued: do not wait to flush it
            await _close(writer)
            await h.settle()
            return first, second, with_abort

    first, second, with_abort = run(main())
    assert isinstance(first, CEchoRSP) and first.status == Status.SUCCESS
    assert isinstance(second, CEchoRSP) and second.message_id_being_responded_to == 2
    assert any(isinstance(p, AAbort) for p in with_abort), with_abort


def test_request_outside_its_context_is_refused(run: Any, tmp_path: Path) -> None:
    """A C-STORE of CT on the Verification context is refused 0x0122 and not stored."""

    async def main() -> tuple[Any, Any, list[Path]]:
        async with harness(tmp_path) as h:
            reader, writer = await h.associate()
            writer.write(command_pdus(store_rq("1.2.3.9"), context_id=1))
            writer.write(pdata(1, 0x02, b"\x08\x00\x16\x00\x02\x00\x00\x001\x00"[:10]))
            refused = await _response(reader)
            writer.write(command_pdus(CEchoRQ(message_id=7), context_id=1))
            echo = await _response(reader)
            await _close(writer)
            return refused, echo, h.stored()

    refused, echo, stored = run(main())
    assert isinstance(refused, CStoreRSP)
    assert refused.status == Status.SOP_CLASS_NOT_SUPPORTED
    assert isinstance(echo, CEchoRSP) and echo.status == Status.SUCCESS
    assert stored == []


def test_max_pdu_length_zero_advertises_the_hard_cap(run: Any) -> None:
    """PS3.8 D.1: 0 promises "no limit"; we receive no more than the hard cap, so we
    advertise that cap instead, both as acceptor and as requestor."""
    limits = Limits(max_pdu_length=0)

    async def main() -> tuple[int | None, int]:
        server = Server(
            admission=AcceptorPolicy(
                abstract_syntaxes={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)},
                max_pdu_length=0),
            settings=AssociationSettings(limits=limits),
        )
        host, port = await server.listen()
        try:
            reader, writer = await asyncio.open_connection(host, port)
            writer.write(rq_bytes())
            ac = await read_pdu(reader)
            await _close(writer)
            assert isinstance(ac, AAssociateAC)
            async with connect(host, port, settings=AssociationSettings(limits=limits)) as a:
                assert a.negotiated is not None
                ours = a.negotiated.our_max_pdu_length
                assert await a.echo() == Status.SUCCESS
            return ac.user_information.maximum_length, ours
        finally:
            await server.close()

    theirs, ours = run(main())
    assert theirs == limits.hard_max_pdu_length
    assert ours == limits.hard_max_pdu_length


def test_pdata_and_abort_in_one_read_send_nothing_stale(
    run: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The inline C-ECHO answer must not be sent after the A-ABORT of the same read moved
    the state machine on (that raised, and logged an ERROR with a traceback)."""
    caplog.set_level(logging.ERROR)

    async def main() -> list[Any]:
        async with harness(tmp_path) as h:
            reader, writer = await h.associate()
            writer.write(command_pdus(CEchoRQ(message_id=1), context_id=1) + ABORT)
            back = await read_until_closed(reader, 3)
            await _close(writer)
            await h.settle()
            return back

    back = run(main())
    assert not any(isinstance(p, PDataTF) for p in back), back
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_deflated_store_request_dataset(run: Any) -> None:
    """`StoreRequest.dataset()` inflates a Deflated Explicit VR Little Endian data set."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.PatientName = "Deflated^Jane"
    ds.ImageComments = "Z" * 400  # compressible
    got: list[Any] = []

    async def on_store(request: StoreRequest) -> Status:
        got.append((request.transfer_syntax, await request.dataset()))
        return Status.SUCCESS

    async def main() -> Status:
        server = Server(
            admission=AcceptorPolicy(
                abstract_syntaxes={CT: (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,)}),
            handlers=Handlers(store=on_store),
        )
        host, port = await server.listen()
        try:
            async with connect(host, port, contexts=[
                (CT, [DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN])]) as assoc:
                return await assoc.store(ds)
        finally:
            await server.close()

    assert run(main()) == Status.SUCCESS
    ((ts, received),) = got
    assert ts == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    assert received.PatientName == "Deflated^Jane" and received.ImageComments == "Z" * 400
