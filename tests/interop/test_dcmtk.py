"""DCMTK as the peer, both directions, plain TCP (TLS cases are in test_dcmtk_tls.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.app.archive.storage import Storage, StorageSettings
from aiodicom.app.server.run import storage_acceptor_policy
from aiodicom.core.dimse import Status
from tests.conftest import write_ct
from tests.interop.peers import (
    dcmtk,
    run_tool,
    same_dataset,
    start_listening,
)

pytestmark = pytest.mark.interop


def _storage_server(root: Path) -> tuple[Server, list[Path]]:
    storage = Storage(StorageSettings(root=root))
    stored: list[Path] = []

    async def on_store(request: StoreRequest) -> Status:
        stored.append((await request.save(storage)).path)
        return Status.SUCCESS

    server = Server(
        admission=storage_acceptor_policy("AIODICOM", max_pdu_length=1 << 20),
        handlers=Handlers(store=on_store),
    )
    return server, stored


def test_echoscu_to_aiodicom(run: Any) -> None:
    async def main() -> tuple[int, str]:
        server = Server(admission=storage_acceptor_policy("AIODICOM", max_pdu_length=1 << 20))
        host, port = await server.listen()
        try:
            return await run_tool(dcmtk("echoscu"), "--repeat", "5", "-aec", "AIODICOM",
                                  host, str(port))
        finally:
            await server.close()

    code, out = run(main())
    assert code == 0, out


def test_storescu_to_aiodicom(run: Any, tmp_path: Path) -> None:
    sent = [write_ct(tmp_path / f"in{i}.dcm", size=200_000 + 2 * i) for i in range(3)]
    root = tmp_path / "store"

    async def main() -> tuple[int, str, list[Path]]:
        server, stored = _storage_server(root)
        host, port = await server.listen()
        try:
            code, out = await run_tool(dcmtk("storescu"), "-aec", "AIODICOM", host, str(port),
                                       *map(str, sent))
        finally:
            await server.close()
        return code, out, stored

    code, out, stored = run(main())
    assert code == 0, out
    assert len(stored) == 3
    by_uid = {p.stem: p for p in stored}
    import pydicom

    for path in sent:
        uid = pydicom.dcmread(path).SOPInstanceUID
        same_dataset(path, by_uid[uid])
        assert by_uid[uid].parent.parent.parent == root  # STORAGE/study/series/sop.dcm


def test_aiodicom_to_storescp(run: Any, tmp_path: Path) -> None:
    sent = [write_ct(tmp_path / f"out{i}.dcm", size=100_000) for i in range(2)]
    outdir = tmp_path / "scp"
    outdir.mkdir()

    async def main() -> list[Status]:
        proc, port = await start_listening(
            lambda port: [dcmtk("storescp"), "-od", str(outdir), "-aet", "STORESCP", str(port)])
        try:
            async with connect("127.0.0.1", port, called_ae_title="STORESCP",
                               contexts=storage_contexts_for(sent)) as assoc:
                assert await assoc.echo() == Status.SUCCESS
                return [await assoc.store(p) for p in sent]
        finally:
            proc.terminate()
            await proc.wait()

    statuses = run(main())
    assert statuses == [Status.SUCCESS, Status.SUCCESS]
    received = sorted(outdir.iterdir())
    assert len(received) == 2
    import pydicom

    by_uid = {pydicom.dcmread(p).SOPInstanceUID: p for p in received}
    for path in sent:
        same_dataset(path, by_uid[pydicom.dcmread(path).SOPInstanceUID])
