"""pynetdicom over mutual TLS, both directions, with certificates from `aiodicom pki`."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from pathlib import Path
from typing import Any

import pydicom
import pytest

from aiodicom.aio import tls
from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.app import pki
from aiodicom.core.dimse import Status
from tests.conftest import write_ct
from tests.interop.test_dcmtk import _storage_server
from tests.interop.test_pynetdicom import _pynetdicom_scu

pytestmark = pytest.mark.interop
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)

CT = "1.2.840.10008.5.1.4.1.1.2"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca = pki.init_ca(root)
    server = pki.issue_server(root, name="localhost", ips=["127.0.0.1"], out=root / "server")
    client = pki.issue_client(root, ae_titles=["PYNETDICOM"], out=root / "client")
    return {"ca": ca.cert, "server_cert": server.cert, "server_key": server.key,
            "client_cert": client.cert, "client_key": client.key}


def test_pynetdicom_tls_scu_to_aiodicom(run: Any, tmp_path: Path,
                                        certs: dict[str, Path]) -> None:
    sent = [write_ct(tmp_path / f"t{i}.dcm", size=40_000) for i in range(2)]

    async def main() -> tuple[list[int], int, list[Path], Any]:
        server, stored = _storage_server(tmp_path / "store")
        server.admission = dataclasses.replace(server.admission,
                                               identify=tls.identity_from_ssl_object)
        context = tls.server_context(cert=certs["server_cert"], key=certs["server_key"],
                                     ca=certs["ca"])
        _, port = await server.listen(tls=context)
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certs["ca"]))
            ctx.load_cert_chain(str(certs["client_cert"]), str(certs["client_key"]))
            statuses, retried = await asyncio.to_thread(
                _pynetdicom_scu, port, sent, (ctx, "localhost"))
        finally:
            await server.close()
        return statuses, retried, stored, server.stats.accepted

    statuses, retried, stored, accepted = run(main())
    assert statuses == [0, 0, 0]
    assert accepted == 1 + retried  # a retry of pynetdicom's race is a new association
    assert sorted({p.stem for p in stored}) == sorted(
        str(pydicom.dcmread(p).SOPInstanceUID) for p in sent)


def test_aiodicom_tls_to_pynetdicom_scp(run: Any, tmp_path: Path,
                                        certs: dict[str, Path]) -> None:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage, Verification

    sent = [write_ct(tmp_path / f"u{i}.dcm", size=30_000) for i in range(2)]
    received: list[Any] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(certs["ca"]))
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.load_cert_chain(str(certs["server_cert"]), str(certs["server_key"]))
    ae = AE(ae_title="PYSCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    scp = ae.start_server(("127.0.0.1", 0), block=False, ssl_context=server_ctx,
                          evt_handlers=[(evt.EVT_C_STORE, on_store)])
    port = scp.server_address[1]
    client_ctx = tls.client_context(cert=certs["client_cert"], key=certs["client_key"],
                                    ca=certs["ca"])

    async def main() -> list[Status]:
        async with connect("127.0.0.1", port, called_ae_title="PYSCP", tls=client_ctx,
                           server_hostname="localhost",
                           contexts=storage_contexts_for(sent)) as assoc:
            return [await assoc.echo()] + [await assoc.store(p) for p in sent]

    try:
        statuses = run(main())
    finally:
        scp.shutdown()
    assert statuses == [Status.SUCCESS] * 3
    assert [ds.SOPInstanceUID for ds in received] == [
        pydicom.dcmread(p).SOPInstanceUID for p in sent]

