"""The acceptor: a `Server` that accepts associations and runs async handlers.

One asyncio task per request (never a thread per association). The TLS handshake runs in
the loop's transport with a timeout, so a stalled client never holds up others. On
``close`` the server stops listening, lets associations finish up to a drain timeout, then
aborts what is left.

A server is three groups of options: `Handlers` (what each DIMSE service does),
`Admission` (who may associate and on what terms) and `AssociationSettings` (limits and
timeouts), plus an optional observer, the C-MOVE destinations and `ConnectionLimits`.

Unauthenticated work is capped (`aiodicom.aio._connection_caps`): a TLS listener accepts
connections itself and starts each handshake only if the peer address and the server are
under their pending-handshake caps; connections waiting for their A-ASSOCIATE-RQ are capped
the same way, and that PDU is bounded (`ConnectionLimits.max_associate_length`).

With `ProxyProtocol` (behind HAProxy, ``send-proxy-v2``) both kinds of listener accept
connections here, take only the proxy's, read its PROXY v2 header and then go on as above
with the client's address from it (`aiodicom.aio._proxy`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import ssl
from collections.abc import Mapping

from aiodicom.aio._connection_caps import ConnectionLimits, PendingGate
from aiodicom.aio._proxy import ProxyProtocol, ProxyStats, receive_header, refuse_source
from aiodicom.aio.admission import Admission
from aiodicom.aio.events import HandshakeFailed, Observer, ServerEvent, wants_requests
from aiodicom.aio.protocol import DicomProtocol
from aiodicom.aio.qr_service import MoveDestination, QRService
from aiodicom.aio.requests import Handlers
from aiodicom.aio.server_association import ServerAssociation, ServerStats
from aiodicom.core.negotiation import AcceptorPolicy, reject_local_limit_exceeded
from aiodicom.core.pdu import AAssociateRJ
from aiodicom.core.upper_layer import UpperLayer
from aiodicom.errors import ConfigurationError
from aiodicom.settings import AssociationSettings

__all__ = ["Admission", "ConnectionLimits", "Handlers", "ProxyProtocol", "Server",
           "ServerAssociation"]

log = logging.getLogger("aiodicom.server")


class Server:
    """A DICOM acceptor. Start listeners with `listen`, stop with `close` (drains).

    ``admission`` may be a bare `AcceptorPolicy` when negotiation is the only rule.
    ``move_destinations`` maps a C-MOVE destination AE title to how to reach it
    (`aiodicom.aio.client.RemoteAE`); a C-MOVE to any other title gets 0xA801.
    ``observer`` gets `aiodicom.aio.events` notifications; whether it wants one per request
    (``wants_requests``) is read per request.
    """

    def __init__(
        self,
        *,
        admission: Admission | AcceptorPolicy,
        handlers: Handlers | None = None,
        settings: AssociationSettings | None = None,
        observer: Observer | None = None,
        move_destinations: Mapping[str, MoveDestination] | None = None,
        connection_limits: ConnectionLimits | None = None,
        proxy_protocol: ProxyProtocol | None = None,
    ) -> None:
        if isinstance(admission, AcceptorPolicy):
            admission = Admission(policy=admission)
        self.admission = admission
        self.handlers = handlers or Handlers()
        self.settings = settings or AssociationSettings()
        self.observer = observer
        destinations = dict(move_destinations or {})
        for title, destination in destinations.items():
            if not callable(getattr(destination, "open", None)):
                raise ConfigurationError(
                    f"move_destinations[{title!r}] is {destination!r}: give an object that "
                    "opens the sub-association, e.g. aiodicom.aio.client.RemoteAE(host, port)")
        self.qr = QRService(
            find=self.handlers.find, get=self.handlers.get, move=self.handlers.move,
            destinations=destinations, settings=self.settings,
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
        caps = self.connection_limits = connection_limits or ConnectionLimits()
        self.handshakes = PendingGate(total=caps.max_pending_handshakes,
                                      per_peer=caps.max_pending_handshakes_per_peer,
                                      what="TLS handshakes")
        self.pre_association = PendingGate(total=caps.max_pre_association,
                                           per_peer=caps.max_pre_association_per_peer,
                                           what="connections awaiting A-ASSOCIATE-RQ")
        self._listeners: list[socket.socket] = []
        self.proxy = proxy_protocol
        self.proxy_stats = ProxyStats()
        pending = proxy_protocol.max_pending if proxy_protocol is not None else 1
        self.proxy_headers = PendingGate(total=pending, per_peer=pending, what="PROXY headers")
        self._accepting: set[asyncio.Task[None]] = set()
        self._handshaking: set[asyncio.Task[None]] = set()

    def check_limits(self, assoc: ServerAssociation) -> AAssociateRJ | None:
        self.pre_association.release(assoc)  # its A-ASSOCIATE-RQ arrived whole
        if self._closing:
            return reject_local_limit_exceeded()
        if len(self.stats.active) > self.settings.limits.max_associations:
            log.warning("association %d rejected: %d associations is the limit",
                        assoc.id, self.settings.limits.max_associations)
            return reject_local_limit_exceeded()
        return None

    @property
    def observer(self) -> Observer | None:
        return self._observer

    @observer.setter
    def observer(self, observer: Observer | None) -> None:
        self._observer = observer

    @property
    def wants_requests(self) -> bool:
        """True when the observer consumes `RequestCompleted` (else none is built); read per
        request: a log observer's follows its logger's level at run time."""
        return wants_requests(self._observer)

    def notify(self, event: ServerEvent) -> None:
        observer = self._observer
        if observer is not None:
            try:
                observer(event)
            except Exception:
                log.exception("observer failed on %s", type(event).__name__)

    def forget(self, assoc: ServerAssociation) -> None:
        self.pre_association.release(assoc)
        self.stats.active.discard(assoc)
        if not self.stats.active:
            self._idle.set()

    def _factory(self, peer: tuple[str, int] | None = None) -> DicomProtocol:
        limits = self.settings.limits
        assoc = ServerAssociation(self)
        ul = UpperLayer(
            requestor=False,
            max_pdu_length=self._receive_cap,
            artim_timeout=self.settings.timeouts.artim,
            staging_size=limits.receive_staging,
            max_associate_length=self.connection_limits.max_associate_length,
        )
        return DicomProtocol(ul, assoc.on_primitive,
                             on_connection_made=functools.partial(self._connected, assoc, peer))

    def _connected(self, assoc: ServerAssociation, peer_address: tuple[str, int] | None,
                   protocol: DicomProtocol) -> None:
        """Count the connection as awaiting its A-ASSOCIATE-RQ (per address, server-wide).

        ``peer_address`` is the client's address from a PROXY header (the socket's own
        peer is then the proxy)."""
        assoc.connection_made(protocol)
        if peer_address is not None:
            assoc.peer = peer_address
        peer = assoc.peer[0] if assoc.peer else ""
        if not self.pre_association.admit(assoc, peer, protocol.abort_transport):
            protocol.abort_transport()

    def _handshake_ended(self) -> None:
        self.stats.handshake_failures += 1
        log.info("a TLS handshake failed or was abandoned (%d so far)",
                 self.stats.handshake_failures)
        self.notify(HandshakeFailed(count=self.stats.handshake_failures))

    async def _accept_tls(self, sock: socket.socket, tls: ssl.SSLContext | None) -> None:
        """Accept connections; start a handshake for each the caps allow (see module doc).

        The loop's own TLS listener would start a handshake for every connection with no
        way to refuse one, so a TLS listener accepts here and hands each admitted socket to
        ``loop.connect_accepted_socket`` (asyncio and uvloop alike).
        """
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, addr = await loop.sock_accept(sock)
            except OSError as exc:  # EMFILE and kin: back off, keep listening
                log.warning("accept on the TLS listener failed: %s", exc)
                await asyncio.sleep(0.1)
                continue
            peer = str(addr[0]) if isinstance(addr, tuple) else ""
            drop = functools.partial(_shutdown, conn)
            if self.proxy is not None:
                self._accept_proxied(conn, addr, drop, tls)
                await asyncio.sleep(0)
                continue
            assert tls is not None
            if not self.handshakes.admit(conn, peer, drop):
                conn.close()
                self._handshake_ended()
                continue
            task = loop.create_task(self._handshake(conn, tls))
            self._handshaking.add(task)
            task.add_done_callback(self._handshaking.discard)
            await asyncio.sleep(0)  # let the handshake start before the next accept

    def _accept_proxied(self, conn: socket.socket, addr: tuple[str, int],
                        drop: functools.partial[None], tls: ssl.SSLContext | None) -> None:
        """Only the proxy may connect; its header is read in a task of its own."""
        assert self.proxy is not None
        if not self.proxy.allows(str(addr[0])):
            refuse_source(self.proxy_stats, str(addr[0]))
            _shutdown(conn)
            conn.close()
            return
        self.proxy_headers.admit(conn, "", drop)  # per_peer == total: only evicts the oldest
        task = asyncio.get_running_loop().create_task(self._relay(conn, (addr[0], addr[1]), tls))
        self._handshaking.add(task)
        task.add_done_callback(self._handshaking.discard)

    async def _relay(self, conn: socket.socket, source: tuple[str, int],
                     tls: ssl.SSLContext | None) -> None:
        """Read the PROXY header, then hand the connection on as the client's (module doc)."""
        assert self.proxy is not None
        try:
            relayed = await receive_header(conn, source, self.proxy, self.proxy_stats)
        finally:
            self.proxy_headers.release(conn)
        if relayed is None:
            conn.close()
        elif tls is None:
            try:
                await asyncio.get_running_loop().connect_accepted_socket(
                    functools.partial(self._factory, relayed.peer), conn)
            except OSError as exc:  # the client went away meanwhile
                log.debug("relayed connection from %s lost: %r", relayed.peer, exc)
                conn.close()
        elif not self.handshakes.admit(conn, relayed.peer[0],
                                       functools.partial(_shutdown, conn)):
            conn.close()
            self._handshake_ended()
        else:
            await self._handshake(conn, tls, relayed.peer)

    async def _handshake(self, conn: socket.socket, tls: ssl.SSLContext,
                         peer: tuple[str, int] | None = None) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.connect_accepted_socket(
                functools.partial(self._factory, peer), conn, ssl=tls,
                ssl_handshake_timeout=self.settings.timeouts.tls_handshake,
            )
        except Exception as exc:  # ssl.SSLError, resets, the timeout: the loop closed the socket
            log.debug("TLS handshake failed: %r", exc)
            self._handshake_ended()
        finally:
            self.handshakes.release(conn)

    async def listen(
        self, host: str = "127.0.0.1", port: int = 0, *, tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> tuple[str, int]:
        """Open a listener; returns the bound address (port 0 picks a free port)."""
        if tls is not None and tls.verify_mode != ssl.CERT_REQUIRED:
            raise ConfigurationError("a TLS listener must require client certificates")
        loop = asyncio.get_running_loop()
        if tls is not None or self.proxy is not None:
            sock = _listening_socket(host, port, reuse_port=reuse_port)
            self._listeners.append(sock)

            task = loop.create_task(self._accept_tls(sock, tls))
            self._accepting.add(task)
            task.add_done_callback(self._accepting.discard)
            sockname = sock.getsockname()
            return sockname[0], sockname[1]
        server = await loop.create_server(
            self._factory, host, port, reuse_port=reuse_port or None, backlog=1024,
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
        for task in list(self._accepting):
            task.cancel()
        for sock in self._listeners:
            sock.close()
        self._listeners.clear()
        self.handshakes.drop_all()  # a handshake in progress sees EOF and ends at once
        self.proxy_headers.drop_all()
        pending = [*self._accepting, *self._handshaking]
        if pending:
            await asyncio.wait(pending, timeout=drain_timeout)
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


def _shutdown(conn: socket.socket) -> None:
    """End a pending handshake: its reads see EOF and the loop closes the socket."""
    with contextlib.suppress(OSError):
        conn.shutdown(socket.SHUT_RDWR)


def _listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """A bound, listening, non-blocking TCP socket, as ``loop.create_server`` would make."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigurationError(f"cannot listen on {host!r}: {exc}") from exc
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
