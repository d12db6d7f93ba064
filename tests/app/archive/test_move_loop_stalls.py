"""A 3,000-instance C-MOVE from the bundled Q/R does not stall the event loop (issue 16
item 9): another association's C-ECHOs keep their latency. Measured by counting loop
stalls (a probe sleeping 5 ms that wakes over 100 ms late), not by a wall-clock limit.
The full 3,000 instances run here in about 10 s (one loop, asyncio), so it is not scaled
down."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from aiodicom.aio.client import RemoteAE, connect
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.app.archive.index import Index
from aiodicom.app.archive.qr import QueryRetrieve
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)
from aiodicom.core.qr import qr_contexts
from tests.conftest import make_runner, write_ct

INSTANCES = 3000
TEMPLATE = "1.2.826.0.1.3680043.9.7.100000"
sync = make_runner("asyncio")


def archive(root: Path, count: int) -> Index:
    """``count`` small CT files of one series (one template, its UID patched in place)."""
    root.mkdir(parents=True)
    template = write_ct(root / "template.dcm", size=64, sop_instance_uid=TEMPLATE)
    data = template.read_bytes()
    template.unlink()
    folder = root / "1.2.3.4.5" / "1.2.3.4.5.6"
    folder.mkdir(parents=True)
    for n in range(count):
        uid = f"{TEMPLATE[:-6]}{100000 + n}"
        (folder / f"{uid}.dcm").write_bytes(data.replace(TEMPLATE.encode(), uid.encode()))
    index = Index.for_root(root)
    assert index.rebuild(root) == count
    return index


def test_a_large_move_leaves_other_associations_alone(tmp_path: Path) -> None:
    root = tmp_path / "store"
    index = archive(root, INSTANCES)
    qr = QueryRetrieve(root, index)

    async def main() -> tuple[Any, int, int, int]:
        received = 0

        async def on_store(request: StoreRequest) -> Status:
            nonlocal received
            await request.dataset()
            received += 1
            return Status.SUCCESS

        syntaxes = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
        policy = AcceptorPolicy(
            abstract_syntaxes={VERIFICATION_SOP_CLASS: syntaxes,
                               **{uid: syntaxes for uid, _ in qr_contexts()}},
            accept_any_abstract_syntax=True)
        stalls = echoes = 0
        moving = True

        async def probe() -> None:
            nonlocal stalls
            while moving:
                before = time.monotonic()
                await asyncio.sleep(0.005)
                stalls += time.monotonic() - before > 0.1

        async with Server(admission=AcceptorPolicy(accept_any_abstract_syntax=True),
                          handlers=Handlers(store=on_store)) as dest:
            dest_host, dest_port = await dest.listen()
            async with Server(admission=policy, handlers=Handlers(move=qr.move),
                              move_destinations={"DEST": RemoteAE(dest_host, dest_port)},
                              ) as server:
                host, port = await server.listen()
                verification = [(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])]
                async with connect(host, port, contexts=qr_contexts()) as mover, \
                        connect(host, port, contexts=verification) as other:
                    query = Dataset()
                    query.QueryRetrieveLevel = "STUDY"
                    query.StudyInstanceUID = "1.2.3.4.5"
                    prober = asyncio.create_task(probe())
                    move = asyncio.create_task(mover.move(query, "DEST"))
                    while not move.done():
                        assert await other.echo() == Status.SUCCESS
                        echoes += 1
                        await asyncio.sleep(0.01)
                    moving = False
                    await prober
                    result = await move
        return result, received, stalls, echoes

    started = time.monotonic()
    result, received, stalls, echoes = sync(main())
    index.close()
    assert result.status == Status.SUCCESS, result
    assert result.completed == received == INSTANCES
    assert stalls <= 3, f"{stalls} loop stalls over 100 ms"
    assert echoes > 10, f"only {echoes} C-ECHOs in {time.monotonic() - started:.1f} s"
