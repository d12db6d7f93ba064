"""Failed TLS handshakes are counted (stats, observer, metrics), good ones are not."""

from __future__ import annotations

import asyncio
import gc
import ssl
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio import tls
from aiodicom.aio.client import connect
from aiodicom.aio.events import HandshakeFailed, ServerEvent
from aiodicom.aio.server import Server
from aiodicom.app import pki
from aiodicom.app.server.metrics import MetricsObserver
from aiodicom.app.server.run import storage_acceptor_policy
from aiodicom.core.dimse import Status
from aiodicom.settings import AssociationSettings, Timeouts


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pki")
    ca = pki.init_ca(root)
    server = pki.issue_server(root, name="localhost", ips=["127.0.0.1"], out=root / "server")
    client = pki.issue_client(root, ae_titles=["AIODICOM"], out=root / "client")
    return {"ca": ca.cert, "cert": server.cert, "key": server.key,
            "client_cert": client.cert, "client_key": client.key}


def test_failed_handshakes_are_counted(run: Any, certs: dict[str, Path]) -> None:
    events: list[ServerEvent] = []
    metrics = MetricsObserver(process=False)

    def observe(event: ServerEvent) -> None:
        events.append(event)
        metrics(event)

    async def main() -> tuple[int, Status]:
        server = Server(
            admission=storage_acceptor_policy("AIODICOM", max_pdu_length=1 << 20),
            settings=AssociationSettings(timeouts=Timeouts(tls_handshake=1.0)),
            observer=observe,
        )
        context = tls.server_context(cert=certs["cert"], key=certs["key"], ca=certs["ca"])
        _, port = await server.listen(tls=context)
        loop = asyncio.get_running_loop()
        # 1: plain DICOM bytes on the TLS port
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x01\x00\x00\x00\x00\x10" + bytes(16))
        await asyncio.sleep(0.2)
        writer.close()
        # 2: a TLS client without a certificate
        anonymous = ssl.create_default_context(cafile=str(certs["ca"]))
        anonymous.check_hostname = False
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=anonymous)
        with_timeout = asyncio.wait_for(reader.read(10), 5)
        try:
            await with_timeout
        except (ConnectionError, ssl.SSLError):
            pass
        writer.close()
        # 3: a client that connects and says nothing until the handshake timeout
        _, silent = await asyncio.open_connection("127.0.0.1", port)
        deadline = loop.time() + 10
        while server.stats.handshake_failures < 3 and loop.time() < deadline:
            gc.collect()
            await asyncio.sleep(0.1)
        silent.close()
        failures = server.stats.handshake_failures
        # a legitimate client completes its handshake: not counted
        client = tls.client_context(cert=certs["client_cert"], key=certs["client_key"],
                                    ca=certs["ca"])
        async with connect("127.0.0.1", port, tls=client, server_hostname="localhost") as assoc:
            status = await assoc.echo()
        gc.collect()
        await asyncio.sleep(0.1)
        assert server.stats.handshake_failures == failures
        await server.close()
        return failures, status

    failures, status = run(main())
    assert failures == 3
    assert status == Status.SUCCESS
    assert [e.count for e in events if isinstance(e, HandshakeFailed)] == [1, 2, 3]
    text = metrics.metrics.render()
    assert "aiodicom_tls_handshake_failures_total 3" in text
