"""An association a peer requested from our `Server`: admission, dispatch, watchdog, release.

Requests are dispatched as they complete: each runs in its own task inside the negotiated
asynchronous operations window (PS3.7 D.3.3.3), except a C-ECHO answered by the default
handler, which is answered inline. C-FIND/GET/MOVE go to the server's `QRService`; their
C-CANCEL-RQ is handled outside the window because it has no response.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiodicom.aio import _setup_memo
from aiodicom.aio._response_templates import store_response_pdu
from aiodicom.aio.admission import Admission, Decision
from aiodicom.aio.association import Association, AssociationInfo, IncomingData
from aiodicom.aio.commitment import serve_commitment
from aiodicom.aio.events import (
    AssociationAccepted,
    AssociationEnded,
    AssociationRefused,
    RequestCompleted,
    ServerEvent,
)
from aiodicom.aio.incoming import _Responses
from aiodicom.aio.protocol import DicomProtocol
from aiodicom.aio.qr_service import Operation, QRService
from aiodicom.aio.requests import (
    EchoRequest,
    Handlers,
    StoreRequest,
    async_echo_success,
    run_handler,
)
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
    NActionRQ,
    Status,
    message_name,
)
from aiodicom.core.dimse._templates import echo_response_pdu
from aiodicom.core.pdu import AAssociateRJ, AAssociateRQ
from aiodicom.core.primitives import AssociateIndication
from aiodicom.errors import AbortSource, AssociationAborted, describe_reject
from aiodicom.settings import AssociationSettings

__all__ = ["STRAY_DATASET_LIMIT", "AcceptingServer", "ServerAssociation", "ServerStats"]

STRAY_DATASET_LIMIT = 64 * 1024
"""Largest data set we read and drop after a C-ECHO-RQ or C-CANCEL-RQ announcing one (they
carry none); past it the association is aborted."""

log = logging.getLogger("aiodicom.server")


@dataclass(slots=True)
class ServerStats:
    """Counts since the server started, and the associations alive now."""

    accepted: int = 0
    rejected: int = 0
    aborted: int = 0
    released: int = 0
    handshake_failures: int = 0
    active: set[ServerAssociation] = field(default_factory=set)


class AcceptingServer(Protocol):
    """What an association needs of the server that accepted it (`aiodicom.aio.Server`)."""

    @property
    def settings(self) -> AssociationSettings: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def handlers(self) -> Handlers: ...

    @property
    def qr(self) -> QRService: ...

    @property
    def stats(self) -> ServerStats: ...

    @property
    def wants_requests(self) -> bool:
        """Whether to build `RequestCompleted` at all (the observer consumes it)."""

    def check_limits(self, assoc: ServerAssociation) -> AAssociateRJ | None: ...

    def notify(self, event: ServerEvent) -> None: ...

    def forget(self, assoc: ServerAssociation) -> None: ...


class ServerAssociation(Association):
    """An association a peer requested from our `Server`."""

    def __init__(self, server: AcceptingServer) -> None:
        super().__init__(server.settings)
        self.server = server
        self._tasks: set[asyncio.Task[None]] = set()
        self._window: asyncio.Semaphore | None = None
        self._releasing = False
        self.identity: Any = None
        self.peer: tuple[str, int] | None = None
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
        identify = self.server.admission.identify
        if ssl_object is not None and identify is not None:
            self.identity = identify(ssl_object)

    def _watch(self) -> None:
        """Abort a peer that stalls once established: PS3.8 runs no timer in Sta6, so a
        half-sent PDU or data set would hold the association forever. The limit is
        `Timeouts.dimse` while a data set is arriving, else `Timeouts.network`; time our own
        handlers take does not count. Started once the AC is sent (before it, ARTIM guards
        and the watch could abort nothing); it runs on the protocol's one timer, ARTIM's."""
        protocol = self.protocol
        if protocol is None or self._ended:
            return
        timeouts = self.settings.timeouts
        step = _shorter(timeouts.network, timeouts.dimse)
        limit = timeouts.network if self._incoming is None else step
        if limit is None or step is None:
            return
        now = protocol._loop.time()
        idle = now - protocol.last_activity
        waiting_on_peer = (not self._tasks or self._incoming is not None) and not (
            protocol._reading_paused)  # paused: our handler is behind, not the peer
        if idle >= limit and waiting_on_peer and self.negotiated is not None:
            log.warning("association %d: nothing from %s for %.1f s, aborting",
                        self.id, self.peer, idle)
            self.abort()
            return
        delay = min(limit - idle if idle < limit else limit, step)
        protocol.call_watch_at(now + delay, self._watch)

    # -- establishment ----------------------------------------------------------------------

    def _on_associate_indication(self, primitive: AssociateIndication) -> None:
        rq = primitive.request
        admission = self.server.admission
        info = AssociationInfo(
            id=self.id,
            calling_ae_title=rq.calling_ae_title,
            called_ae_title=rq.called_ae_title,
            peer_address=self.peer,
            identity=self.identity,
        )
        refusal = self.server.check_limits(self)
        if admission.needs_await(rq):
            self._spawn(self._decide(rq, info, refusal))
        else:
            # Nothing to await (the usual case): answer now, without a task, so the AC goes
            # out in this callback and the first request finds no task in flight.
            self._apply(rq, info, admission.decide_now(info, rq, refusal))

    async def _decide(self, rq: AAssociateRQ, info: AssociationInfo,
                      refusal: AAssociateRJ | None) -> None:
        self._apply(rq, info, await self.server.admission.decide(info, rq, refusal))

    def _apply(self, rq: AAssociateRQ, info: AssociationInfo, decision: Decision) -> None:
        """Send the AC or RJ the admission decided, and tell the observer."""
        protocol = self.protocol
        if protocol is None or self._ended:
            return
        server = self.server
        answer = decision.answer
        if isinstance(answer, AAssociateRJ):
            server.stats.rejected += 1
            log.info(
                "association %d from %s rejected: calling %r called %r result %d source %d "
                "reason %d",
                self.id, self.peer, rq.calling_ae_title, rq.called_ae_title,
                answer.result, answer.source, answer.reason,
            )
            protocol.reject(answer)
            server.notify(AssociationRefused(
                info=info, response=answer,
                why=describe_reject(answer.result, answer.source, answer.reason),
            ))
            return
        # The AC as sent ("no limit" becomes the hard cap we really receive), its bytes and
        # the negotiated terms: memoized for a repeated RQ (aio/_setup_memo.py).
        setup = _setup_memo.accepted(rq, answer, self.settings.limits.hard_max_pdu_length)
        self.negotiated = setup.negotiated
        self.info = AssociationInfo(  # direct: dataclasses.replace costs ~4x this
            id=info.id, calling_ae_title=info.calling_ae_title,
            called_ae_title=info.called_ae_title, peer_address=info.peer_address,
            identity=info.identity, negotiated=self.negotiated, user=decision.user)
        server.stats.accepted += 1
        log.debug("association %d from %s accepted (%r -> %r)", self.id, self.peer,
                  rq.calling_ae_title, rq.called_ae_title)
        protocol.accept(setup.answer, setup.encoded)
        self._watch()
        server.notify(AssociationAccepted(info=self.info))

    # -- requests -----------------------------------------------------------------------------

    def _dispatch_request(self, context_id: int, msg: Message, data: IncomingData | None) -> None:
        if self.negotiated is None or context_id not in self.negotiated.contexts:
            log.warning("association %d: request on unaccepted context %d, aborting",
                        self.id, context_id)
            self.abort()
            return
        if data is not None and isinstance(msg, _NO_DATASET):
            # Neither carries a data set (PS3.7 9.3.2.3, 9.3.5): read and drop a stray one,
            # bounded, so it never pins the receive buffer while we answer.
            self._spawn(self._drop_stray_dataset(msg, data))
            data = None
        if isinstance(msg, CCancelRQ):  # outside the operations window: it has no response
            QRService.cancel(self, msg)
            return
        status = self._check_context(context_id, msg)
        if status is None:
            status = self._filter(msg)
        if status is not None:
            self._spawn(self._refuse_request(context_id, msg, data, status))
            return
        if (
            isinstance(msg, CEchoRQ)
            and self.server.handlers.echo is async_echo_success
            and (not self._tasks or all(task.done() for task in self._tasks))  # none going out
            and self._echo_now(context_id, msg)
        ):
            return
        self._spawn(self._run_request(context_id, msg, data))

    def _check_context(self, context_id: int, msg: Message) -> Status | None:
        """The one rule for "may this request use this context": its SOP class must be the
        context's abstract syntax (else 0x0122, SOP class not supported) and we must hold
        the SCP role on it (else 0x0124, not authorized; PS3.7 D.3.3.4). The access policy
        grants services by SOP class at negotiation, so this keeps a request inside them."""
        assert self.negotiated is not None
        ctx = self.negotiated.contexts[context_id]
        sop_class = getattr(msg, "affected_sop_class_uid", None) or getattr(
            msg, "requested_sop_class_uid", None)
        if sop_class is not None and sop_class != ctx.abstract_syntax:
            log.warning("association %d: %s of SOP class %s on context %d (%s): refused",
                        self.id, message_name(msg), sop_class, context_id, ctx.abstract_syntax)
            return Status.SOP_CLASS_NOT_SUPPORTED
        if not ctx.scp_role:
            log.warning("association %d: %s on context %d, where we are not the SCP: refused",
                        self.id, message_name(msg), context_id)
            return Status.NOT_AUTHORIZED
        return None

    async def _drop_stray_dataset(self, msg: Message, data: IncomingData) -> None:
        async for _batch in data.chunks():  # dropped as it arrives: nothing is kept
            if data.total > STRAY_DATASET_LIMIT:
                log.warning("association %d: %s carried a data set over %d bytes, aborting",
                            self.id, message_name(msg), STRAY_DATASET_LIMIT)
                self.abort()
                return

    def _echo_now(self, context_id: int, msg: CEchoRQ) -> bool:
        """Answer a C-ECHO inline (the default handler always succeeds): no task per echo."""
        if not self.send_pdu_now(
            echo_response_pdu(context_id, msg.message_id, msg.affected_sop_class_uid)
        ):
            return False
        if self.server.wants_requests and self.info is not None:
            self.server.notify(RequestCompleted(
                info=self.info, service="C-ECHO", sop_class_uid=msg.affected_sop_class_uid,
                sop_instance_uid=None, status=0, bytes=0, duration=0.0,
            ))
        return True

    def _filter(self, msg: Message) -> Status | None:
        check = self.server.admission.request_filter
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
        if self.server.wants_requests:
            self.server.notify(RequestCompleted(
                info=self.info, service=message_name(msg).removesuffix("-RQ"),
                sop_class_uid=getattr(msg, "affected_sop_class_uid", "") or "",
                sop_instance_uid=getattr(msg, "affected_sop_instance_uid", None),
                status=int(status), bytes=data.total if data is not None else 0, duration=0.0,
            ))

    async def _run_request(self, context_id: int, msg: Message, data: IncomingData | None) -> None:
        assert self.info is not None and self.negotiated is not None
        window = self._window
        if window is None:  # made on the first request that needs it (an echo never does)
            window = self._window = asyncio.Semaphore(
                max(1, self.negotiated.max_operations_performed or 1))
        async with window:
            wants = self.server.wants_requests  # else no RequestCompleted, no clock read
            started = asyncio.get_running_loop().time() if wants else 0.0
            response: Message | None
            body: bytes | None = None
            then: Callable[[], Any] | None = None
            if isinstance(msg, CEchoRQ):
                status = Status(int(await run_handler(
                    self.server.handlers.echo(EchoRequest(association=self.info, command=msg)),
                    failure=Status.PROCESSING_FAILURE, what="C-ECHO", association_id=self.id)))
                response = CEchoRSP(
                    message_id_being_responded_to=msg.message_id,
                    affected_sop_class_uid=msg.affected_sop_class_uid,
                    status=status,
                )
            elif isinstance(msg, CStoreRQ) and data is not None:
                response = await self._run_store(context_id, msg, data)
            elif isinstance(msg, CFindRQ | CGetRQ | CMoveRQ):
                response, body = await self.server.qr.perform(self, context_id, msg, data)
            elif isinstance(msg, NActionRQ):  # storage commitment (PS3.4 J): report after
                response, then = await serve_commitment(
                    self, context_id, msg, data, self.server.handlers.commit, run_handler)
            else:
                log.warning("association %d: %s is not supported here", self.id,
                            type(msg).__name__)
                if data is not None:
                    await data.discard()
                response = _refusal(msg, Status.UNRECOGNIZED_OPERATION)
            if response is None:
                return
            pdu = None
            if body is None and isinstance(response, CStoreRSP) and (
                    response.affected_sop_instance_uid) and (
                    # the template holds only IDs, status and UIDs: anything else the general way
                    response.error_comment is None and response.error_id is None
                    and response.offending_element is None and not response.has_dataset):
                # the whole P-DATA-TF from a template (aio/_response_templates.py), sent now
                pdu = store_response_pdu(
                    context_id, response.message_id_being_responded_to,
                    response.affected_sop_class_uid or "", response.affected_sop_instance_uid,
                    int(response.status), self.negotiated.peer_max_pdu_length)
            with contextlib.suppress(AssociationAborted):
                if pdu is None or not self.send_pdu_now(pdu):  # busy or gone: the general way
                    await self.send_message(context_id, response, body)
                elif (protocol := self.protocol) is not None:
                    # as send_message: while the peer does not read, the operation keeps its
                    # window slot, so no further request is taken on and nothing piles up
                    await protocol.drain()
            if wants:
                self.server.notify(RequestCompleted(
                    info=self.info,
                    service=message_name(msg).removesuffix("-RQ"),
                    sop_class_uid=getattr(msg, "affected_sop_class_uid", "") or "",
                    sop_instance_uid=getattr(msg, "affected_sop_instance_uid", None),
                    status=int(getattr(response, "status", 0)),
                    bytes=data.total if data is not None else 0,
                    duration=asyncio.get_running_loop().time() - started,
                ))
            if then is not None and self.is_established and not self._releasing:
                self._spawn(then())  # outside the window: it waits for the peer's answer

    async def _run_store(self, context_id: int, msg: CStoreRQ, data: IncomingData) -> Message:
        assert self.info is not None and self.negotiated is not None
        ts = self.negotiated.contexts[context_id].transfer_syntax
        request = StoreRequest(
            association=self.info, command=msg, context_id=context_id,
            transfer_syntax=ts, data=data,
        )
        handler = self.server.handlers.store
        status = Status.SOP_CLASS_NOT_SUPPORTED
        if handler is not None:
            status = Status(int(await run_handler(
                handler(request), failure=Status.CANNOT_UNDERSTAND, what="C-STORE",
                association_id=self.id)))
        if not data.complete or not self._ended:
            with contextlib.suppress(AssociationAborted):
                await data.discard()
        return CStoreRSP(
            message_id_being_responded_to=msg.message_id,
            affected_sop_class_uid=msg.affected_sop_class_uid,
            affected_sop_instance_uid=msg.affected_sop_instance_uid,
            status=status,
        )

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
        # The peer may send no P-DATA after its A-RELEASE-RQ (PS3.8 Sta7): a request we sent
        # it (a storage commitment report) will never be answered.
        for queue in self._pending.values():
            queue.put(_released_before_answer())
        if not self._tasks:
            self._finish_release()

    def _expect_responses(self, message_id: int) -> _Responses:
        queue = super()._expect_responses(message_id)
        if self._releasing:  # sent after the peer's A-RELEASE-RQ: it can never answer
            queue.put(_released_before_answer())
        return queue

    def _finish_release(self) -> None:
        protocol = self.protocol
        if protocol is None or self._ended:
            return
        self._releasing = False
        protocol.release_response()
        self.server.stats.released += 1
        self._released_cleanly = True

    def _on_end(self, exc: AssociationAborted) -> None:
        if self.protocol is not None:
            self.protocol.cancel_watch()
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


def _shorter(a: float | None, b: float | None) -> float | None:
    """The shorter of two optional timeouts (None: no limit)."""
    if a is None:
        return b
    return a if b is None or a <= b else b


_NO_DATASET = (CCancelRQ, CEchoRQ)


def _released_before_answer() -> AssociationAborted:
    return AssociationAborted(AbortSource.SERVICE_USER, 0,
                              "the peer released the association before answering")


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
