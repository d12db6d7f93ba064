"""Client and server end to end over loopback TCP, on both event loops."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.requests import EchoRequest, StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)
from aiodicom.errors import AssociationRejected, ConnectError, NoPresentationContext
from tests.conftest import write_ct

CT = "1.2.840.10008.5.1.4.1.1.2"


def _policy(**kw: Any) -> AcceptorPolicy:
    return AcceptorPolicy(
        abstract_syntaxes={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,),
                           CT: (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)},
        **kw,
    )


def test_echo(run: Any) -> None:
    seen: list[str] = []

    async def on_echo(request: EchoRequest) -> Status:
        seen.append(request.association.calling_ae_title)
        return Status.SUCCESS

    async def main() -> None:
        server = Server(admission=_policy(), handlers=Handlers(echo=on_echo))
        host, port = await server.listen()
        async with connect(host, port) as assoc:
            assert await assoc.echo() == Status.SUCCESS
            assert await assoc.echo() == Status.SUCCESS
        await server.close()
        assert server.active == 0

    run(main())
    assert seen == ["AIODICOM", "AIODICOM"]


def test_store_fragments_are_memoryviews(run: Any, tmp_path: Path) -> None:
    path = write_ct(tmp_path / "a.dcm", size=300_000)
    received: list[bytes] = []
    kinds: set[type] = set()

    async def on_store(request: StoreRequest) -> Status:
        parts = []
        async for view in request.fragments():
            kinds.add(type(view))
            parts.append(bytes(view))
        received.append(b"".join(parts))
        return Status.SUCCESS

    async def main() -> Status:
        server = Server(admission=_policy(max_pdu_length=16384), handlers=Handlers(store=on_store))
        host, port = await server.listen()
        async with connect(host, port, contexts=storage_contexts_for([path])) as assoc:
            status = await assoc.store(path)
        await server.close()
        return status

    assert run(main()) == Status.SUCCESS
    from aiodicom.core.part10 import read_part10_info

    info = read_part10_info(path)
    assert received == [path.read_bytes()[info.dataset_offset:]]
    assert kinds == {memoryview}


def test_store_dataset_mode_and_handler_failure(run: Any, tmp_path: Path) -> None:
    path = write_ct(tmp_path / "b.dcm", size=1000)
    got: list[Any] = []

    async def on_store(request: StoreRequest) -> Status:
        ds = await request.dataset()
        got.append(ds.SOPInstanceUID)
        if len(got) > 1:
            raise RuntimeError("handler bug")
        return Status.SUCCESS

    async def main() -> list[Status]:
        server = Server(admission=_policy(), handlers=Handlers(store=on_store))
        host, port = await server.listen()
        async with connect(host, port, contexts=storage_contexts_for([path])) as assoc:
            statuses = [await assoc.store(path), await assoc.store(path)]
        await server.close()
        return statuses

    ok, failed = run(main())
    assert ok == Status.SUCCESS
    assert failed.category.name == "FAILURE"
    import pydicom

    assert got[0] == pydicom.dcmread(path).SOPInstanceUID


def test_rejected_called_ae(run: Any) -> None:
    async def main() -> None:
        server = Server(admission=_policy(ae_title="STRICT"))
        host, port = await server.listen()
        try:
            with pytest.raises(AssociationRejected) as info:
                async with connect(host, port, called_ae_title="OTHER"):
                    pass
            assert (info.value.result, info.value.source, info.value.reason) == (1, 1, 7)
            assert "called AE title not recognized" in str(info.value)
        finally:
            await server.close()

    run(main())


def test_no_context_for_sop_class(run: Any, ct_file: Path) -> None:
    async def main() -> None:
        server = Server(admission=_policy())
        host, port = await server.listen()
        async with connect(host, port) as assoc:  # only verification proposed
            with pytest.raises(NoPresentationContext):
                await assoc.store(ct_file)
            assert await assoc.echo() == Status.SUCCESS
        await server.close()

    run(main())


def test_connect_refused(run: Any) -> None:
    async def main() -> None:
        server = Server(admission=_policy())
        host, port = await server.listen()
        await server.close()
        with pytest.raises(ConnectError, match="refused"):
            async with connect(host, port):
                pass

    run(main())


def test_concurrent_associations(run: Any) -> None:
    async def main() -> int:
        server = Server(admission=_policy())
        host, port = await server.listen()

        async def one() -> Status:
            async with connect(host, port) as assoc:
                return await assoc.echo()

        results = await asyncio.gather(*(one() for _ in range(50)))
        await server.close()
        return sum(r == Status.SUCCESS for r in results)

    assert run(main()) == 50


def test_server_receives_pdus_as_large_as_it_advertises(run: Any, tmp_path: Path) -> None:
    """The policy advertises 4 MiB; the client fragments to it; nothing is aborted."""
    from aiodicom.settings import AssociationSettings, Limits

    path = write_ct(tmp_path / "big.dcm", size=3_000_000)
    sizes: list[int] = []

    async def on_store(request: StoreRequest) -> Status:
        sizes.extend([len(view) async for view in request.fragments()])
        return Status.SUCCESS

    async def main() -> Status:
        server = Server(
            admission=_policy(max_pdu_length=4 << 20),
            handlers=Handlers(store=on_store),
            settings=AssociationSettings(limits=Limits(max_pdu_length=1 << 20)),
        )
        host, port = await server.listen()
        async with connect(host, port, contexts=storage_contexts_for([path])) as assoc:
            status = await assoc.store(path)
        await server.close()
        return status

    assert run(main()) == Status.SUCCESS
    assert max(sizes) > 1 << 20  # PDUs bigger than the settings' own cap went through
