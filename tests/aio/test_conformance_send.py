"""Issue 13, sending: never mislabel bytes, never leave a half message (both loops)."""

from __future__ import annotations

import asyncio
import contextlib
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.association import Association
from aiodicom.aio.client import connect, open_association
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)
from aiodicom.core.part10 import TransferSyntaxMismatch
from aiodicom.core.pdu import AAbort, AAssociateAC, AAssociateRQ, PresentationContextAC, encode_pdu
from aiodicom.errors import DicomError
from aiodicom.settings import AssociationSettings
from tests.conftest import write_ct
from tests.hostile.conftest import read_pdu, read_until_closed

CT = "1.2.840.10008.5.1.4.1.1.2"
PIXELS = bytes(range(1, 201))  # 100 OW words, no two bytes alike in a pair


def _dataset(transfer_syntax: str = EXPLICIT_VR_LITTLE_ENDIAN) -> Any:
    from pydicom.dataset import Dataset, FileMetaDataset

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = transfer_syntax
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.3.4.5.6.7.8"
    ds.PatientName = "Wire^Bytes"
    ds.ImageComments = "Q" * 300
    ds.Rows, ds.Columns, ds.BitsAllocated = 10, 10, 16
    ds.add_new(0x7FE00010, "OW", PIXELS)
    return ds


async def _server(syntaxes: tuple[str, ...], got: list[tuple[str, bytes]]) -> Server:
    async def on_store(request: StoreRequest) -> Status:
        got.append((request.transfer_syntax, b"".join([bytes(v) async for v in
                                                       request.fragments()])))
        return Status.SUCCESS

    return Server(
        admission=AcceptorPolicy(abstract_syntaxes={
            CT: syntaxes, VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)}),
        handlers=Handlers(store=on_store),
    )


def _store(run: Any, syntaxes: tuple[str, ...], source: Any,
           proposed: list[str]) -> tuple[Status | BaseException, list[tuple[str, bytes]], Status]:
    got: list[tuple[str, bytes]] = []

    async def main() -> tuple[Status | BaseException, Status]:
        server = await _server(syntaxes, got)
        host, port = await server.listen()
        try:
            async with connect(host, port, contexts=[
                (CT, proposed), (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])],
            ) as assoc:
                try:
                    status: Status | BaseException = await assoc.store(source)
                except DicomError as exc:
                    status = exc
                return status, await assoc.echo()  # the association is still usable
        finally:
            await server.close()

    status, echo = run(main())
    return status, got, echo


def test_big_endian_context_swaps_ow_pixel_data(run: Any) -> None:
    status, got, _ = _store(run, (EXPLICIT_VR_BIG_ENDIAN,), _dataset(),
                            [EXPLICIT_VR_BIG_ENDIAN])
    assert status == Status.SUCCESS
    ((ts, raw),) = got
    assert ts == EXPLICIT_VR_BIG_ENDIAN
    pixel_header = struct.pack(">HH2sHL", 0x7FE0, 0x0010, b"OW", 0, len(PIXELS))
    at = raw.index(pixel_header)
    swapped = b"".join(PIXELS[i + 1 : i + 2] + PIXELS[i : i + 1] for i in range(0, 200, 2))
    assert raw[at + len(pixel_header):] == swapped
    assert struct.pack(">HH2sH", 0x0028, 0x0010, b"US", 2) + struct.pack(">H", 10) in raw


def test_deflated_context_deflates(run: Any) -> None:
    status, got, _ = _store(run, (DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,), _dataset(),
                            [DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN])
    assert status == Status.SUCCESS
    ((ts, raw),) = got
    assert ts == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    assert b"Q" * 300 not in raw  # compressed on the wire
    inflated = zlib.decompress(raw, -15)
    assert b"Q" * 300 in inflated and PIXELS in inflated


def test_jpeg_dataset_on_an_uncompressed_context_is_refused(run: Any) -> None:
    ds = _dataset("1.2.840.10008.1.2.4.50")
    from pydicom.encaps import encapsulate

    ds.PixelData = encapsulate([b"\xff\xd8fakejpeg\xff\xd9\x00"])
    ds["PixelData"].VR = "OB"
    status, got, echo = _store(run, (EXPLICIT_VR_LITTLE_ENDIAN,), ds,
                               [EXPLICIT_VR_LITTLE_ENDIAN])
    assert isinstance(status, TransferSyntaxMismatch), status
    assert got == [] and echo == Status.SUCCESS


def test_odd_length_file_is_refused_before_anything_is_sent(run: Any, tmp_path: Path) -> None:
    path = write_ct(tmp_path / "odd.dcm", size=100)
    with path.open("ab") as f:
        f.write(b"\0")
    status, got, echo = _store(run, (EXPLICIT_VR_LITTLE_ENDIAN,), path,
                               [EXPLICIT_VR_LITTLE_ENDIAN])
    assert isinstance(status, DicomError) and "odd length" in str(status)
    assert got == [] and echo == Status.SUCCESS


def test_read_error_after_the_command_aborts(
    run: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aiodicom.aio.association as association

    path = write_ct(tmp_path / "ct.dcm", size=200_000)

    def failing(info: Any, chunk: int) -> Any:
        yield bytearray(chunk)
        raise OSError("disk went away")

    monkeypatch.setattr(association, "stream_dataset", failing)
    got: list[tuple[str, bytes]] = []

    async def main() -> tuple[BaseException | None, bool]:
        server = await _server((EXPLICIT_VR_LITTLE_ENDIAN,), got)
        host, port = await server.listen()
        try:
            assoc = await open_association(host, port, contexts=[
                (CT, [EXPLICIT_VR_LITTLE_ENDIAN])])
            error: BaseException | None = None
            try:
                await assoc.store(path)
            except OSError as exc:
                error = exc
            established = assoc.is_established
            assoc.abort()
            return error, established
        finally:
            await server.close()

    error, established = run(main())
    assert isinstance(error, OSError) and not established
    assert got == []


def test_refused_associate_ac_aborts_and_closes(run: Any) -> None:
    """An AC accepting a transfer syntax we never proposed: we abort and close."""

    async def main() -> tuple[BaseException | None, list[Any]]:
        seen: list[Any] = []
        done = asyncio.get_running_loop().create_future()

        async def peer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            rq = await read_pdu(reader)
            assert isinstance(rq, AAssociateRQ)
            ac = AAssociateAC(
                called_ae_title=rq.called_ae_title, calling_ae_title=rq.calling_ae_title,
                presentation_contexts=(PresentationContextAC(
                    context_id=1, result=0, transfer_syntax="1.2.840.10008.1.2.4.50"),),
                user_information=rq.user_information,
            )
            writer.write(encode_pdu(ac))
            seen.extend(await read_until_closed(reader, 3, stop_at_abort=False))
            writer.close()
            done.set_result(None)

        server = await asyncio.start_server(peer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        error: BaseException | None = None
        try:
            await open_association("127.0.0.1", port)
        except DicomError as exc:
            error = exc
        await asyncio.wait_for(done, 3)  # the connection closed, within the timeout
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
        return error, seen

    error, seen = run(main())
    assert error is not None
    assert [type(p) for p in seen] == [AAbort]


def test_message_ids_wrap_to_one(run: Any) -> None:
    async def main() -> list[int]:
        assoc = Association(AssociationSettings())
        return [assoc.next_message_id() for _ in range(65535 + 3)]

    ids = run(main())
    assert ids[0] == 1 and ids[65534] == 65535 and ids[65535:] == [1, 2, 3]
    assert all(1 <= i <= 65535 for i in ids)
