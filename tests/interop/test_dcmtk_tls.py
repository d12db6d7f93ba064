"""DCMTK 3.6 as the peer over mutual TLS (PS3.15 B.12), with certificates from `aiodicom pki`.

DCMTK presents its certificate file as is (no chain), so its client certificates come from
our root CA directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from aiodicom.aio import tls
from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Admission, Handlers, Server
from aiodicom.app import pki
from aiodicom.app.archive.storage import Storage, StorageSettings
from aiodicom.app.server.run import storage_acceptor_policy
from aiodicom.core.dimse import Status
from aiodicom.settings import AssociationSettings
from tests.conftest import make_runner, write_ct
from tests.interop.peers import dcmtk, run_tool, same_dataset, start_listening

pytestmark = pytest.mark.interop


@dataclass
class PKI:
    ca: Path
    server: pki.IssuedCertificate
    storescu: pki.IssuedCertificate


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    tmp = tmp_path_factory.mktemp("dcmtk-tls")
    root = tmp / "ca"
    pki.init_ca(root)
    return PKI(
        ca=root / "ca.crt",
        server=pki.issue_server(root, name="localhost", ips=["127.0.0.1"], out=tmp / "server"),
        storescu=pki.issue_client(root, ae_titles=["STORESCU"], out=tmp / "storescu"),
    )


class TLSStorageServer:
    def __init__(self, p: PKI, root: Path) -> None:
        storage = Storage(StorageSettings(root=root))
        self.stored: list[Path] = []
        self.identities: list[Any] = []

        async def on_store(request: StoreRequest) -> Status:
            self.identities.append(request.association.identity)
            self.stored.append((await request.save(storage)).path)
            return Status.SUCCESS

        self.server = Server(
            admission=Admission(
                policy=storage_acceptor_policy("AIODICOM", max_pdu_length=1 << 20),
                identify=tls.identity_from_ssl_object,
            ),
            handlers=Handlers(store=on_store),
        )
        self.ctx = tls.server_context(cert=p.server.cert, key=p.server.key, ca=p.ca)

    async def listen(self) -> int:
        _, port = await self.server.listen("127.0.0.1", 0, tls=self.ctx)
        return port


def _dcmtk_tls(p: PKI, issued: pki.IssuedCertificate) -> list[str]:
    return ["+tls", str(issued.key), str(issued.cert), "+cf", str(p.ca)]


def test_echoscu_tls_to_aiodicom(run: Any, p: PKI, tmp_path: Path) -> None:
    async def main() -> tuple[int, str]:
        srv = TLSStorageServer(p, tmp_path / "store")
        port = await srv.listen()
        try:
            return await run_tool(dcmtk("echoscu"), *_dcmtk_tls(p, p.storescu),
                                  "-aet", "STORESCU", "-aec", "AIODICOM", "--repeat", "3",
                                  "127.0.0.1", str(port))
        finally:
            await srv.server.close(drain_timeout=2)

    code, out = run(main())
    assert code == 0, out


def test_storescu_tls_to_aiodicom(p: PKI, tmp_path: Path) -> None:
    sent = [write_ct(tmp_path / f"in{i}.dcm", size=150_000 + 2 * i) for i in range(3)]
    root = tmp_path / "store"
    srv = TLSStorageServer(p, root)

    async def main() -> tuple[int, str]:
        port = await srv.listen()
        try:
            return await run_tool(dcmtk("storescu"), *_dcmtk_tls(p, p.storescu),
                                  "-aet", "STORESCU", "-aec", "AIODICOM", "127.0.0.1",
                                  str(port), *map(str, sent))
        finally:
            await srv.server.close(drain_timeout=2)

    code, out = make_runner("asyncio")(main())
    assert code == 0, out
    assert len(srv.stored) == 3
    assert all(i is not None and i.ae_titles == ("STORESCU",) for i in srv.identities)
    by_uid = {path.stem: path for path in srv.stored}
    for path in sent:
        same_dataset(path, by_uid[pydicom.dcmread(path).SOPInstanceUID])


def test_aiodicom_tls_to_storescp(p: PKI, tmp_path: Path) -> None:
    sent = [write_ct(tmp_path / f"out{i}.dcm", size=100_000) for i in range(2)]
    outdir = tmp_path / "scp"
    outdir.mkdir()
    client = tls.client_context(cert=p.storescu.cert, key=p.storescu.key, ca=p.ca)

    async def main() -> list[Status]:
        # storescp requires and verifies the peer certificate by default (-rc).
        proc, port = await start_listening(lambda port: [
            dcmtk("storescp"), "+tls", str(p.server.key), str(p.server.cert), "+cf", str(p.ca),
            "-od", str(outdir), "-aet", "STORESCP", str(port)])
        try:
            async with connect("127.0.0.1", port, called_ae_title="STORESCP",
                               contexts=storage_contexts_for(sent), tls=client,
                               settings=AssociationSettings(ae_title="STORESCU")) as assoc:
                assert await assoc.echo() == Status.SUCCESS
                return [await assoc.store(path) for path in sent]
        finally:
            proc.terminate()
            await proc.wait()

    assert make_runner("asyncio")(main()) == [Status.SUCCESS, Status.SUCCESS]
    received = sorted(outdir.iterdir())
    assert len(received) == 2
    by_uid = {pydicom.dcmread(path).SOPInstanceUID: path for path in received}
    for path in sent:
        same_dataset(path, by_uid[pydicom.dcmread(path).SOPInstanceUID])


def test_storescu_with_unbound_ae_title_rejected(
    p: PKI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sent = [write_ct(tmp_path / "in.dcm")]
    srv = TLSStorageServer(p, tmp_path / "store")
    caplog.set_level(logging.INFO, logger="aiodicom")

    async def main() -> tuple[int, str]:
        port = await srv.listen()
        try:
            return await run_tool(dcmtk("storescu"), *_dcmtk_tls(p, p.storescu),
                                  "-aet", "IMPOSTOR", "-aec", "AIODICOM", "127.0.0.1",
                                  str(port), *map(str, sent))
        finally:
            await srv.server.close(drain_timeout=2)

    code, out = make_runner("asyncio")(main())
    assert code != 0, out
    assert "Rejected" in out or "rejected" in out, out
    assert srv.stored == []
    assert srv.server.stats.rejected == 1
    assert "'IMPOSTOR' is not bound to certificate" in caplog.text
