"""PDUs at the wrong time and peers that stall: PS3.8 Table 9-10 answers, ARTIM ends the
waits, no file is left behind and a legitimate client is served right after."""

from __future__ import annotations

import asyncio
import contextlib
import struct
from pathlib import Path
from typing import Any

from aiodicom.aio.server import Handlers
from aiodicom.core.dimse import CEchoRSP, CStoreRSP, decode_message
from aiodicom.core.negotiation import VERIFICATION_SOP_CLASS
from aiodicom.core.pdu import AAbort, PDataTF
from aiodicom.errors import AbortReason
from aiodicom.settings import Timeouts
from tests.hostile.conftest import (
    aborts,
    command_pdus,
    harness,
    pdata,
    read_pdu,
    read_until_closed,
    rq_bytes,
    store_rq,
)

RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def test_associate_rq_in_sta6_aborts(run: Any, tmp_path: Path) -> None:
    async def main() -> list[tuple[int, int]]:
        async with harness(tmp_path) as h:
            pdus = await h.attack(rq_bytes(), associate=True)
            await h.echo_ok()
            await h.settle()
            return aborts(pdus)

    assert run(main()) == [(2, AbortReason.UNEXPECTED_PDU)]


def test_release_rq_during_half_sent_dataset(run: Any, tmp_path: Path) -> None:
    """A-RELEASE-RQ while a C-STORE data set is half sent: the association ends (A-ABORT
    or the store fails before the RP), nothing is stored, .incoming is empty."""

    async def main() -> tuple[list[Any], list[Path], list[str]]:
        async with harness(tmp_path) as h:
            reader, writer = await h.associate()
            writer.write(command_pdus(store_rq("1.2.3.4.5")))
            writer.write(pdata(3, 0, b"\x08\x00\x16\x00" + b"\0" * 60))  # not last
            await asyncio.sleep(0.05)
            writer.write(RELEASE_RQ)
            pdus = await read_until_closed(reader, 3.0)
            writer.close()
            await h.echo_ok()
            await h.settle()
            return pdus, h.stored(), h.incoming()

    pdus, stored, incoming = run(main())
    assert stored == [] and incoming == []
    assert any(isinstance(p, AAbort) for p in pdus), pdus


def test_peer_that_never_closes_after_abort(run: Any, tmp_path: Path) -> None:
    """Sta13: the server sent A-ABORT and waits for us to close; ARTIM (0.5 s) ends it."""

    async def main() -> tuple[list[Any], float]:
        async with harness(tmp_path, artim=0.5) as h:
            reader, writer = await h.associate()
            loop = asyncio.get_running_loop()
            start = loop.time()
            writer.write(b"\x09\x00\x00\x00\x00\x00")
            pdus = await read_until_closed(reader, 3.0, stop_at_abort=False)
            elapsed = loop.time() - start
            writer.close()
            await h.echo_ok()
            await h.settle()
            return pdus, elapsed

    pdus, elapsed = run(main())
    assert aborts(pdus) == [(2, AbortReason.UNRECOGNIZED_PDU)]
    assert 0.3 <= elapsed < 2.0, elapsed


def test_peer_that_keeps_talking_after_abort(run: Any, tmp_path: Path) -> None:
    """PDUs in Sta13 are ignored (AA-6/AA-7); ARTIM still closes the connection."""

    async def main() -> tuple[list[Any], float]:
        async with harness(tmp_path, artim=0.5) as h:
            reader, writer = await h.associate()
            loop = asyncio.get_running_loop()
            start = loop.time()
            writer.write(b"\x09\x00\x00\x00\x00\x00")
            first = await read_pdu(reader)
            assert isinstance(first, AAbort)
            with contextlib.suppress(ConnectionError):
                for _ in range(20):
                    writer.write(pdata(1, 3, b"\0" * 8) + rq_bytes())
                    await asyncio.sleep(0.01)
            pdus = await read_until_closed(reader, 3.0, stop_at_abort=False)
            elapsed = loop.time() - start
            writer.close()
            await h.echo_ok()
            await h.settle()
            return pdus, elapsed

    pdus, elapsed = run(main())
    assert all(isinstance(p, AAbort) for p in pdus), pdus
    assert elapsed < 2.0, elapsed


def test_silent_peer_closed_by_artim(run: Any, tmp_path: Path) -> None:
    """Connected, never sends an A-ASSOCIATE-RQ: closed after ARTIM, nothing sent."""

    async def main() -> tuple[list[Any], float]:
        async with harness(tmp_path, artim=0.5) as h:
            reader, writer = await h.open()
            loop = asyncio.get_running_loop()
            start = loop.time()
            pdus = await read_until_closed(reader, 3.0, stop_at_abort=False)
            elapsed = loop.time() - start
            writer.close()
            await h.echo_ok()
            await h.settle()
            return pdus, elapsed

    pdus, elapsed = run(main())
    assert pdus == []
    assert 0.3 <= elapsed < 2.0, elapsed


def test_half_rq_then_silence_closed_by_artim(run: Any, tmp_path: Path) -> None:
    """Half an A-ASSOCIATE-RQ, then nothing: ARTIM (Sta2) still runs and closes."""

    async def main() -> float:
        async with harness(tmp_path, artim=0.5) as h:
            reader, writer = await h.open()
            raw = rq_bytes()
            writer.write(raw[: len(raw) // 2])
            loop = asyncio.get_running_loop()
            start = loop.time()
            await read_until_closed(reader, 3.0, stop_at_abort=False)
            writer.close()
            await h.echo_ok()
            await h.settle()
            return loop.time() - start

    assert run(main()) < 2.0


def test_stalled_mid_pdu_in_sta6_is_dropped(run: Any, tmp_path: Path) -> None:
    """Established, then half a P-DATA-TF and silence: the network timeout ends it."""

    async def main() -> float:
        timeouts = Timeouts(artim=0.5, network=0.5)
        async with harness(tmp_path, timeouts=timeouts) as h:
            reader, writer = await h.associate()
            writer.write(struct.pack(">BxL", 4, 1000) + b"\0" * 10)
            loop = asyncio.get_running_loop()
            start = loop.time()
            await read_until_closed(reader, 4.0, stop_at_abort=False)
            writer.close()
            await h.echo_ok()
            await h.settle()
            return loop.time() - start

    assert run(main()) < 3.0


def test_peer_abort_in_sta6_is_silent(run: Any, tmp_path: Path) -> None:
    async def main() -> list[Any]:
        async with harness(tmp_path) as h:
            pdus = await h.attack(ABORT, associate=True)
            await h.echo_ok()
            await h.settle()
            return pdus

    assert run(main()) == []


def test_dataset_without_command_aborts(run: Any, tmp_path: Path) -> None:
    async def main() -> list[tuple[int, int]]:
        async with harness(tmp_path) as h:
            pdus = await h.attack(pdata(3, 2, b"\0" * 16), associate=True)
            await h.echo_ok()
            await h.settle()
            return aborts(pdus)

    got = run(main())
    assert len(got) == 1, got


def test_command_on_unproposed_context_aborts(run: Any, tmp_path: Path) -> None:
    async def main() -> list[tuple[int, int]]:
        async with harness(tmp_path) as h:
            pdus = await h.attack(command_pdus(store_rq(), context_id=7), associate=True)
            await h.echo_ok()
            await h.settle()
            return aborts(pdus)

    got = run(main())
    assert len(got) == 1, got


def test_echo_then_store_on_verification_context(run: Any, tmp_path: Path) -> None:
    """A C-STORE-RQ on the Verification context is answered with a failure, not a file."""

    async def main() -> tuple[Any, list[Path]]:
        async with harness(tmp_path) as h:
            reader, writer = await h.associate()
            writer.write(command_pdus(store_rq("1.2.3.9"), context_id=1))
            writer.write(pdata(1, 2, b"\0" * 16))
            rsp = await read_pdu(reader)
            writer.write(RELEASE_RQ)
            await read_until_closed(reader, 3.0)
            writer.close()
            await h.settle()
            return rsp, h.stored()

    rsp, stored = run(main())
    assert stored == []
    if isinstance(rsp, PDataTF):
        msg = decode_message(b"".join(bytes(p.data) for p in rsp.pdvs))
        assert isinstance(msg, CStoreRSP | CEchoRSP) and msg.status.is_failure, msg
    else:
        assert isinstance(rsp, AAbort)
    assert VERIFICATION_SOP_CLASS


def test_slow_handler_is_not_a_stalled_peer(run: Any, tmp_path: Path) -> None:
    """The stall watchdog counts only time spent waiting on the peer: a handler slower
    than Timeouts.network still answers."""
    from aiodicom.aio.client import connect, storage_contexts_for
    from aiodicom.aio.requests import StoreRequest
    from aiodicom.aio.server import Server
    from aiodicom.core.dimse import Status
    from aiodicom.settings import AssociationSettings
    from tests.conftest import write_ct
    from tests.hostile.conftest import policy

    path = write_ct(tmp_path / "a.dcm")

    async def on_store(request: StoreRequest) -> Status:
        await request.data.discard()
        await asyncio.sleep(0.8)
        return Status.SUCCESS

    async def main() -> Status:
        server = Server(
            admission=policy(),
            handlers=Handlers(store=on_store),
            settings=AssociationSettings(
            timeouts=Timeouts(artim=0.5, network=0.3)),
        )
        host, port = await server.listen()
        async with connect(host, port, contexts=storage_contexts_for([path])) as assoc:
            status = await assoc.store(path)
        await server.close()
        return status

    assert run(main()) == Status.SUCCESS
