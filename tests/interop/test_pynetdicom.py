"""pynetdicom as the peer, both directions."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.server import Server
from aiodicom.app.serve import storage_acceptor_policy
from aiodicom.core.dimse import Status
from tests.conftest import write_ct
from tests.interop.test_dcmtk import _storage_server

pytestmark = pytest.mark.interop

CT = "1.2.840.10008.5.1.4.1.1.2"
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)


def _pynetdicom_scu(port: int, files: list[Path]) -> list[int]:
    import pydicom
    from pynetdicom import AE

    ae = AE(ae_title="PYNETDICOM")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.add_requested_context(CT, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate("127.0.0.1", port, ae_title="AIODICOM")
    assert assoc.is_established, "pynetdicom could not associate with aiodicom"
    try:
        statuses = [int(assoc.send_c_echo().Status)]
        statuses += [int(assoc.send_c_store(pydicom.dcmread(p)).Status) for p in files]
    finally:
        assoc.release()
    return statuses


def test_pynetdicom_scu_to_aiodicom(run: Any, tmp_path: Path) -> None:
    sent = [write_ct(tmp_path / f"p{i}.dcm", size=50_000) for i in range(2)]

    async def main() -> tuple[list[int], list[Path]]:
        server, stored = _storage_server(tmp_path / "store")
        _, port = await server.listen()
        try:
            statuses = await asyncio.to_thread(_pynetdicom_scu, port, sent)
        finally:
            await server.close()
        return statuses, stored

    statuses, stored = run(main())
    assert statuses == [0, 0, 0]
    import pydicom

    assert sorted(p.stem for p in stored) == sorted(
        str(pydicom.dcmread(p).SOPInstanceUID) for p in sent
    )


def test_aiodicom_to_pynetdicom_scp(run: Any, tmp_path: Path) -> None:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage, Verification

    sent = [write_ct(tmp_path / f"q{i}.dcm", size=70_000) for i in range(2)]
    received: list[Any] = []

    def on_store(event: Any) -> int:
        received.append(event.dataset)
        return 0

    ae = AE(ae_title="PYSCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    scp = ae.start_server(("127.0.0.1", 0), block=False,
                          evt_handlers=[(evt.EVT_C_STORE, on_store)])
    port = scp.server_address[1]

    async def main() -> list[Status]:
        async with connect("127.0.0.1", port, called_ae_title="PYSCP",
                           contexts=storage_contexts_for(sent)) as assoc:
            return [await assoc.echo()] + [await assoc.store(p) for p in sent]

    try:
        statuses = run(main())
    finally:
        scp.shutdown()
    assert statuses == [Status.SUCCESS] * 3
    import pydicom

    expected = [pydicom.dcmread(p) for p in sent]
    assert [ds.SOPInstanceUID for ds in received] == [ds.SOPInstanceUID for ds in expected]
    assert received[0].PixelData == expected[0].PixelData


def test_pynetdicom_rejected_by_policy(run: Any) -> None:
    async def main() -> bool:
        server = Server(policy=storage_acceptor_policy("AIODICOM", max_pdu_length=1 << 20))
        _, port = await server.listen()

        def attempt() -> bool:
            from pynetdicom import AE

            ae = AE(ae_title="PYNETDICOM")
            ae.add_requested_context("1.2.3.4.5.6.7")  # nothing we accept for... (any storage)
            assoc = ae.associate("127.0.0.1", port, ae_title="AIODICOM")
            ok = bool(assoc.is_established)
            if ok:
                assoc.release()
            return ok

        try:
            return await asyncio.to_thread(attempt)
        finally:
            await server.close()

    assert run(main()) is True  # any SOP class is accepted by the storage policy
