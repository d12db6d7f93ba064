"""Every server connection has TCP_NODELAY, on both loops and both listeners.

Both loops set it on their TCP transports; `DicomProtocol.connection_made` relies on that
on uvloop (and sets it again on the default loop). Without it each small response would
wait on Nagle and the peer's delayed ACK.
"""

from __future__ import annotations

import socket
import ssl
from pathlib import Path
from typing import Any

from aiodicom.aio import tls
from aiodicom.aio.client import connect
from aiodicom.aio.server import Server
from aiodicom.app.pki.bundle import ensure_dev_pki
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)


def _nodelay(server: Server) -> list[int]:
    flags = []
    for assoc in server.stats.active:
        assert assoc.protocol is not None and assoc.protocol.transport is not None
        sock = assoc.protocol.transport.get_extra_info("socket")
        flags.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
    return flags


def test_server_connections_have_nodelay(run: Any, tmp_path: Path) -> None:
    pki = ensure_dev_pki(tmp_path / "pki")
    server_ctx = tls.server_context(cert=pki.server_cert, key=pki.server_key, ca=pki.ca_cert)
    client_ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    client_ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))

    async def main() -> list[tuple[Status, list[int]]]:
        syntaxes = {VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)}
        server = Server(admission=AcceptorPolicy(ae_title=None, abstract_syntaxes=syntaxes))
        _, plain = await server.listen("127.0.0.1", 0)
        _, secure = await server.listen("127.0.0.1", 0, tls=server_ctx)
        seen = []
        try:
            for port, ctx in ((plain, None), (secure, client_ctx)):
                async with connect("127.0.0.1", port, tls=ctx,
                                   server_hostname="localhost" if ctx else None) as assoc:
                    seen.append((await assoc.echo(), _nodelay(server)))
        finally:
            await server.close(drain_timeout=2)
        return seen

    assert [(s, flags) for s, flags in run(main())] == [(Status.SUCCESS, [1])] * 2
