"""Unauthenticated resource use (issue 17, item 10): stalled TLS handshakes and connections
that never finish their A-ASSOCIATE-RQ are capped per address and per server.

Attackers connect from 127.0.0.2 (loopback too on Linux), the legitimate client from
127.0.0.1, so the per-address caps can be told apart from the server-wide ones. Memory is
measured with tracemalloc (allocations, not time), before and after the caps.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import tracemalloc
from dataclasses import dataclass
from typing import Any

import pytest

from aiodicom.aio import tls
from aiodicom.aio.client import connect
from aiodicom.aio.server import ConnectionLimits, Server
from aiodicom.app import pki
from aiodicom.core.dimse import Status
from aiodicom.core.pdu import AAbort
from aiodicom.settings import AssociationSettings, Timeouts
from tests.hostile.conftest import policy, read_until_closed, rq_bytes

ATTACKER = "127.0.0.2"
HALF_CLIENT_HELLO = bytes.fromhex("16030100c4010000c00303") + b"\x00" * 20


@dataclass
class Certs:
    server_ctx: ssl.SSLContext
    client_ctx: ssl.SSLContext


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    tmp = tmp_path_factory.mktemp("caps")
    root = tmp / "ca"
    pki.init_ca(root)
    server = pki.issue_server(root, name="localhost", ips=["127.0.0.1"], out=tmp / "server")
    client = pki.issue_client(root, ae_titles=["ECHOSCU"], out=tmp / "client")
    return Certs(
        server_ctx=tls.server_context(cert=server.cert, key=server.key, ca=root / "ca.crt"),
        client_ctx=tls.client_context(cert=client.cert, key=client.key, ca=root / "ca.crt"),
    )


def _settings(ae: str = "ECHOSCU") -> AssociationSettings:
    return AssociationSettings(ae_title=ae, timeouts=Timeouts(
        connect=5, tls_handshake=10, acse=5, dimse=5, artim=10))


def _server(limits: ConnectionLimits | None = None) -> Server:
    return Server(admission=policy(), settings=_settings("ANY-SCP"), connection_limits=limits)


async def _echo(port: int, ctx: ssl.SSLContext | None) -> Status:
    async with connect("127.0.0.1", port, called_ae_title="ANY-SCP", settings=_settings(),
                       tls=ctx) as assoc:
        return await assoc.echo()


async def _stall(port: int, n: int, payload: Any = None) -> list[asyncio.StreamWriter]:
    """Open `n` connections from the attacker address; each sends `payload(i)` and stalls."""
    writers = []
    for i in range(n):
        _, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(ATTACKER, 0))
        data = payload(i) if payload else b""
        if data:
            writer.write(data)
        writers.append(writer)
    return writers


async def _settle(predicate: Any) -> None:
    """Let the server's accept loop catch up (bounded; no assertion on time)."""
    for _ in range(500):
        if predicate():
            return
        await asyncio.sleep(0.01)


async def _close(writers: list[asyncio.StreamWriter]) -> None:
    for writer in writers:
        writer.close()
    for writer in writers:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await writer.wait_closed()


def _half_hello(i: int) -> bytes:
    return HALF_CLIENT_HELLO if i % 2 else b""


def test_300_stalled_handshakes_beside_a_legitimate_echo(run: Any, certs: Certs) -> None:
    async def main() -> tuple[int, int, Status]:
        server = _server()
        _, port = await server.listen("127.0.0.1", 0, tls=certs.server_ctx)
        stalled = await _stall(port, 300, _half_hello)
        try:
            gate = server.handshakes
            await _settle(lambda: gate.refused + len(gate) >= 300)
            pending, refused = len(gate), gate.refused
            status = await _echo(port, certs.client_ctx)
        finally:
            await _close(stalled)
            await server.close(drain_timeout=2)
        return pending, refused, status

    pending, refused, status = run(main())
    assert status == Status.SUCCESS
    assert pending <= ConnectionLimits().max_pending_handshakes_per_peer
    assert refused >= 300 - ConnectionLimits().max_pending_handshakes_per_peer


def test_server_wide_cap_drops_the_oldest_handshake_not_the_newcomer(
    run: Any, certs: Certs
) -> None:
    limits = ConnectionLimits(max_pending_handshakes=20, max_pending_handshakes_per_peer=1000)

    async def main() -> tuple[int, int, Status]:
        server = _server(limits)
        _, port = await server.listen("127.0.0.1", 0, tls=certs.server_ctx)
        stalled = await _stall(port, 100, _half_hello)
        try:
            gate = server.handshakes
            await _settle(lambda: gate.evicted >= 80)
            status = await _echo(port, certs.client_ctx)
            return len(gate), gate.evicted, status
        finally:
            await _close(stalled)
            await server.close(drain_timeout=2)

    pending, evicted, status = run(main())
    assert status == Status.SUCCESS
    assert pending <= 20 and evicted >= 80


def _traced_growth(certs: Certs, limits: ConnectionLimits | None, n: int = 300) -> int:
    """Python-heap bytes held while `n` handshakes stall (loop TLS buffers, protocols)."""

    async def main() -> int:
        server = _server(limits)
        _, port = await server.listen("127.0.0.1", 0, tls=certs.server_ctx)
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            stalled = await _stall(port, n, lambda i: HALF_CLIENT_HELLO)
            gate = server.handshakes
            await _settle(lambda: gate.refused + len(gate) >= n)
            await asyncio.sleep(0.2)
            held = tracemalloc.get_traced_memory()[0] - base
        finally:
            tracemalloc.stop()
        await _close(stalled)
        await server.close(drain_timeout=2)
        return held

    from tests.conftest import make_runner

    return int(make_runner("asyncio")(main()))


def test_stalled_handshakes_hold_bounded_memory(certs: Certs) -> None:
    uncapped = ConnectionLimits(max_pending_handshakes=10_000,
                                max_pending_handshakes_per_peer=10_000)
    before = _traced_growth(certs, uncapped)
    after = _traced_growth(certs, None)
    print(f"300 stalled handshakes: uncapped {before / 2**20:.1f} MiB traced, "
          f"capped {after / 2**20:.1f} MiB")
    # asyncio's TLS transport holds a 256 KiB read buffer per connection: the caps bound
    # how many exist (64 from one address), not their size (`limit_default_loop_tls_buffers`).
    assert after < ConnectionLimits().max_pending_handshakes_per_peer * 400 * 1024
    assert after * 3 < before


# --- plain connections that never finish their A-ASSOCIATE-RQ --------------------------------


def _partial_rq(i: int) -> bytes:
    """A header claiming a 100 KiB A-ASSOCIATE-RQ (under the bound), then 60 KiB of it."""
    return b"\x01\x00" + (100 * 1024).to_bytes(4, "big") + b"\x00\x01\x00\x00" + b"A" * 60_000


def test_pre_association_connections_capped_per_address(run: Any) -> None:
    async def main() -> tuple[int, int, Status]:
        server = _server()
        _, port = await server.listen("127.0.0.1", 0)
        stalled = await _stall(port, 300, _partial_rq)
        try:
            gate = server.pre_association
            await _settle(lambda: gate.refused + len(gate) >= 300)
            status = await _echo(port, None)
            return len(gate), gate.refused, status
        finally:
            await _close(stalled)
            await server.close(drain_timeout=2)

    pending, refused, status = run(main())
    assert status == Status.SUCCESS
    assert pending <= ConnectionLimits().max_pre_association_per_peer
    assert refused >= 300 - ConnectionLimits().max_pre_association_per_peer


def test_association_request_over_the_bound_is_aborted_at_its_header(run: Any) -> None:
    async def main() -> list[Any]:
        server = _server(ConnectionLimits(max_associate_length=8192))
        _, port = await server.listen("127.0.0.1", 0)
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            rq = rq_bytes()
            writer.write(rq[:2] + (20_000).to_bytes(4, "big") + rq[6:])
            pdus = await read_until_closed(reader, 5)
            writer.close()
            return pdus
        finally:
            await server.close(drain_timeout=2)

    pdus = run(main())
    assert pdus and isinstance(pdus[0], AAbort) and pdus[0].source == 2


def test_connection_limits_are_validated() -> None:
    from aiodicom.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        ConnectionLimits(max_pending_handshakes=0)
    with pytest.raises(ConfigurationError):
        ConnectionLimits(max_associate_length=100)
