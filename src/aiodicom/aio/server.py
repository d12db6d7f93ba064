"""The acceptor: a `Server` that accepts associations and runs async handlers.

One asyncio task per request (never a thread per association). The TLS handshake runs in
the loop's transport with a timeout, so a stalled client never holds up others. On
``close`` the server stops listening, lets associations finish up to a drain timeout, then
aborts what is left.

A server is three groups of options: `Handlers` (what each DIMSE service does),
`Admission` (who may associate and on what terms) and `AssociationSettings` (limits and
timeouts), plus an optional observer and the C-MOVE destinations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import weakref
from collections.abc import Mapping

from aiodicom.aio.admission import Admission
from aiodicom.aio.events import HandshakeFailed, Observer, ServerEvent
from aiodicom.aio.protocol import DicomProtocol
from aiodicom.aio.qr_service import MoveDestination, QRService
from aiodicom.aio.requests import Handlers
from aiodicom.aio.server_association import ServerAssociation, ServerStats
from aiodicom.core.negotiation import AcceptorPolicy, reject_local_limit_exceeded
from aiodicom.core.pdu import AAssociateRJ
from aiodicom.core.upper_layer import UpperLayer
from aiodicom.errors import ConfigurationError
from aiodicom.settings import AssociationSettings

__all__ = ["Admission", "Handlers", "Server", "ServerAssociation"]

log = logging.getLogger("aiodicom.server")


class Server:
    """A DICOM acceptor. Start listeners with `listen`, stop with `close` (drains).

    ``admission`` may be a bare `AcceptorPolicy` when negotiation is the only rule.
    ``move_destinations`` maps a C-MOVE destination AE title to how to reach it
    (`aiodicom.aio.client.RemoteAE`); a C-MOVE to any other title gets 0xA801.
    """

    def __init__(
        self,
        *,
        admission: Admission | AcceptorPolicy,
        handlers: Handlers | None = None,
        settings: AssociationSettings | None = None,
        observer: Observer | None = None,
        move_destinations: Mapping[str, MoveDestination] | None = None,
    ) -> None:
        if isinstance(admission, AcceptorPolicy):
            admission = Admission(policy=admission)
        self.admission = admission
        self.handlers = handlers or Handlers()
        self.settings = settings or AssociationSettings()
        self.observer = observer
        self.qr = QRService(
            find=self.handlers.find, get=self.handlers.get, move=self.handlers.move,
            destinations=dict(move_destinations or {}), settings=self.settings,
        )
        # Receive what we advertise: the policy's Maximum Length (0 = "no limit", which
        # still stops at the hard cap), never less than the settings' own receive cap.
        limits = self.settings.limits
        advertised = admission.policy.max_pdu_length or limits.hard_max_pdu_length
        self._receive_cap = max(limits.receive_cap, min(advertised, limits.hard_max_pdu_length))
        self.stats = ServerStats()
        self._idle = asyncio.Event()
        self._servers: list[asyncio.base_events.Server] = []
        self._closing = False

    def check_limits(self, assoc: ServerAssociation) -> AAssociateRJ | None:
        if self._closing:
            return reject_local_limit_exceeded()
        if len(self.stats.active) > self.settings.limits.max_associations:
            log.warning("association %d rejected: %d associations is the limit",
                        assoc.id, self.settings.limits.max_associations)
            return reject_local_limit_exceeded()
        return None

    @property
    def has_observer(self) -> bool:
        return self.observer is not None

    def notify(self, event: ServerEvent) -> None:
        if self.observer is not None:
            try:
                self.observer(event)
            except Exception:
                log.exception("observer failed on %s", type(event).__name__)

    def forget(self, assoc: ServerAssociation) -> None:
        self.stats.active.discard(assoc)
        if not self.stats.active:
            self._idle.set()

    def _factory(self) -> DicomProtocol:
        limits = self.settings.limits
        assoc = ServerAssociation(self)
        ul = UpperLayer(
            requestor=False,
            max_pdu_length=self._receive_cap,
            artim_timeout=self.settings.timeouts.artim,
            staging_size=limits.receive_staging,
        )
        return DicomProtocol(ul, assoc.on_primitive, on_connection_made=assoc.connection_made)

    def _tls_factory(self) -> DicomProtocol:
        """Like `_factory`, and counts a TLS handshake that never completes.

        The loop builds our protocol at accept time and calls connection_made only after a
        successful handshake; a failed or abandoned one is silent (asyncio logs SSL errors
        only in debug mode). A protocol freed without connection_made is such a handshake.
        """
        protocol = self._factory()
        weakref.finalize(protocol, self._handshake_ended, protocol.handshake_done)
        return protocol

    def _handshake_ended(self, done: list[bool]) -> None:
        if not done[0]:
            self.stats.handshake_failures += 1
            log.info("a TLS handshake failed or was abandoned (%d so far)",
                     self.stats.handshake_failures)
            self.notify(HandshakeFailed(count=self.stats.handshake_failures))

    async def listen(
        self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> tuple[str, int]:
        """Open a listener; returns the bound address (port 0 picks a free port)."""
        if tls is not None and tls.verify_mode != ssl.CERT_REQUIRED:
            raise ConfigurationError("a TLS listener must require client certificates")
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            self._factory if tls is None else self._tls_factory, host, port, ssl=tls,
            ssl_handshake_timeout=self.settings.timeouts.tls_handshake if tls else None,
            reuse_port=reuse_port or None, backlog=1024,
        )
        self._servers.append(server)
        sockname = server.sockets[0].getsockname()
        return sockname[0], sockname[1]

    @property
    def active(self) -> int:
        return len(self.stats.active)

    async def close(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting, wait for associations to end, then abort what is left."""
        self._closing = True
        for server in self._servers:
            server.close()
        if self.stats.active:
            self._idle.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), drain_timeout)
        for assoc in list(self.stats.active):
            assoc.abort()
            if assoc.protocol is not None:
                assoc.protocol.abort_transport()
        self.stats.active.clear()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await server.wait_closed()
        self._servers.clear()

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
