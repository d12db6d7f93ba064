"""aio.protocol: ARTIM and the server's idle watchdog share one timer per connection.

A plain associate + echo + release on the acceptor arms one loop timer (ARTIM's, at the
connection; the watchdog and the release's ARTIM fit behind it); the watchdog still aborts
a stalled peer and ARTIM still closes a connection whose peer never sends its RQ.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from aiodicom.aio.client import connect
from aiodicom.aio.protocol import DicomProtocol
from aiodicom.aio.server import Server, ServerAssociation
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)
from aiodicom.settings import AssociationSettings, Timeouts


def _policy() -> AcceptorPolicy:
    return AcceptorPolicy(ae_title="STRICT",
                          abstract_syntaxes={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)})


def _count_server_timers(loop: asyncio.AbstractEventLoop) -> list[float]:
    armed: list[float] = []
    call_at = loop.call_at

    def counting(when: float, callback: Any, *args: Any, **kwargs: Any) -> asyncio.TimerHandle:
        owner = getattr(callback, "__self__", None)
        if (isinstance(owner, DicomProtocol) and not owner.ul.requestor) or isinstance(
                owner, ServerAssociation):
            armed.append(when)
        return call_at(when, callback, *args, **kwargs)

    loop.call_at = counting  # type: ignore[method-assign]
    return armed


def test_short_association_arms_one_timer() -> None:
    async def main() -> tuple[list[Status], list[float]]:
        armed = _count_server_timers(asyncio.get_running_loop())
        server = Server(admission=_policy())
        host, port = await server.listen()
        statuses = []
        for _ in range(3):
            async with connect(host, port, called_ae_title="STRICT") as assoc:
                statuses.append(await assoc.echo())
        await server.close()
        return statuses, armed

    statuses, armed = asyncio.run(main())
    assert statuses == [Status.SUCCESS] * 3
    assert len(armed) == 3  # one per association (was ARTIM twice plus the watchdog: 9)


def test_watchdog_on_the_shared_timer_aborts_a_stalled_peer() -> None:
    settings = AssociationSettings(timeouts=Timeouts(network=0.3, dimse=0.2, artim=5.0))

    async def main() -> tuple[float, int]:
        server = Server(admission=_policy(), settings=settings)
        host, port = await server.listen()
        loop = asyncio.get_running_loop()
        async with connect(host, port, called_ae_title="STRICT") as assoc:
            assert await assoc.echo() == Status.SUCCESS
            started = loop.time()
            protocol = assoc.protocol
            assert protocol is not None
            await asyncio.wait_for(protocol.closed, 5)
            waited = loop.time() - started
        await server.close()
        return waited, server.stats.aborted

    waited, aborted = asyncio.run(main())
    assert 0.25 <= waited < 3.0  # the network limit, well before ARTIM's 5 s
    assert aborted == 1


def test_artim_still_closes_a_silent_connection() -> None:
    settings = AssociationSettings(timeouts=Timeouts(artim=0.2, network=60.0))

    async def main() -> bytes:
        server = Server(admission=_policy(), settings=settings)
        host, port = await server.listen()
        loop = asyncio.get_running_loop()
        sock = socket.create_connection((host, port))
        sock.setblocking(False)
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 100), 5)  # b"" on close
        finally:
            sock.close()
        await server.close()
        return data

    assert asyncio.run(main()) == b""
