"""A released association is freed when its owner lets go, without the cycle collector.

The association held its protocol and the protocol held the association's callbacks: every
ended association, with its buffers and (over TLS) the transport's SSL object, waited for a
full collection, which under 10,000 held associations comes after a quarter as many have
ended (bench/concurrency.py: peak RSS 630 MB against 510 MB held; issue 18). Collection is
disabled here and DEBUG_SAVEALL shows what only the collector could have freed.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aiodicom.aio import tls
from aiodicom.aio.admission import Admission
from aiodicom.aio.client import open_association, storage_contexts_for
from aiodicom.aio.requests import EchoRequest, Handlers
from aiodicom.aio.server import Server
from aiodicom.app.pki import ensure_dev_pki
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
    RoleSupport,
)
from aiodicom.core.qr import qr_contexts
from aiodicom.core.user_items import RoleSelection
from aiodicom.errors import AssociationAborted
from tests.conftest import write_ct

N = 8


def _run(coro: Coroutine[Any, Any, None], loop: str) -> None:
    if loop == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(coro)
    else:
        with asyncio.Runner() as runner:
            runner.run(coro)


@pytest.fixture
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def _ours_left_for_the_collector() -> list[str]:
    gc.set_debug(gc.DEBUG_SAVEALL)
    gc.collect()
    return sorted({type(o).__qualname__ for o in gc.garbage
                   if type(o).__module__.startswith("aiodicom")})


def _echo_server() -> Server:
    async def on_echo(request: EchoRequest) -> Status:
        return Status.SUCCESS

    syntaxes = {VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)}
    return Server(admission=Admission(policy=AcceptorPolicy(abstract_syntaxes=syntaxes)),
                  handlers=Handlers(echo=on_echo))


async def _use(server: Server, port: int, client_tls: Any, ending: str = "release") -> None:
    for _ in range(N):
        assoc = await open_association("127.0.0.1", port, called_ae_title="AIODICOM",
                                       tls=client_tls)
        assert await assoc.echo() == Status.SUCCESS
        protocol = assoc.protocol
        assert protocol is not None
        if ending == "release":
            await assoc.release()
        elif ending == "abort":
            assoc.abort()
            await asyncio.wait_for(asyncio.shield(protocol.closed), 5)
        elif ending == "dropped, then used":  # the error is raised to the application
            protocol.abort_transport()
            await asyncio.wait_for(asyncio.shield(protocol.closed), 5)
            with pytest.raises(AssociationAborted):
                await assoc.echo()
        else:  # "dropped during release": release() swallows the error
            asyncio.get_running_loop().call_soon(protocol.abort_transport)
            await assoc.release()
        assert not assoc.is_established
    for _ in range(50):  # the server's side ends when the peer's close arrives
        if not server.active:
            break
        await asyncio.sleep(0.02)
    assert server.active == 0
    await asyncio.sleep(0.05)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("secure", [False, True], ids=["plain", "mutual-tls"])
def test_released_associations_leave_nothing_for_the_collector(
    loop: str, secure: bool, tmp_path: Path, no_collector: None
) -> None:
    async def body() -> None:
        server = _echo_server()
        server_tls = client_tls = None
        if secure:
            dev = ensure_dev_pki(tmp_path / "pki")
            server_tls = tls.server_context(cert=dev.server_cert, key=dev.server_key,
                                            ca=dev.ca_cert)
            client_tls = tls.client_context(cert=dev.client_cert, key=dev.client_key,
                                            ca=dev.ca_cert)
        _, port = await server.listen(tls=server_tls)
        try:
            await _use(server, port, client_tls)
        finally:
            await server.close()

    _run(body(), loop)
    assert _ours_left_for_the_collector() == []


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("ending", ["abort", "dropped, then used", "dropped during release"])
def test_ended_associations_leave_nothing_for_the_collector(
    loop: str, ending: str, no_collector: None
) -> None:
    """An ended association's error is raised as a copy: the kept one would carry the
    frames that hold the association in its traceback."""
    async def body() -> None:
        server = _echo_server()
        _, port = await server.listen()
        try:
            await _use(server, port, None, ending)
        finally:
            await server.close()

    _run(body(), loop)
    assert _ours_left_for_the_collector() == []


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_peer_address_kept_when_the_peer_closes_right_after_its_ac(loop: str) -> None:
    """Dropping the transport on loss must not lose the peer's address: a requestor reads it
    once the AC is in, and a peer (or a proxy) may close right behind its AC."""
    async def body() -> None:
        policy = AcceptorPolicy(abstract_syntaxes={
            VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)})
        server = Server(admission=Admission(policy=policy), handlers=Handlers())
        _, port = await server.listen()

        async def ac_then_close(reader: asyncio.StreamReader,
                                writer: asyncio.StreamWriter) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
            up_writer.write(await reader.read(65536))  # the A-ASSOCIATE-RQ
            ac = await up_reader.read(65536)
            assert ac[:1] == b"\x02"
            await asyncio.sleep(0.05)  # let the client's A-ASSOCIATE wait start
            writer.write(ac)
            writer.close()
            up_writer.close()

        relay = await asyncio.start_server(ac_then_close, "127.0.0.1", 0)
        relay_port = relay.sockets[0].getsockname()[1]
        try:
            assoc = await open_association("127.0.0.1", relay_port, called_ae_title="AIODICOM")
            assert assoc.protocol is not None
            await asyncio.wait_for(asyncio.shield(assoc.protocol.closed), 5)
            assert assoc.info is not None
            assert assoc.info.peer_address is not None
            assert assoc.info.peer_address[:2] == ("127.0.0.1", relay_port)
        finally:
            relay.close()
            await server.close()

    _run(body(), loop)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
@pytest.mark.parametrize("service", ["C-FIND", "C-GET"])
def test_queries_cut_mid_way_leave_nothing_for_the_collector(
    loop: str, service: str, tmp_path: Path, no_collector: None
) -> None:
    """The connection drops while the SCP's handler is still yielding: the server cancels the
    request (its QR operation must not keep its own task), and the client's C-GET raises
    (its frame must not keep the retrieve task that holds the error)."""
    ct = "1.2.840.10008.5.1.4.1.1.2"
    instance = write_ct(tmp_path / "ct.dcm")

    def match() -> Dataset:
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = "1.2.3"
        return ds

    async def on_find(request: Any) -> AsyncIterator[Dataset]:
        yield match()
        await asyncio.sleep(30)
        yield match()

    async def on_get(request: Any) -> AsyncIterator[Path]:
        yield instance
        await asyncio.sleep(30)
        yield instance

    async def sink(request: Any) -> Status:
        return Status.SUCCESS

    async def body() -> None:
        policy = AcceptorPolicy(
            abstract_syntaxes={uid: (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
                               for uid, _ in qr_contexts()},
            role_selection={ct: RoleSupport(requestor_scp=True)})
        server = Server(admission=Admission(policy=policy),
                        handlers=Handlers(find=on_find, get=on_get))
        _, port = await server.listen()
        try:
            for _ in range(3):
                assoc = await open_association(
                    "127.0.0.1", port, called_ae_title="AIODICOM",
                    contexts=[*qr_contexts(), *storage_contexts_for([instance])],
                    role_selections=[RoleSelection(sop_class_uid=ct, scu_role=False,
                                                  scp_role=True)])
                protocol = assoc.protocol
                assert protocol is not None
                asyncio.get_running_loop().call_later(0.2, protocol.abort_transport)
                with pytest.raises(AssociationAborted):
                    if service == "C-FIND":
                        async for _ in assoc.find(match()):
                            pass
                    else:
                        await assoc.get(match(), on_store=sink)
            for _ in range(100):
                if not server.active:
                    break
                await asyncio.sleep(0.02)
            assert server.active == 0
            await asyncio.sleep(0.05)
        finally:
            await server.close()

    _run(body(), loop)
    assert _ours_left_for_the_collector() == []
