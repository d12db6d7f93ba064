"""The acceptor: a `Server` that accepts associations and runs async handlers.

One asyncio task per request (never a thread per association). The TLS handshake runs in
the loop's transport with a timeout, so a stalled client never holds up others. On
``close`` the server stops listening, lets associations finish up to a drain timeout, then
aborts what is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiodicom.aio.association import Association, AssociationInfo, IncomingData
from aiodicom.aio.events import (
    AssociationAccepted,
    AssociationEnded,
    AssociationRefused,
    HandshakeFailed,
    Observer,
    RequestCompleted,
    ServerEvent,
)
from aiodicom.aio.protocol import DicomProtocol
from aiodicom.aio.qr import (
    FindHandler,
    GetHandler,
    MoveDestination,
    MoveHandler,
    Operation,
    cancel_operation,
    run_query_retrieve,
)
from aiodicom.aio.requests import (
    Authorizer,
    EchoHandler,
    EchoRequest,
    StoreHandler,
    StoreRequest,
)
from aiodicom.aio.tls import PeerIdentity, ae_title_allowed
from aiodicom.aio.user_identity import IdentityVerifier
from aiodicom.core.dimse import (
    MESSAGE_TYPES,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CGetRQ,
    CMoveRQ,
    CStoreRQ,
    CStoreRSP,
    Message,
    Status,
    message_name,
)
from aiodicom.core.dimse._templates import echo_response_pdu
from aiodicom.core.negotiation import (
    AcceptorPolicy,
    conclude_as_acceptor,
    negotiate_as_acceptor,
    reject_calling_ae_not_recognized,
    reject_local_limit_exceeded,
    reject_no_reason,
)
from aiodicom.core.pdu import AAssociateAC, AAssociateRJ, AAssociateRQ
from aiodicom.core.primitives import AssociateIndication
from aiodicom.core.upper_layer import UpperLayer
from aiodicom.core.user_items import UserIdentityRQ
from aiodicom.errors import AssociationAborted, ConfigurationError, describe_reject
from aiodicom.settings import AssociationSettings

__all__ = ["RequestFilter", "Server", "ServerAssociation", "async_echo_success"]

log = logging.getLogger("aiodicom.server")

RequestFilter = Callable[[AssociationInfo, Message], Status | None]
"""Called for each request before its handler: a Status refuses it (e.g. 0x0124), None lets
it run. See `aiodicom.app.server.policy.make_request_filter`."""


async def async_echo_success(request: EchoRequest) -> Status:
    """The default C-ECHO handler: the Verification service always succeeds."""
    return Status.SUCCESS


@dataclass(slots=True)
class _Stats:
    accepted: int = 0
    rejected: int = 0
    aborted: int = 0
    released: int = 0
    handshake_failures: int = 0
    active: set[ServerAssociation] = field(default_factory=set)


class ServerAssociation(Association):
    """An association a peer requested from our `Server`."""

    def __init__(self, server: Server) -> None:
        super().__init__(server.settings)
        self.server = server
        self._tasks: set[asyncio.Task[None]] = set()
        self._window: asyncio.Semaphore | None = None
        self._releasing = False
        self.identity: Any = None
        self.peer: tuple[str, int] | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._started = asyncio.get_running_loop().time()
        self._released_cleanly = False
        self.operations: dict[int, Operation] = {}
        """Running C-FIND/GET/MOVE by message ID, for C-CANCEL-RQ (PS3.7 §9.3.2.3)."""

    def connection_made(self, protocol: DicomProtocol) -> None:
        # Counted here, not in the factory: a failed TLS handshake never reaches this point.
        self.protocol = protocol
        self.server.stats.active.add(self)
        peer = protocol.extra("peername")
        self.peer = (peer[0], peer[1]) if peer else None
        ssl_object = protocol.extra("ssl_object")
        if ssl_object is not None and self.server.identify is not None:
            self.identity = self.server.identify(ssl_object)
        self._watch()

    def _watch(self) -> None:
        """Abort a peer that stalls once established: PS3.8 runs no timer in Sta6, so a
        half-sent PDU or data set would hold the association forever. The limit is
        `Timeouts.dimse` while a data set is arriving, else `Timeouts.network`; time our own
        handlers take does not count."""
        self._watchdog = None
        protocol = self.protocol
        if protocol is None or self._ended:
            return
        timeouts = self.settings.timeouts
        limits = [timeouts.network] + ([timeouts.dimse] if self._incoming is not None else [])
        limit = min((t for t in limits if t is not None), default=None)
        if limit is None:
            return
        loop = asyncio.get_running_loop()
        idle = loop.time() - protocol.last_activity
        waiting_on_peer = (not self._tasks or self._incoming is not None) and not (
            protocol._reading_paused)  # paused: our handler is behind, not the peer
        if idle >= limit and waiting_on_peer and self.negotiated is not None:
            log.warning("association %d: nothing from %s for %.1f s, aborting",
                        self.id, self.peer, idle)
            self.abort()
            return
        step = min(t for t in (timeouts.network, timeouts.dimse) if t is not None)
        delay = min(limit - idle if idle < limit else limit, step)
        self._watchdog = loop.call_later(delay, self._watch)

    # -- establishment ----------------------------------------------------------------------

    def _on_associate_indication(self, primitive: AssociateIndication) -> None:
        rq = primitive.request
        server = self.server
        if server.authorize is None and (
            server.verify_identity is None or rq.user_information.user_identity_rq is None
        ):
            # Nothing to await (the usual case): answer now, without a task, so the AC goes
            # out in this callback and the first request finds no task in flight.
            info = self._request_info(rq)
            answer = self._check_request(rq)
            if answer is None:
                answer = self._identity_required(rq)
            self._respond(rq, info, answer, None, None)
            return
        self._spawn(self._answer_request(rq))

    def _request_info(self, rq: AAssociateRQ) -> AssociationInfo:
        return AssociationInfo(
            id=self.id,
            calling_ae_title=rq.calling_ae_title,
            called_ae_title=rq.called_ae_title,
            peer_address=self.peer,
            identity=self.identity,
        )

    def _check_request(self, rq: AAssociateRQ) -> AAssociateAC | AAssociateRJ | None:
        """The server's limits, then the certificate binding of the calling AE title."""
        answer = self.server.check_limits(self)
        return answer if answer is not None else self._check_binding(rq)

    async def _answer_request(self, rq: AAssociateRQ) -> None:
        server = self.server
        info = self._request_info(rq)
        answer = self._check_request(rq)
        if answer is None and server.authorize is not None:
            answer = await server.authorize(info, rq)
        identity_response: bytes | None = None
        user: str | None = None
        if answer is None:
            answer, identity_response, user = await self._check_user_identity(info, rq)
        self._respond(rq, info, answer, identity_response, user)

    def _respond(
        self,
        rq: AAssociateRQ,
        info: AssociationInfo,
        answer: AAssociateAC | AAssociateRJ | None,
        identity_response: bytes | None,
        user: str | None,
    ) -> None:
        """Negotiate unless already answered, then send the AC or RJ."""
        server = self.server
        if answer is None:
            answer = negotiate_as_acceptor(rq, server.policy,
                                           identity_response=identity_response)
        protocol = self.protocol
        if protocol is None or self._ended:
            return
        now = asyncio.get_running_loop().time()
        if isinstance(answer, AAssociateRJ):
            server.stats.rejected += 1
            log.info(
                "association %d from %s rejected: calling %r called %r result %d source %d "
                "reason %d",
                self.id, self.peer, rq.calling_ae_title, rq.called_ae_title,
                answer.result, answer.source, answer.reason,
            )
            protocol.ul.reject(answer, now)
            protocol.pump()
            server.notify(AssociationRefused(
                info=info, response=answer,
                why=describe_reject(answer.result, answer.source, answer.reason),
            ))
            return
        self.negotiated = conclude_as_acceptor(rq, answer)
        self.info = dataclasses.replace(info, negotiated=self.negotiated, user=user)
        self._window = asyncio.Semaphore(max(1, self.negotiated.max_operations_performed or 1))
        server.stats.accepted += 1
        log.debug("association %d from %s accepted (%r -> %r)", self.id, self.peer,
                  rq.calling_ae_title, rq.called_ae_title)
        protocol.ul.accept(answer)
        protocol.pump()
        server.notify(AssociationAccepted(info=self.info))

    def _check_binding(self, rq: AAssociateRQ) -> AAssociateRJ | None:
        """The calling AE title against the certificate (the rule is `tls.ae_title_allowed`)."""
        identity = self.identity
        if not isinstance(identity, PeerIdentity) or ae_title_allowed(
            identity, rq.calling_ae_title, require_binding=self.server.require_ae_binding
        ):
            return None
        if identity.ae_titles:
            why = f"(it names {', '.join(identity.ae_titles)})"
        else:
            why = "(it names no AE title and --require-ae-binding is set)"
        log.warning("association %d refused: calling AE %r is not bound to certificate %s %s",
                    self.id, rq.calling_ae_title, identity.subject, why)
        return reject_calling_ae_not_recognized()

    def _identity_required(self, rq: AAssociateRQ) -> AAssociateRJ | None:
        """A refusal if a user identity is required and the request carries none."""
        if rq.user_information.user_identity_rq is None and self.server.require_user_identity:
            log.warning("association %d from %s refused: calling AE %r sent no user "
                        "identity and one is required", self.id, self.peer, rq.calling_ae_title)
            return reject_no_reason()
        return None

    async def _check_user_identity(
        self, info: AssociationInfo, rq: AAssociateRQ
    ) -> tuple[AAssociateRJ | None, bytes | None, str | None]:
        """The verifier's verdict on the user identity sub-item (PS3.7 D.3.3.7), if any:
        (a rejection or None, the 0x59 server response, the verified user)."""
        server = self.server
        request: UserIdentityRQ | None = rq.user_information.user_identity_rq
        if request is None or server.verify_identity is None:
            return self._identity_required(rq), None, None
        try:
            verdict = await server.verify_identity(info, request)
        except Exception:
            log.exception("association %d: the user identity verifier failed", self.id)
            return reject_no_reason(), None, None
        if not verdict.accepted:
            log.warning("association %d from %s refused: user identity (type %d) from calling "
                        "AE %r: %s", self.id, self.peer, int(request.identity_type),
                        rq.calling_ae_title, verdict.why or "not accepted")
            return reject_no_reason(), None, None
        return None, verdict.server_response, verdict.user

    # -- requests -----------------------------------------------------------------------------

    def _dispatch_request(self, context_id: int, msg: Message, data: IncomingData | None) -> None:
        if self.negotiated is None or context_id not in self.negotiated.contexts:
            log.warning("association %d: request on unaccepted context %d, aborting",
                        self.id, context_id)
            self.abort()
            return
        if isinstance(msg, CCancelRQ):  # outside the operations window: it has no response
            cancel_operation(self, msg)
            return
        status = self._filter(msg)
        if status is not None:
            self._spawn(self._refuse_request(context_id, msg, data, status))
            return
        if (
            isinstance(msg, CEchoRQ)
            and self.server.echo_handler is async_echo_success
            and self._window is not None
            and all(task.done() for task in self._tasks)  # no earlier answer still going out
            and self._echo_now(context_id, msg)
        ):
            return
        self._spawn(self._run_request(context_id, msg, data))

    def _echo_now(self, context_id: int, msg: CEchoRQ) -> bool:
        """Answer a C-ECHO inline (the default handler always succeeds): no task per echo."""
        if not self.send_pdu_now(
            echo_response_pdu(context_id, msg.message_id, msg.affected_sop_class_uid)
        ):
            return False
        if self.server.observer is not None and self.info is not None:
            self.server.notify(RequestCompleted(
                info=self.info, service="C-ECHO", sop_class_uid=msg.affected_sop_class_uid,
                sop_instance_uid=None, status=0, bytes=0, duration=0.0,
            ))
        return True

    def _filter(self, msg: Message) -> Status | None:
        check = self.server.request_filter
        if check is None or self.info is None:
            return None
        try:
            return check(self.info, msg)
        except Exception:  # fail closed
            log.exception("association %d: the request filter failed", self.id)
            return Status.NOT_AUTHORIZED

    async def _refuse_request(self, context_id: int, msg: Message, data: IncomingData | None,
                              status: Status) -> None:
        """Answer a request the request filter refused; its data set is read and dropped."""
        assert self.info is not None
        with contextlib.suppress(AssociationAborted):
            if data is not None:
                await data.discard()
            response = _refusal(msg, status)
            if response is not None:
                await self.send_message(context_id, response)
        self.server.notify(RequestCompleted(
            info=self.info, service=message_name(msg).removesuffix("-RQ"),
            sop_class_uid=getattr(msg, "affected_sop_class_uid", "") or "",
            sop_instance_uid=getattr(msg, "affected_sop_instance_uid", None),
            status=int(status), bytes=data.total if data is not None else 0, duration=0.0,
        ))

    async def _run_request(self, context_id: int, msg: Message, data: IncomingData | None) -> None:
        assert self._window is not None and self.info is not None and self.negotiated is not None
        async with self._window:
            loop = asyncio.get_running_loop()
            started = loop.time()
            response: Message | None
            body: bytes | None = None
            if isinstance(msg, CEchoRQ):
                status = await self._call(self.server.echo_handler, EchoRequest(
                    association=self.info, command=msg))
                response = CEchoRSP(
                    message_id_being_responded_to=msg.message_id,
                    affected_sop_class_uid=msg.affected_sop_class_uid,
                    status=status,
                )
            elif isinstance(msg, CStoreRQ) and data is not None:
                response = await self._run_store(context_id, msg, data)
            elif isinstance(msg, CFindRQ | CGetRQ | CMoveRQ):
                response, body = await run_query_retrieve(self, context_id, msg, data)
            else:
                log.warning("association %d: %s is not supported here", self.id,
                            type(msg).__name__)
                if data is not None:
                    await data.discard()
                response = _refusal(msg, Status(0x0211))  # unrecognized operation
            if response is None:
                return
            with contextlib.suppress(AssociationAborted):
                await self.send_message(context_id, response, body)
            self.server.notify(RequestCompleted(
                info=self.info,
                service=message_name(msg).removesuffix("-RQ"),
                sop_class_uid=getattr(msg, "affected_sop_class_uid", "") or "",
                sop_instance_uid=getattr(msg, "affected_sop_instance_uid", None),
                status=int(getattr(response, "status", 0)),
                bytes=data.total if data is not None else 0,
                duration=loop.time() - started,
            ))

    async def _run_store(self, context_id: int, msg: CStoreRQ, data: IncomingData) -> Message:
        assert self.info is not None and self.negotiated is not None
        ts = self.negotiated.contexts[context_id].transfer_syntax
        request = StoreRequest(
            association=self.info, command=msg, context_id=context_id,
            transfer_syntax=ts, data=data,
        )
        handler = self.server.store_handler
        status = Status.SOP_CLASS_NOT_SUPPORTED if handler is None else await self._call(
            handler, request)
        if not data.complete or not self._ended:
            with contextlib.suppress(AssociationAborted):
                await data.discard()
        return CStoreRSP(
            message_id_being_responded_to=msg.message_id,
            affected_sop_class_uid=msg.affected_sop_class_uid,
            affected_sop_instance_uid=msg.affected_sop_instance_uid,
            status=status,
        )

    async def _call(self, handler: Any, request: Any) -> Status:
        """Run a handler; an exception becomes a failure status and one logged traceback."""
        try:
            status = await handler(request)
        except AssociationAborted:
            raise
        except Exception:
            log.exception("association %d: %s handler failed", self.id, type(request).__name__)
            return Status.PROCESSING_FAILURE if isinstance(request, EchoRequest) else Status(0xC000)
        return Status(int(status))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None and not isinstance(
            exc, AssociationAborted
        ):
            log.error("association %d: task failed", self.id, exc_info=exc)
            self.abort()
        if self._releasing and not self._tasks:
            self._finish_release()

    # -- release and end --------------------------------------------------------------------------

    def _on_release_indication(self) -> None:
        if self._incoming is not None:
            # P-DATA after A-RELEASE-RQ is a protocol error (Sta8), so the rest of this data
            # set can never come: waiting for it would hold the association forever.
            log.warning("association %d: A-RELEASE-RQ in the middle of a data set, aborting",
                        self.id)
            self.abort()
            return
        self._releasing = True
        if not self._tasks:
            self._finish_release()

    def _finish_release(self) -> None:
        protocol = self.protocol
        if protocol is None or self._ended:
            return
        self._releasing = False
        protocol.ul.release_response(asyncio.get_running_loop().time())
        protocol.pump()
        self.server.stats.released += 1
        self._released_cleanly = True

    def _on_end(self, exc: AssociationAborted) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for task in list(self._tasks):
            task.cancel()
        server = self.server
        if not self._released_cleanly:
            server.stats.aborted += 1
        protocol = self.protocol
        server.notify(AssociationEnded(
            info=self.info, peer_address=self.peer, aborted=not self._released_cleanly,
            reason="released" if self._released_cleanly else str(exc),
            bytes_received=protocol.bytes_received if protocol is not None else 0,
            duration=asyncio.get_running_loop().time() - self._started,
        ))
        server.forget(self)


def _refusal(msg: Message, status: Status) -> Message | None:
    """The response type matching ``msg`` (PS3.7), carrying only a refusal status.

    None for C-CANCEL-RQ, which has no response.
    """
    rsp_cls = MESSAGE_TYPES.get(type(msg).COMMAND_FIELD | 0x8000)
    if rsp_cls is None or rsp_cls is type(msg):
        return None
    names = {f.name for f in dataclasses.fields(rsp_cls)}
    kwargs: dict[str, Any] = {
        "message_id_being_responded_to": getattr(msg, "message_id", 0),
        "status": status,
        "affected_sop_class_uid": getattr(msg, "affected_sop_class_uid", None)
        or getattr(msg, "requested_sop_class_uid", None),
    }
    instance = getattr(msg, "affected_sop_instance_uid", None) or getattr(
        msg, "requested_sop_instance_uid", None)
    if "affected_sop_instance_uid" in names and instance is not None:
        kwargs["affected_sop_instance_uid"] = instance
    factory: Callable[..., Message] = rsp_cls
    return factory(**kwargs)


class Server:
    """A DICOM acceptor. Start listeners with `listen`, stop with `close` (drains)."""

    def __init__(
        self,
        *,
        settings: AssociationSettings | None = None,
        policy: AcceptorPolicy,
        echo: EchoHandler | None = async_echo_success,
        store: StoreHandler | None = None,
        authorize: Authorizer | None = None,
        identify: Callable[[Any], Any] | None = None,
        require_ae_binding: bool = False,
        observer: Observer | None = None,
        request_filter: RequestFilter | None = None,
        verify_identity: IdentityVerifier | None = None,
        require_user_identity: bool = False,
        find: FindHandler | None = None,
        get: GetHandler | None = None,
        move: MoveHandler | None = None,
        move_destinations: Mapping[str, MoveDestination] | None = None,
    ) -> None:
        if require_user_identity and verify_identity is None:
            raise ConfigurationError("require_user_identity needs verify_identity (a verifier)")
        self.settings = settings or AssociationSettings()
        self.policy = policy
        self.echo_handler = echo or async_echo_success
        self.store_handler = store
        self.authorize = authorize
        self.identify = identify
        self.require_ae_binding = require_ae_binding
        self.observer = observer
        # Receive what we advertise: the policy's Maximum Length (0 = "no limit", which
        # still stops at the hard cap), never less than the settings' own receive cap.
        limits = self.settings.limits
        advertised = policy.max_pdu_length or limits.hard_max_pdu_length
        self._receive_cap = max(limits.receive_cap, min(advertised, limits.hard_max_pdu_length))
        self.request_filter = request_filter
        self.verify_identity = verify_identity
        self.require_user_identity = require_user_identity
        self.find_handler = find
        self.get_handler = get
        self.move_handler = move
        self.move_destinations: Mapping[str, MoveDestination] = dict(move_destinations or {})
        """C-MOVE destination AE title -> (host, port[, TLS context]); others get 0xA801."""
        self.stats = _Stats()
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
