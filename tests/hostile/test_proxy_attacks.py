"""Attackers against a `Server(proxy_protocol=...)`: what a PROXY listener refuses, and that
the per-address caps count the client named in the header, never the proxy.

Every attacker connects straight to the node from 127.0.0.1 with a raw socket. Unless a
test narrows ``--proxy-from``, 127.0.0.1 is an allowed proxy address, so the bytes it sends
are judged as a header.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio import tls
from aiodicom.aio.server import ConnectionLimits, ProxyProtocol, Server
from aiodicom.core.dimse import Status
from aiodicom.core.proxy_header import SIGNATURE, encode_proxy_header
from aiodicom.errors import TLSError
from tests.aio.test_proxy import Recorder, certs, echo_via, make_server, relay
from tests.hostile.conftest import rq_bytes

__all__ = ["certs"]  # the module-scoped PKI fixture, shared with tests/aio/test_proxy.py

HEADER_TIMEOUT = 0.5


async def closed_by_server(reader: asyncio.StreamReader, within: float = 5.0) -> bytes:
    """Everything the server sent before closing (fails if it keeps the connection open)."""
    got = bytearray()
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                got += chunk
    except ConnectionError:  # a reset (or a write meeting one) is a close too
        pass
    except TimeoutError:
        raise AssertionError("the server kept the connection open") from None
    return bytes(got)


async def until(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server never got there")


def attack(run: Any, body: Callable[[Server, int], Awaitable[None]], *,
           proxy: ProxyProtocol | None = None, tls_certs: dict[str, Path] | None = None,
           **kw: Any) -> Server:
    rec = Recorder()

    async def main() -> Server:
        server = make_server(rec, proxy or ProxyProtocol(header_timeout=HEADER_TIMEOUT), **kw)
        ctx = None
        if tls_certs is not None:
            ctx = tls.server_context(cert=tls_certs["server_cert"], key=tls_certs["server_key"],
                                     ca=tls_certs["ca"])
        _, port = await server.listen("127.0.0.1", 0, tls=ctx)
        try:
            await body(server, port)
        finally:
            await server.close(drain_timeout=2)
        return server

    server: Server = run(main())
    return server


def test_no_header_is_refused_at_once(run: Any) -> None:
    """A client that skips the proxy: its A-ASSOCIATE-RQ is not a header; no answer at all."""
    async def body(server: Server, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(rq_bytes())
        assert await closed_by_server(reader) == b"", "the server answered a headerless peer"
        writer.close()

    server = attack(run, body)
    assert server.proxy_stats.bad_headers == 1 and server.proxy_stats.relayed == 0
    assert server.stats.active == set()


def test_no_header_on_tls_listener_is_refused(run: Any, certs: dict[str, Path]) -> None:
    """A direct TLS ClientHello (no header) gets no ServerHello."""
    async def body(server: Server, port: int) -> None:
        client = tls.client_context(cert=certs["client_cert"], key=certs["client_key"],
                                    ca=certs["ca"])
        with pytest.raises(TLSError, match="closed the connection during the TLS handshake"):
            await echo_via(port, tls_ctx=client)

    server = attack(run, body, tls_certs=certs)
    assert server.proxy_stats.bad_headers == 1 and server.stats.handshake_failures == 0


def test_truncated_header_then_close(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def body(server: Server, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_proxy_header(("192.0.2.1", 1), ("192.0.2.2", 2))[:20])
        writer.write_eof()
        assert await closed_by_server(reader) == b""
        writer.close()

    with caplog.at_level(logging.WARNING, logger="aiodicom"):
        server = attack(run, body)
    assert server.proxy_stats.bad_headers == 1
    assert "closed after 20 bytes of a PROXY header" in caplog.text


@pytest.mark.parametrize("head", [
    SIGNATURE + bytes((0x21, 0x11)) + (0xFFFF).to_bytes(2, "big"),  # 64 KiB of "TLVs"
    SIGNATURE + bytes((0x21, 0x11)) + (513).to_bytes(2, "big"),  # just over the bound
    SIGNATURE + bytes((0x21, 0x11)) + (4).to_bytes(2, "big"),  # shorter than 2 IPv4 + ports
    SIGNATURE + bytes((0x21, 0x21)) + (12).to_bytes(2, "big"),  # IPv6 in an IPv4 length
    SIGNATURE + bytes((0x11, 0x11)) + (12).to_bytes(2, "big"),  # version 1 in binary
    b"PROXY TCP4 203.0.113.5 127.0.0.1 5555 11112\r\n",  # v1 text
])
def test_bogus_header_refused_without_waiting(run: Any, head: bytes) -> None:
    """Refused on the fixed part: the server neither waits for the claimed length nor
    reads it (the connection ends well before the header timeout)."""
    async def body(server: Server, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(head)
        assert await closed_by_server(reader, within=HEADER_TIMEOUT * 0.8) == b""
        writer.close()

    server = attack(run, body, proxy=ProxyProtocol(header_timeout=30))
    assert server.proxy_stats.bad_headers == 1 and server.proxy_stats.timeouts == 0


def test_slow_header_dropped_at_the_timeout(run: Any) -> None:
    async def body(server: Server, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(SIGNATURE[:8])  # then nothing
        assert await closed_by_server(reader, within=10) == b""
        writer.close()

    server = attack(run, body)
    assert server.proxy_stats.timeouts == 1 and server.proxy_stats.bad_headers == 0


def test_valid_header_from_a_source_not_allowed(run: Any) -> None:
    """127.0.0.1 is not in --proxy-from: closed before a byte is read, whatever it sends."""
    async def body(server: Server, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(encode_proxy_header(("192.0.2.10", 4000), ("192.0.2.1", 104)))
        writer.write(rq_bytes())
        assert await closed_by_server(reader) == b""
        writer.close()

    server = attack(run, body, proxy=ProxyProtocol.from_cidrs("192.0.2.0/24"))
    assert server.proxy_stats.refused_sources == 1
    assert server.proxy_stats.relayed == server.proxy_stats.bad_headers == 0


def test_claimed_addresses_from_a_source_not_allowed_gain_nothing(run: Any) -> None:
    """An attacker rotating claimed addresses to dodge the per-address cap, from a source
    that is not the proxy: every connection is closed; none is counted anywhere."""
    async def body(server: Server, port: int) -> None:
        streams = []
        for i in range(6):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(encode_proxy_header((f"203.0.113.{i}", 1000 + i), ("10.0.0.1", 104)))
            streams.append((reader, writer))
        for reader, writer in streams:
            assert await closed_by_server(reader) == b""
            writer.close()
        assert len(server.pre_association) == 0 and len(server.proxy_headers) == 0

    server = attack(run, body, proxy=ProxyProtocol.from_cidrs("10.0.0.0/8"),
                    connection_limits=ConnectionLimits(max_pre_association_per_peer=1))
    assert server.proxy_stats.refused_sources == 6 and server.stats.active == set()


def test_per_address_cap_counts_the_real_client(run: Any) -> None:
    """Through the proxy, stalled connections from one client hit *its* cap; another client
    (same proxy, same socket peer) is still admitted."""
    async def body(server: Server, port: int) -> None:
        streams = []

        async def open_as(client: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(encode_proxy_header((client, 40000 + len(streams)), ("10.0.0.1", 104)))
            streams.append((reader, writer))
            return reader, writer

        for _ in range(2):
            await open_as("198.51.100.9")
        await until(lambda: server.pre_association.count("198.51.100.9") == 2)
        reader, _ = await open_as("198.51.100.9")  # the third: over its cap
        assert await closed_by_server(reader) == b""
        await open_as("198.51.100.10")
        await until(lambda: server.pre_association.count("198.51.100.10") == 1)
        assert server.pre_association.count("198.51.100.9") == 2
        assert server.pre_association.count("127.0.0.1") == 0, "the proxy was counted"
        for _, writer in streams:
            writer.close()

    attack(run, body, connection_limits=ConnectionLimits(max_pre_association_per_peer=2))


def test_per_address_handshake_cap_counts_the_real_client(
        run: Any, certs: dict[str, Path]) -> None:
    """The TLS listener: pending handshakes are capped per client named in the header."""
    async def body(server: Server, port: int) -> None:
        streams = []

        async def open_as(client: str) -> asyncio.StreamReader:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(encode_proxy_header((client, 5000 + len(streams)), ("10.0.0.1", 2762)))
            writer.write(b"\x16\x03\x01")  # a ClientHello begun, never finished
            streams.append(writer)
            return reader

        for _ in range(2):
            await open_as("198.51.100.9")
        await until(lambda: server.handshakes.count("198.51.100.9") == 2)
        assert await closed_by_server(await open_as("198.51.100.9")) == b""
        await open_as("198.51.100.10")
        await until(lambda: server.handshakes.count("198.51.100.10") == 1)
        assert server.handshakes.count("127.0.0.1") == 0, "the proxy was counted"
        for writer in streams:
            writer.close()

    attack(run, body, tls_certs=certs,
           connection_limits=ConnectionLimits(max_pending_handshakes_per_peer=2))


def test_legitimate_client_still_served_after_the_attacks(run: Any) -> None:
    async def body(server: Server, port: int) -> None:
        for junk in (b"\x01\x00", SIGNATURE[:5], b"PROXY "):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(junk)
            writer.write_eof()
            with contextlib.suppress(AssertionError):
                await closed_by_server(reader)
            writer.close()
        async with relay(port) as front:
            status, _ = await echo_via(front)
        assert status == Status.SUCCESS

    server = attack(run, body)
    assert server.proxy_stats.relayed == 1
