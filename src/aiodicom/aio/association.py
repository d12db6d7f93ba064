"""An established association: DIMSE messages over a `DicomProtocol`, both roles.

The protocol hands service primitives up synchronously; P-DATA goes through the DIMSE
`MessageAssembler`, which yields commands and data-set fragments (memoryviews over the
received PDU bodies). Responses resolve the futures of the requests that wait for them;
requests go to the role's `_dispatch_request` (the server's handlers). Sending holds one
lock per message so the PDVs of two messages never interleave on the wire.

Each outstanding request has a bounded queue keyed by its message ID: single-response
services take one item (`request`); C-FIND/GET/MOVE take pending responses in order until a
final status (`request_responses`, PS3.7 §9.3.2-9.3.4). A queue past its bound stops the
transport reading, so a peer cannot pile responses in front of a slow consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncGenerator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiodicom.aio._window import OperationsWindow
from aiodicom.aio.incoming import RESPONSE_QUEUE_LIMIT, IncomingData, _Response, _Responses
from aiodicom.aio.protocol import DicomProtocol
from aiodicom.core.buffer import ReadableBuffer
from aiodicom.core.dimse import (
    CommandReceived,
    CStoreRQ,
    CStoreRSP,
    DatasetFragment,
    Message,
    MessageAssembler,
    Status,
    StatusCategory,
    encode_message,
    fragment_command,
    fragment_dataset,
    message_name,
)
from aiodicom.core.negotiation import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    NegotiatedAssociation,
    find_context,
)
from aiodicom.core.part10 import (
    TransferSyntaxMismatch,
    encode_dataset,
    read_part10_info,
    stream_dataset,
)
from aiodicom.core.primitives import (
    AbortIndication,
    AssociateAccepted,
    AssociateIndication,
    AssociateRejected,
    ConnectionClosed,
    DataIndication,
    Primitive,
    ReleaseConfirmed,
    ReleaseIndication,
)
from aiodicom.errors import (
    AbortSource,
    AssociationAborted,
    AssociationError,
    DimseError,
    DimseTimeout,
    NoPresentationContext,
    fresh_error,
)
from aiodicom.settings import AssociationSettings

__all__ = ["Association", "AssociationInfo", "IncomingData"]

log = logging.getLogger("aiodicom.association")

_CONVERTIBLE = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN,
                DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN)
"""Native syntaxes a data set can be converted between without loss (PS3.5 A.1-A.5)."""

_assoc_ids = itertools.count(1)



@dataclass(frozen=True, slots=True, kw_only=True)
class AssociationInfo:
    """Who is on the other side, as handlers, logs and the audit trail see it."""

    id: int
    calling_ae_title: str
    called_ae_title: str
    peer_address: tuple[str, int] | None
    identity: Any = None
    """The verified TLS peer identity (`aiodicom.aio.tls.PeerIdentity`), None on plain TCP."""
    negotiated: NegotiatedAssociation | None = None
    user: str | None = None
    """The user verified by user identity negotiation (PS3.7 D.3.3.7), None without one."""


class Association:
    """The shared machinery of both roles; see `ClientAssociation` and the server."""

    def __init__(self, settings: AssociationSettings) -> None:
        self.settings = settings
        self.id = next(_assoc_ids)
        self.protocol: DicomProtocol | None = None
        self.negotiated: NegotiatedAssociation | None = None
        self.info: AssociationInfo | None = None
        self._assembler = MessageAssembler()
        self._send_lock: asyncio.Lock | None = None
        """Made by the first `send_message` (an inline echo answer never needs it)."""
        self._message_ids = itertools.cycle(range(1, 0x10000))
        self._pending: dict[int, _Responses] = {}
        self._invoked: OperationsWindow | None = None
        """Bounds the requests we have outstanding as invoker (PS3.7 D.3.3.3); None: no bound.
        The requestor sets it from the negotiated window; C-CANCEL-RQ (no response) is outside."""
        self._input_waiters = 0
        self._incoming: IncomingData | None = None
        self._released: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ended = False
        self.abort_reason: AssociationAborted | None = None

    # -- primitives from the protocol (synchronous) -------------------------------------------

    def on_primitive(self, primitive: Primitive) -> None:
        if isinstance(primitive, DataIndication):
            self._on_data(primitive)
        elif isinstance(primitive, AssociateIndication):
            self._on_associate_indication(primitive)
        elif isinstance(primitive, AssociateAccepted | AssociateRejected):
            self._on_associate_answer(primitive)
        elif isinstance(primitive, ReleaseIndication):
            self._on_release_indication()
        elif isinstance(primitive, ReleaseConfirmed):
            if not self._released.done():
                self._released.set_result(None)
        elif isinstance(primitive, AbortIndication):
            exc = AssociationAborted(primitive.source, primitive.reason)
            if primitive.error is not None:
                log.warning(
                    "association %d: peer protocol error, aborted: %s", self.id, primitive.error
                )
            self._end(exc)
        elif isinstance(primitive, ConnectionClosed):
            self._end(AssociationAborted(AbortSource.SERVICE_PROVIDER, 0, "connection closed"))

    def _on_data(self, primitive: DataIndication) -> None:
        if self._ended:
            return  # aborted by an earlier PDU of the same read: nothing more is handled
        try:
            events = self._assembler.feed(primitive.pdata)
        except DimseError as exc:
            log.warning("association %d: bad DIMSE message, aborting: %s", self.id, exc)
            self.abort()
            return
        for event in events:
            if isinstance(event, DatasetFragment):
                incoming = self._incoming
                if incoming is not None:
                    incoming.push(event.data, event.is_last)
                    if event.is_last:
                        self._incoming = None
            elif isinstance(event, CommandReceived):
                self._on_command(event)

    def _on_command(self, event: CommandReceived) -> None:
        msg = event.message
        incoming: IncomingData | None = None
        if msg.has_dataset:
            assert self.protocol is not None
            incoming = IncomingData(self.protocol, high_water=self._high_water(), owner=self)
            self._incoming = incoming
        responding_to = getattr(msg, "message_id_being_responded_to", None)
        if responding_to is not None and type(msg).__name__.endswith("RSP"):
            queue = self._pending.get(responding_to)
            if queue is None:
                log.warning(
                    "association %d: response to unknown message %d", self.id, responding_to
                )
                if incoming is not None:
                    asyncio.get_running_loop().create_task(incoming.discard())
                return
            queue.put((msg, incoming))
            return
        self._dispatch_request(event.context_id, msg, incoming)

    def _high_water(self) -> int:
        return 4 * max(self.settings.limits.max_pdu_length or (1 << 20), 1 << 16)

    # -- overridden by the roles --------------------------------------------------------------

    def _dispatch_request(self, context_id: int, msg: Message, data: IncomingData | None) -> None:
        log.warning("association %d: unexpected request %s, aborting", self.id, type(msg).__name__)
        self.abort()

    def _on_associate_indication(self, primitive: AssociateIndication) -> None:
        raise AssociationError("unexpected A-ASSOCIATE indication")

    def _on_associate_answer(self, primitive: AssociateAccepted | AssociateRejected) -> None:
        raise AssociationError("unexpected A-ASSOCIATE answer")

    def _on_release_indication(self) -> None:
        raise AssociationError("unexpected A-RELEASE indication")

    # -- ending ---------------------------------------------------------------------------------

    def _end(self, exc: AssociationAborted) -> None:
        if self._ended:
            return
        self._ended = True
        self.abort_reason = exc
        # Everyone who may raise the error gets a copy of it: a raised exception carries its
        # traceback, whose frames hold this association, and the association holds
        # abort_reason, so raising that one would make it garbage for the cycle collector
        # (tests/aio/test_release_frees.py).
        for queue in self._pending.values():
            queue.put(fresh_error(exc))
        self._pending.clear()
        if self._incoming is not None:
            self._incoming.fail(fresh_error(exc))
            self._incoming = None
        if self.protocol is not None:
            # Whatever a slow consumer had paused: read on, so the peer's close is seen
            # (Sta13 drops what arrives) instead of holding the socket until ARTIM.
            self.protocol.resume_all()
        if not self._released.done():
            self._released.set_result(None)  # release() waits for the end, either way
        self._on_end(fresh_error(exc))

    def _ending_error(self) -> AssociationAborted | None:
        """Why the association ended, as a new exception to raise (see `_end`)."""
        return None if self.abort_reason is None else fresh_error(self.abort_reason)

    def _on_end(self, exc: AssociationAborted) -> None:
        """Hook for the roles (cancel handlers, resolve establishment)."""

    @property
    def is_established(self) -> bool:
        return not self._ended and self.negotiated is not None

    def abort(self) -> None:
        """Send A-ABORT (service user) and drop the association now."""
        protocol = self.protocol
        if protocol is None or self._ended:
            return
        protocol.abort()
        self._end(AssociationAborted(AbortSource.SERVICE_USER, 0, "aborted locally"))

    # -- sending ----------------------------------------------------------------------------

    def _peer_max_pdu(self) -> int:
        assert self.negotiated is not None
        return self.negotiated.peer_max_pdu_length

    async def send_message(
        self,
        context_id: int,
        msg: Message,
        dataset: ReadableBuffer | Iterable[ReadableBuffer] | None = None,
    ) -> None:
        """Send a command and its data set (views are written as they are, never joined)."""
        protocol = self.protocol
        if protocol is None or self._ended:
            raise self._ending_error() or AssociationError("the association is not established")
        command = encode_message(msg)
        max_pdu = self._peer_max_pdu()
        pdus = fragment_dataset(context_id, dataset, max_pdu) if dataset is not None else None
        lock = self._send_lock
        if lock is None:
            lock = self._send_lock = asyncio.Lock()
        async with lock:
            for pdu in fragment_command(context_id, command, max_pdu):
                self._check_open()
                protocol.send(pdu)
            if pdus is not None:
                try:
                    for pdu in pdus:
                        self._check_open()
                        protocol.send(pdu)
                        await protocol.drain()
                except BaseException as exc:
                    # The command is on the wire: a half message would corrupt the next one
                    # (PS3.8 Annex E.1 forbids interleaving), so the association cannot go on,
                    # whatever stopped the data set (a bad file, a reader error, a cancel).
                    if not self._ended:
                        log.warning("association %d: %s failed after its command went out, "
                                    "aborting: %s", self.id, message_name(msg),
                                    type(exc).__name__ if not str(exc) else exc)
                        self.abort()
                    raise
            await protocol.drain()

    def send_pdu_now(self, pdu: bytes) -> bool:
        """Send one prebuilt P-DATA-TF synchronously if no other message is being sent."""
        protocol = self.protocol
        lock = self._send_lock
        if protocol is None or self._ended or (lock is not None and lock.locked()) or (
                not protocol.can_send):
            return False  # not can_send: an A-ABORT read with the request already ended it
        protocol.send((pdu,))
        return True

    def _check_open(self) -> None:
        if self._ended:
            raise self._ending_error() or AssociationError("the association ended")

    def next_message_id(self) -> int:
        """1-65535, wrapping to 1 (never 0: PS3.7 E.1 MessageID is a non-zero US), skipping
        an ID whose request is still outstanding, so a long association never reuses one."""
        mid = next(self._message_ids)
        while mid in self._pending:
            mid = next(self._message_ids)
        return mid

    async def request(
        self,
        context_id: int,
        msg: Message,
        dataset: ReadableBuffer | Iterable[ReadableBuffer] | None = None,
        *,
        message_id: int,
    ) -> tuple[Message, IncomingData | None]:
        """Send a request and wait for its (first) response within the DIMSE timeout.

        Waits first for a place in the operations window, if one is set."""
        async with self._invoked.place() if self._invoked else contextlib.nullcontext():
            queue = self._expect_responses(message_id)
            try:
                await self.send_message(context_id, msg, dataset)
                return await self._next_response(queue, message_id)
            finally:
                self._pending.pop(message_id, None)
                queue.close()

    async def request_responses(
        self,
        context_id: int,
        msg: Message,
        dataset: ReadableBuffer | Iterable[ReadableBuffer] | None = None,
        *,
        message_id: int,
    ) -> AsyncGenerator[tuple[Message, IncomingData | None], None]:
        """Send a request and yield its responses in order, the final (non-pending) one last.

        For C-FIND/GET/MOVE (PS3.7 §9.3.2-9.3.4); the DIMSE timeout applies between
        responses. A consumer that stops early leaves later responses to be dropped. The
        request holds its place in the operations window until its final response.
        """
        async with self._invoked.place() if self._invoked else contextlib.nullcontext():
            queue = self._expect_responses(message_id)
            try:
                await self.send_message(context_id, msg, dataset)
                while True:
                    rsp, data = await self._next_response(queue, message_id)
                    status = getattr(rsp, "status", Status.SUCCESS)
                    final = Status(int(status)).category is not StatusCategory.PENDING
                    yield rsp, data
                    if final:
                        return
            finally:
                self._pending.pop(message_id, None)
                queue.close()

    @property
    def waiting_for_input(self) -> bool:
        """Someone awaits what only more input can bring (a response, data, the release)."""
        return self._input_waiters > 0

    def input_wait_begins(self) -> None:
        """A waiter for input: response queues over their bound stop holding reading."""
        self._input_waiters += 1
        for queue in self._pending.values():
            queue.release_hold()

    def input_wait_ends(self) -> None:
        self._input_waiters -= 1

    def _expect_responses(self, message_id: int) -> _Responses:
        queue = _Responses(self, RESPONSE_QUEUE_LIMIT)
        self._pending[message_id] = queue
        return queue

    async def _next_response(
        self, queue: _Responses, message_id: int
    ) -> _Response:
        timeout = self.settings.timeouts.dimse
        try:
            item = await asyncio.wait_for(queue.get(), timeout)
        except TimeoutError:
            raise DimseTimeout(
                f"no response to message {message_id} within {timeout} s; "
                "the peer may be overloaded (raise the DIMSE timeout) or stalled"
            ) from None
        if isinstance(item, AssociationAborted):
            try:
                raise item  # a copy made for this queue (`_end`)
            finally:
                del item  # the traceback holds this frame: the frame must not hold it
        return item

    # -- C-STORE as invoker (plain stores, and the sub-operations of C-GET/C-MOVE) -------------

    async def send_store(
        self,
        source: Path | str | Any,
        *,
        priority: int = 0,
        move_originator: tuple[str, int] | None = None,
    ) -> Status:
        """C-STORE a Part 10 file (streamed, never loaded whole) or a pydicom Dataset.

        ``move_originator`` is (AE title, message ID) of the C-MOVE this store serves
        (PS3.7 Table 9.3-1). We must hold the SCU role for the SOP class on the context:
        an acceptor does after role selection for C-GET sub-operations (PS3.7 D.3.3.4).
        """
        negotiated = self.require_established()
        if isinstance(source, str | Path):
            info = read_part10_info(Path(source))
            if info.dataset_length % 2:
                raise DimseError(
                    f"{info.path}: data set of odd length {info.dataset_length}; DICOM data "
                    "sets have even length (PS3.5 §7.1), nothing sent")
            try:
                ctx = find_context(negotiated, info.sop_class_uid, info.transfer_syntax_uid)
            except NoPresentationContext:
                if info.transfer_syntax_uid not in _CONVERTIBLE:
                    raise
                import pydicom  # convertible: re-encode in an accepted uncompressed syntax

                return await self.send_store(pydicom.dcmread(info.path), priority=priority,
                                             move_originator=move_originator)
            body: Any = stream_dataset(info, _chunk_size(negotiated.peer_max_pdu_length))
            sop_class, sop_instance = info.sop_class_uid, info.sop_instance_uid
        else:
            ctx, body = self._encode_for_store(negotiated, source)
            sop_class, sop_instance = str(source.SOPClassUID), str(source.SOPInstanceUID)
        mid = self.next_message_id()
        rq = CStoreRQ(
            message_id=mid,
            affected_sop_class_uid=sop_class,
            affected_sop_instance_uid=sop_instance,
            priority=priority,
            move_originator_ae_title=move_originator[0] if move_originator else None,
            move_originator_message_id=move_originator[1] if move_originator else None,
        )
        rsp, data = await self.request(ctx.context_id, rq, body, message_id=mid)
        if data is not None:
            await data.discard()
        if not isinstance(rsp, CStoreRSP):
            raise DimseError(f"expected a C-STORE-RSP, got {type(rsp).__name__}")
        return rsp.status

    def _encode_for_store(self, negotiated: NegotiatedAssociation, ds: Any) -> tuple[Any, bytes]:
        """The context to send ``ds`` on and its bytes, encoded for that context's transfer
        syntax: its own syntax first, then the native ones (converted, PS3.5 A.1-A.5). A
        compressed data set is never sent under another label (`TransferSyntaxMismatch`)."""
        sop_class = str(ds.SOPClassUID)
        meta = getattr(ds, "file_meta", None)
        own = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta \
            else None
        refused: TransferSyntaxMismatch | None = None
        for ts in dict.fromkeys([own, *_CONVERTIBLE]):
            if ts is None:
                continue
            try:
                ctx = find_context(negotiated, sop_class, ts)
            except NoPresentationContext:
                continue
            try:
                return ctx, encode_dataset(ds, ctx.transfer_syntax)
            except TransferSyntaxMismatch as exc:
                refused = exc
        if refused is not None:
            raise refused
        ctx = find_context(negotiated, sop_class)  # raises, naming what was accepted
        return ctx, encode_dataset(ds, ctx.transfer_syntax)

    def require_established(self) -> NegotiatedAssociation:
        """The negotiated association; raises why not if it is not (or no longer) up."""
        if self.negotiated is None or not self.is_established:
            raise self._ending_error() or AssociationError("the association is not established")
        return self.negotiated


def _chunk_size(peer_max_pdu: int) -> int:
    if peer_max_pdu == 0 or peer_max_pdu > (4 << 20):
        return 1 << 20
    return peer_max_pdu - 6
