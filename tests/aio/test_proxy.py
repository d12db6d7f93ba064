"""`Server(proxy_protocol=...)`: the client's address from a PROXY v2 header, both listeners.

A small in-test relay plays HAProxy (``mode tcp``, ``send-proxy-v2``): it accepts the
client, connects to the server, writes the header naming the client's real address, then
copies bytes both ways. The real HAProxy is in tests/interop/test_haproxy.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio import tls
from aiodicom.aio._proxy import client_address
from aiodicom.aio.client import connect
from aiodicom.aio.events import AssociationEnded, ServerEvent
from aiodicom.aio.requests import EchoRequest
from aiodicom.aio.server import Admission, Handlers, ProxyProtocol, Server
from aiodicom.app import pki
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)
from aiodicom.core.proxy_header import encode_proxy_header
from aiodicom.errors import AssociationRejected, ConfigurationError
from aiodicom.settings import AssociationSettings, Timeouts

HeaderFor = Callable[[tuple[str, int], tuple[str, int]], bytes]


def real_header(client: tuple[str, int], proxy_side: tuple[str, int]) -> bytes:
    return encode_proxy_header(client, proxy_side)


@contextlib.asynccontextmanager
async def relay(target: int, header_for: HeaderFor = real_header) -> AsyncIterator[int]:
    """A one-port TCP proxy to 127.0.0.1:target that sends `header_for(client, us)` first."""
    tasks: set[asyncio.Task[None]] = set()
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = writer.get_extra_info("peername")[:2]
        us = writer.get_extra_info("sockname")[:2]
        writers.append(writer)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        writers.append(up_writer)
        up_writer.write(header_for(client, us))
        for task in (asyncio.create_task(pipe(reader, up_writer)),
                     asyncio.create_task(pipe(up_reader, writer))):
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in writers:
            writer.close()
        await server.wait_closed()


def policy() -> AcceptorPolicy:
    return AcceptorPolicy(abstract_syntaxes={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)})


def settings(ae: str = "ECHOSCU") -> AssociationSettings:
    return AssociationSettings(ae_title=ae, timeouts=Timeouts(
        connect=5, tls_handshake=5, acse=5, dimse=5, artim=5))


class Recorder:
    """Echo handler and observer: which peer the server believed each association was."""

    def __init__(self) -> None:
        self.peers: list[tuple[str, int] | None] = []
        self.identities: list[Any] = []
        self.ended: list[AssociationEnded] = []

    async def echo(self, request: EchoRequest) -> Status:
        self.peers.append(request.association.peer_address)
        self.identities.append(request.association.identity)
        return Status.SUCCESS

    def observe(self, event: ServerEvent) -> None:
        if isinstance(event, AssociationEnded):
            self.ended.append(event)


def make_server(rec: Recorder, proxy: ProxyProtocol | None = None, **kw: Any) -> Server:
    return Server(admission=kw.pop("admission", Admission(policy=policy())),
                  handlers=Handlers(echo=rec.echo), settings=settings("AIODICOM"),
                  observer=rec.observe, proxy_protocol=proxy or ProxyProtocol(), **kw)


async def echo_via(port: int, *, tls_ctx: ssl.SSLContext | None = None,
                   ae: str = "ECHOSCU") -> tuple[Status, tuple[str, int]]:
    """C-ECHO through `port`; the status and our own source address."""
    async with connect("127.0.0.1", port, called_ae_title="AIODICOM", settings=settings(ae),
                       tls=tls_ctx) as assoc:
        assert assoc.protocol is not None
        ours = assoc.protocol.extra("sockname")[:2]
        return await assoc.echo(), (ours[0], ours[1])


def test_plain_listener_sees_the_client_not_the_proxy(run: Any) -> None:
    rec = Recorder()

    async def body() -> None:
        server = make_server(rec)
        _, port = await server.listen("127.0.0.1", 0)
        try:
            async with relay(port) as front:
                status, ours = await echo_via(front)
        finally:
            await server.close(drain_timeout=2)
        assert status == Status.SUCCESS
        assert rec.peers == [ours], "the handler saw the proxy's address"
        assert rec.ended and rec.ended[0].peer_address == ours
        assert server.proxy_stats.relayed == 1 and server.proxy_stats.bad_headers == 0

    run(body())


def test_claimed_address_is_what_everything_sees(run: Any) -> None:
    """The header is trusted from an allowed proxy: its address, not the socket's."""
    rec = Recorder()

    async def body() -> None:
        server = make_server(rec)
        _, port = await server.listen("127.0.0.1", 0)
        claimed = ("198.51.100.23", 50123)
        try:
            async with relay(port, lambda c, us: encode_proxy_header(claimed, us)) as front:
                status, _ = await echo_via(front)
        finally:
            await server.close(drain_timeout=2)
        assert status == Status.SUCCESS and rec.peers == [claimed]

    run(body())


def test_ipv6_client_address(run: Any) -> None:
    rec = Recorder()

    async def body() -> None:
        server = make_server(rec)
        _, port = await server.listen("127.0.0.1", 0)

        def header(c: tuple[str, int], us: tuple[str, int]) -> bytes:
            return encode_proxy_header(("2001:db8::7", 999), ("::1", 1))

        try:
            async with relay(port, header) as front:
                status, _ = await echo_via(front)
        finally:
            await server.close(drain_timeout=2)
        assert status == Status.SUCCESS and rec.peers == [("2001:db8::7", 999)]

    run(body())


def test_ipv4_mapped_client_address_is_the_ipv4_client(run: Any) -> None:
    """A dual-stack proxy names an IPv4 client ``::ffff:a.b.c.d``: logs, audit and the
    per-address caps must count it as ``a.b.c.d``, not as a second client."""
    rec = Recorder()

    async def body() -> None:
        server = make_server(rec)
        _, port = await server.listen("127.0.0.1", 0)

        def header(c: tuple[str, int], us: tuple[str, int]) -> bytes:
            return encode_proxy_header(("::ffff:198.51.100.23", 999), ("::1", 1))

        try:
            async with relay(port, header) as front:
                status, _ = await echo_via(front)
        finally:
            await server.close(drain_timeout=2)
        assert status == Status.SUCCESS and rec.peers == [("198.51.100.23", 999)]
        assert rec.ended and rec.ended[0].peer_address == ("198.51.100.23", 999)

    run(body())
    assert client_address(("::ffff:10.0.0.1", 5)) == ("10.0.0.1", 5)
    assert client_address(("2001:db8::7", 5)) == ("2001:db8::7", 5)
    assert client_address(("10.0.0.1", 5)) == ("10.0.0.1", 5)


def test_local_header_then_dicom_is_the_proxy_itself(run: Any) -> None:
    """A LOCAL header followed by traffic (a DICOM health check): the peer is the proxy."""
    rec = Recorder()

    async def body() -> None:
        server = make_server(rec)
        _, port = await server.listen("127.0.0.1", 0)

        def local(c: tuple[str, int], us: tuple[str, int]) -> bytes:
            return encode_proxy_header()

        try:
            async with relay(port, local) as front:
                status, _ = await echo_via(front)
        finally:
            await server.close(drain_timeout=2)
        assert status == Status.SUCCESS
        assert rec.peers[0] is not None and rec.peers[0][0] == "127.0.0.1"
        assert server.proxy_stats.probes == 0 and server.proxy_stats.relayed == 1

    run(body())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("proxy-tls")
    root = tmp / "ca"
    pki.init_ca(root)
    server = pki.issue_server(root, name="localhost", ips=["127.0.0.1"], out=tmp / "server")
    client = pki.issue_client(root, ae_titles=["ECHOSCU"], out=tmp / "client")
    return {"ca": root / "ca.crt", "server_cert": server.cert, "server_key": server.key,
            "client_cert": client.cert, "client_key": client.key}


def test_tls_listener_reads_header_then_mutual_tls(run: Any, certs: dict[str, Path]) -> None:
    """Mutual TLS is end to end through the relay: identity and AE binding unchanged."""
    rec = Recorder()

    async def body() -> None:
        server = make_server(rec, admission=Admission(
            policy=policy(), identify=tls.identity_from_ssl_object, require_ae_binding=True))
        ctx = tls.server_context(cert=certs["server_cert"], key=certs["server_key"],
                                 ca=certs["ca"])
        client = tls.client_context(cert=certs["client_cert"], key=certs["client_key"],
                                    ca=certs["ca"])
        _, port = await server.listen("127.0.0.1", 0, tls=ctx)
        try:
            async with relay(port) as front:
                status, ours = await echo_via(front, tls_ctx=client)
                with pytest.raises(AssociationRejected):  # AE title not bound to the cert
                    await echo_via(front, tls_ctx=client, ae="OTHER")
        finally:
            await server.close(drain_timeout=2)
        assert status == Status.SUCCESS and rec.peers == [ours]
        assert rec.identities[0] is not None
        assert "ECHOSCU" in rec.identities[0].ae_titles
        assert server.stats.handshake_failures == 0

    run(body())


def test_health_check_probe_is_routine(run: Any, certs: dict[str, Path],
                                       caplog: pytest.LogCaptureFixture) -> None:
    """HAProxy's check: LOCAL header, then a reset. No warning, no failed handshake, no
    association event, on either listener."""
    rec = Recorder()

    async def body() -> None:
        server = make_server(rec)
        ctx = tls.server_context(cert=certs["server_cert"], key=certs["server_key"],
                                 ca=certs["ca"])
        _, plain = await server.listen("127.0.0.1", 0)
        _, secure = await server.listen("127.0.0.1", 0, tls=ctx)
        try:
            for port in (plain, secure) * 3:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.write(encode_proxy_header())
                await writer.drain()
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                writer.close()  # linger 0: a reset, as HAProxy does
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            for _ in range(200):
                if server.proxy_stats.probes == 6:
                    break
                await asyncio.sleep(0.01)
        finally:
            await server.close(drain_timeout=2)
        assert server.proxy_stats.probes == 6
        assert server.stats.handshake_failures == 0 and rec.ended == []
        assert server.stats.aborted == 0

    with caplog.at_level(logging.INFO, logger="aiodicom"):
        run(body())
    assert not [r for r in caplog.records if r.levelno >= logging.INFO
                and "listening" not in r.getMessage()], caplog.text


def test_proxy_protocol_configuration() -> None:
    proxy = ProxyProtocol.from_cidrs("10.0.0.0/8, 192.0.2.7,2001:db8::/32")
    assert proxy.allows("10.1.2.3") and proxy.allows("192.0.2.7")
    assert proxy.allows("::ffff:10.9.9.9") and proxy.allows("2001:db8::1")
    assert not proxy.allows("192.0.2.8") and not proxy.allows("127.0.0.1")
    assert not proxy.allows("not an address")
    default = ProxyProtocol()
    assert default.allows("127.0.0.1") and default.allows("::1")
    assert not default.allows("10.0.0.1")
    with pytest.raises(ConfigurationError, match="'10.0.0.300' is not an address"):
        ProxyProtocol.from_cidrs("10.0.0.300")
    with pytest.raises(ConfigurationError, match="at least one"):
        ProxyProtocol.from_cidrs(" , ")
    with pytest.raises(ConfigurationError, match="header_timeout"):
        ProxyProtocol(header_timeout=0)
    with pytest.raises(ConfigurationError, match="max_pending"):
        ProxyProtocol(max_pending=0)
    with pytest.raises(ConfigurationError, match="at least one network"):
        ProxyProtocol(allowed=())
