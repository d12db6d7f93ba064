"""C-CANCEL of a C-MOVE while its destination is being connected (issue 16 item 9): the
cancel ends the move at once (0xFE00) instead of waiting for the destination to answer
A-ASSOCIATE-RQ, and the half-open sub-association is dropped, not left behind."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from aiodicom.aio.client import RemoteAE, connect
from aiodicom.aio.client_qr import RetrieveResult, retrieve
from aiodicom.aio.requests import MoveRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.core.dimse import CCancelRQ, Status
from aiodicom.core.negotiation import EXPLICIT_VR_LITTLE_ENDIAN, AcceptorPolicy
from aiodicom.core.qr import qr_contexts
from aiodicom.settings import AssociationSettings, Timeouts
from tests.conftest import write_ct


def test_cancel_while_the_destination_is_being_connected(run: Any, tmp_path: Path) -> None:
    files = [write_ct(tmp_path / f"ct{i}.dcm", size=64) for i in range(2)]

    async def on_move(request: MoveRequest) -> AsyncIterator[Any]:
        for path in files:
            yield path

    async def main() -> tuple[RetrieveResult, list[int]]:
        connected = asyncio.Event()
        heard: list[int] = []  # PDU types
        aborted = asyncio.Event()

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connected.set()  # accepts TCP, reads A-ASSOCIATE-RQ, never answers
            try:
                while True:
                    header = await reader.readexactly(6)
                    await reader.readexactly(int.from_bytes(header[2:], "big"))
                    heard.append(header[0])
                    if header[0] == 0x07:  # A-ABORT: we close, as PS3.8 expects
                        aborted.set()
                        break
            except asyncio.IncompleteReadError:
                pass
            writer.close()

        mute = await asyncio.start_server(silent, "127.0.0.1", 0)
        mute_port = mute.sockets[0].getsockname()[1]
        # ACSE and connect timeouts far beyond the test's wait: only the cancel can end it
        slow = AssociationSettings(timeouts=Timeouts(acse=300, connect=300, dimse=300))
        server = Server(admission=AcceptorPolicy(
            abstract_syntaxes={uid: (EXPLICIT_VR_LITTLE_ENDIAN,) for uid, _ in qr_contexts()}),
            handlers=Handlers(move=on_move), settings=slow,
            move_destinations={"DEST": RemoteAE("127.0.0.1", mute_port)})
        try:
            async with server:
                host, port = await server.listen()
                async with connect(host, port, contexts=qr_contexts()) as assoc:
                    started: list[tuple[int, int]] = []
                    query = Dataset()
                    query.QueryRetrieveLevel = "STUDY"
                    query.StudyInstanceUID = "1.2.3.4.5"
                    move = asyncio.ensure_future(retrieve(
                        assoc, query, model="study", destination="DEST",
                        started=started.append))
                    await asyncio.wait_for(connected.wait(), 10)
                    context_id, message_id = started[0]
                    await assoc.send_message(
                        context_id, CCancelRQ(message_id_being_responded_to=message_id))
                    result = await asyncio.wait_for(move, 10)  # not the 300 s ACSE timeout
                    await asyncio.wait_for(aborted.wait(), 10)  # the sub-association dropped
        finally:
            mute.close()
            await mute.wait_closed()
        return result, heard

    result, heard = run(main())
    assert heard == [0x01, 0x07]  # A-ASSOCIATE-RQ, then A-ABORT once cancelled
    assert result.status == Status.CANCEL
    assert result.remaining == 2 and result.completed == 0
