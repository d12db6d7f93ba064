"""Storage Commitment Push Model (PS3.4 Annex J), both sides.

The SCU asks with N-ACTION-RQ (Action Type 1, a Transaction UID and the references to
commit); the SCP answers N-ACTION-RSP at once and later reports the outcome with
N-EVENT-REPORT-RQ (Event Type 1: all committed, 2: failures exist; PS3.4 J.3.3). The
report may come on the same association, which is what we do as SCP and what we wait for
as SCU.

Roles: on the association the SCU requested, the SCP sends N-EVENT-REPORT within its own
SCP role (pynetdicom and dcm4che do; role selection is not needed). We still propose both
the SCU and the SCP role for the class (`commitment_role`), which some SCPs expect before
reporting on the same association and which the SCP role of a report on a new association
needs (PS3.4 J.3.3.2).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiodicom.aio.association import Association, AssociationInfo, IncomingData
from aiodicom.core.dimse import (
    Message,
    NActionRQ,
    NActionRSP,
    NEventReportRQ,
    NEventReportRSP,
    Status,
)
from aiodicom.core.negotiation import find_context
from aiodicom.core.part10 import decode_dataset, encode_dataset
from aiodicom.core.user_items import RoleSelection
from aiodicom.errors import AssociationAborted, DimseError, DimseTimeout, fresh_error

__all__ = [
    "STORAGE_COMMITMENT_INSTANCE",
    "STORAGE_COMMITMENT_PUSH_MODEL",
    "CommitFailure",
    "CommitHandler",
    "CommitRequest",
    "CommitResult",
    "CommitWaiters",
    "FailureReason",
    "Reference",
    "commitment_context",
    "commitment_role",
    "request_commitment",
    "serve_commitment",
]

log = logging.getLogger("aiodicom.commitment")

STORAGE_COMMITMENT_PUSH_MODEL = "1.2.840.10008.1.20.1"
"""Storage Commitment Push Model SOP Class (PS3.4 J.3)."""
STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"
"""Its well-known SOP instance (PS3.4 J.3.5)."""
REQUEST_COMMITMENT = 1
"""Action Type ID: Request Storage Commitment (PS3.4 Table J.3-1)."""
ALL_COMMITTED, FAILURES_EXIST = 1, 2
"""Event Type IDs of the report (PS3.4 Table J.3-2)."""
MAX_ACTION_BYTES = 4 << 20
"""Largest N-ACTION / N-EVENT-REPORT data set we read (room for `MAX_REFERENCES`)."""
MAX_REFERENCES = 10_000
"""References one request may name; more is refused with 0x0213 (resource limitation):
a request is decoded and checked against storage, and must not cost the server seconds."""
_EXPLICIT_LE = "1.2.840.10008.1.2.1"
_IMPLICIT_LE = "1.2.840.10008.1.2"


class FailureReason(enum.IntEnum):
    """(0008,1197) Failure Reason (PS3.4 J.3.3.1.1)."""

    PROCESSING_FAILURE = 0x0110
    NO_SUCH_OBJECT_INSTANCE = 0x0112
    RESOURCE_LIMITATION = 0x0213
    REFERENCED_SOP_CLASS_NOT_SUPPORTED = 0x0122
    CLASS_INSTANCE_CONFLICT = 0x0119
    DUPLICATE_TRANSACTION_UID = 0x0131


@dataclass(frozen=True, slots=True, kw_only=True)
class Reference:
    """One instance to commit: (0008,1150) and (0008,1155) of a ReferencedSOPSequence item."""

    sop_class_uid: str
    sop_instance_uid: str


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitFailure:
    """An instance the SCP did not commit, and why."""

    reference: Reference
    reason: int

    @property
    def description(self) -> str:
        try:
            return FailureReason(self.reason).name.lower().replace("_", " ")
        except ValueError:
            return f"failure reason 0x{self.reason:04X}"


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitResult:
    """The SCP's report (N-EVENT-REPORT, PS3.4 J.3.3)."""

    transaction_uid: str
    committed: tuple[Reference, ...] = ()
    failed: tuple[CommitFailure, ...] = ()

    @property
    def all_committed(self) -> bool:
        return not self.failed


@dataclass(frozen=True, slots=True, kw_only=True)
class CommitRequest:
    """What an SCP handler is asked: commit these instances (PS3.4 J.3.2)."""

    association: AssociationInfo
    transaction_uid: str
    references: tuple[Reference, ...]


class CommitHandler(Protocol):
    """Decide, for each reference, whether it is committed (safely held)."""

    def __call__(self, request: CommitRequest, /) -> Awaitable[CommitResult]: ...


def commitment_context() -> tuple[str, list[str]]:
    """The presentation context to propose for storage commitment."""
    return (STORAGE_COMMITMENT_PUSH_MODEL, [_EXPLICIT_LE, _IMPLICIT_LE])


def commitment_role() -> RoleSelection:
    """Propose both roles for the class: SCU (we ask) and SCP (the report may come back)."""
    return RoleSelection(sop_class_uid=STORAGE_COMMITMENT_PUSH_MODEL, scu_role=True,
                         scp_role=True)


# -- data set codec (PS3.4 Tables J.3-1, J.3-2) -------------------------------------------


def _items(refs: Iterable[Reference]) -> list[Any]:
    from pydicom.dataset import Dataset

    out = []
    for ref in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = ref.sop_class_uid
        item.ReferencedSOPInstanceUID = ref.sop_instance_uid
        out.append(item)
    return out


def encode_action(transaction_uid: str, references: Sequence[Reference], ts: str) -> bytes:
    """The N-ACTION-RQ action information."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.TransactionUID = transaction_uid
    ds.ReferencedSOPSequence = _items(references)
    return encode_dataset(ds, ts)


def decode_action(data: bytes, ts: str) -> tuple[str, tuple[Reference, ...]]:
    """Transaction UID and references of an N-ACTION-RQ; `DimseError` if either is missing."""
    ds = decode_dataset(data, ts)
    uid = str(ds.get("TransactionUID", "") or "").strip()
    if not uid or "ReferencedSOPSequence" not in ds:
        raise DimseError("storage commitment request without TransactionUID or "
                         "ReferencedSOPSequence (PS3.4 Table J.3-1)")
    return uid, tuple(_references(ds.ReferencedSOPSequence))


def _references(seq: Any) -> Iterable[Reference]:
    for item in seq:
        yield Reference(sop_class_uid=str(item.get("ReferencedSOPClassUID", "") or ""),
                        sop_instance_uid=str(item.get("ReferencedSOPInstanceUID", "") or ""))


def encode_event(result: CommitResult, ts: str) -> tuple[int, bytes]:
    """Event Type ID and event information of the report."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.TransactionUID = result.transaction_uid
    if result.committed:
        ds.ReferencedSOPSequence = _items(result.committed)
    if result.failed:
        failed = _items(f.reference for f in result.failed)
        for item, failure in zip(failed, result.failed, strict=True):
            item.FailureReason = failure.reason
        ds.FailedSOPSequence = failed
    return (FAILURES_EXIST if result.failed else ALL_COMMITTED), encode_dataset(ds, ts)


def decode_event(data: bytes, ts: str) -> CommitResult:
    ds = decode_dataset(data, ts)
    committed = tuple(_references(ds.get("ReferencedSOPSequence", []) or []))
    failed = tuple(
        CommitFailure(reference=ref, reason=int(item.get("FailureReason", 0x0110) or 0x0110))
        for ref, item in zip(_references(ds.get("FailedSOPSequence", []) or []),
                             ds.get("FailedSOPSequence", []) or [], strict=True)
    )
    return CommitResult(transaction_uid=str(ds.get("TransactionUID", "") or ""),
                        committed=committed, failed=failed)


# -- SCU ----------------------------------------------------------------------------------


@dataclass(slots=True)
class CommitWaiters:
    """The reports a `ClientAssociation` waits for, by Transaction UID."""

    waiting: dict[str, asyncio.Future[CommitResult | AssociationAborted]] = field(
        default_factory=dict)
    """Each resolves to the report, or to why the association ended: a value, not an
    exception, so the waiting frame raises a copy (see `fresh_error`)."""

    def fail(self, exc: AssociationAborted) -> None:
        """The association ended: nobody will report on it any more."""
        for waiter in self.waiting.values():
            if not waiter.done():
                waiter.set_result(exc)

    def answer(self, assoc: Association, context_id: int, msg: NEventReportRQ,
               data: IncomingData | None) -> asyncio.Task[None]:
        """An N-EVENT-REPORT-RQ arrived: answer it and resolve its waiter (in a task)."""
        return asyncio.get_running_loop().create_task(
            self._answer(assoc, context_id, msg, data))

    async def _answer(self, assoc: Association, context_id: int, msg: NEventReportRQ,
                      data: IncomingData | None) -> None:
        status = Status.SUCCESS
        result: CommitResult | None = None
        if msg.affected_sop_class_uid != STORAGE_COMMITMENT_PUSH_MODEL:
            status = Status.NO_SUCH_SOP_CLASS
        elif msg.event_type_id not in (ALL_COMMITTED, FAILURES_EXIST):
            status = Status(0x0113)  # no such event type
        elif data is None:
            status = Status(0x0115)  # invalid argument value: no event information
        if data is not None:
            try:
                raw = await data.read_bounded(MAX_ACTION_BYTES)
                if status == Status.SUCCESS:
                    ts = assoc.require_established().contexts[context_id].transfer_syntax
                    result = decode_event(raw, ts)
            except (DimseError, ValueError) as exc:
                log.warning("association %d: unreadable storage commitment report: %s",
                            assoc.id, exc)
                status = Status.PROCESSING_FAILURE
        waiter = self.waiting.get(result.transaction_uid) if result is not None else None
        if result is not None and waiter is None:
            log.warning("association %d: storage commitment report for unknown transaction "
                        "%s", assoc.id, result.transaction_uid)
            status = Status(0x0115)
        rsp = NEventReportRSP(
            message_id_being_responded_to=msg.message_id, status=status,
            affected_sop_class_uid=msg.affected_sop_class_uid,
            affected_sop_instance_uid=msg.affected_sop_instance_uid,
            event_type_id=msg.event_type_id,
        )
        if assoc.protocol is not None and not assoc.protocol.can_send:
            # We asked to release (Sta7): PS3.8 lets us send nothing more, not even this.
            log.info("association %d: storage commitment report received while releasing; "
                     "not answered", assoc.id)
        else:
            await assoc.send_message(context_id, rsp)
        if waiter is not None and result is not None and not waiter.done():
            waiter.set_result(result)


async def request_commitment(
    assoc: Association, waiters: CommitWaiters, references: Iterable[Reference], *,
    transaction_uid: str | None = None, timeout: float | None = None,
) -> CommitResult:
    """N-ACTION-RQ, its N-ACTION-RSP, then the N-EVENT-REPORT-RQ on this association
    within ``timeout`` seconds (default: the DIMSE timeout); raises `DimseError` if the SCP
    refuses the request, `DimseTimeout` if no report comes in time."""
    from pydicom.uid import generate_uid

    refs = tuple(references)
    if not refs:
        raise ValueError("storage commitment needs at least one reference")
    ctx = find_context(assoc.require_established(), STORAGE_COMMITMENT_PUSH_MODEL)
    uid = transaction_uid or str(generate_uid())
    body = encode_action(uid, refs, ctx.transfer_syntax)
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[CommitResult | AssociationAborted] = loop.create_future()
    waiters.waiting[uid] = waiter
    try:
        mid = assoc.next_message_id()
        rq = NActionRQ(message_id=mid, requested_sop_class_uid=STORAGE_COMMITMENT_PUSH_MODEL,
                       requested_sop_instance_uid=STORAGE_COMMITMENT_INSTANCE,
                       action_type_id=REQUEST_COMMITMENT, has_dataset=True)
        rsp, data = await assoc.request(ctx.context_id, rq, body, message_id=mid)
        if data is not None:
            await data.discard()
        if not isinstance(rsp, NActionRSP):
            raise DimseError(f"expected an N-ACTION-RSP, got {type(rsp).__name__}")
        if rsp.status != Status.SUCCESS:
            raise DimseError(f"storage commitment request refused: status {rsp.status}")
        limit = assoc.settings.timeouts.dimse if timeout is None else timeout
        assoc.input_wait_begins()
        try:
            result = await asyncio.wait_for(asyncio.shield(waiter), limit)
        except TimeoutError:
            raise DimseTimeout(
                f"no storage commitment report (N-EVENT-REPORT) within {limit} s for "
                f"transaction {uid}; the SCP may report later on a new association") from None
        finally:
            assoc.input_wait_ends()
    finally:
        waiters.waiting.pop(uid, None)
        waiter.cancel()
    if isinstance(result, AssociationAborted):
        raise fresh_error(result)
    return result


# -- SCP ----------------------------------------------------------------------------------


async def serve_commitment(
    assoc: Association, context_id: int, msg: NActionRQ, data: IncomingData | None,
    handler: CommitHandler | None, run: Callable[..., Awaitable[Any]],
) -> tuple[Message, Callable[[], Awaitable[None]] | None]:
    """The N-ACTION-RSP to send and, when it succeeds, what to run after it is sent: ask
    ``handler`` and send its report as N-EVENT-REPORT-RQ on this association.

    ``run`` is `aiodicom.aio.requests.run_handler` (passed in: requests imports this
    module for its types), so a failing handler is logged and reported as failures.
    """
    def refuse(status: Status) -> NActionRSP:
        return NActionRSP(message_id_being_responded_to=msg.message_id, status=status,
                          affected_sop_class_uid=msg.requested_sop_class_uid,
                          affected_sop_instance_uid=msg.requested_sop_instance_uid)

    if data is None:
        return refuse(Status(0x0115)), None
    try:
        raw = await data.read_bounded(MAX_ACTION_BYTES)
    except DimseError:
        return refuse(Status(0x0213)), None  # resource limitation
    if handler is None:
        return refuse(Status.SOP_CLASS_NOT_SUPPORTED), None
    if msg.action_type_id != REQUEST_COMMITMENT:
        return refuse(Status(0x0123)), None  # no such action
    if msg.requested_sop_instance_uid != STORAGE_COMMITMENT_INSTANCE:
        return refuse(Status(0x0112)), None  # no such SOP instance
    ts = assoc.require_established().contexts[context_id].transfer_syntax
    try:  # pydicom off the loop: a large sequence must not stall other associations
        uid, refs = await asyncio.to_thread(decode_action, raw, ts)
    except (DimseError, ValueError) as exc:
        log.warning("association %d: bad storage commitment request: %s", assoc.id, exc)
        return refuse(Status(0x0115)), None
    refs = tuple(dict.fromkeys(refs))  # each instance checked once
    if len(refs) > MAX_REFERENCES:
        log.warning("association %d: storage commitment request names %d instances, more "
                    "than %d: refused", assoc.id, len(refs), MAX_REFERENCES)
        return refuse(Status(0x0213)), None
    assert assoc.info is not None
    request = CommitRequest(association=assoc.info, transaction_uid=uid, references=refs)

    async def report() -> None:
        outcome = await run(handler(request), failure=Status.PROCESSING_FAILURE,
                                    what="storage commitment", association_id=assoc.id)
        if isinstance(outcome, CommitResult):
            result = outcome
        else:  # the handler failed: nothing is known to be committed
            result = CommitResult(transaction_uid=uid, failed=tuple(
                CommitFailure(reference=r, reason=FailureReason.PROCESSING_FAILURE)
                for r in refs))
        try:
            await send_report(assoc, context_id, result)
        except AssociationAborted as exc:
            # PS3.4 J.3.3 would have us report on a new association to the requester: not
            # done yet, so the requester asks again (its Transaction UID is unanswered).
            log.warning("association %d: storage commitment report %s not delivered: %s",
                        assoc.id, uid, exc)

    return refuse(Status.SUCCESS), report


async def send_report(assoc: Association, context_id: int, result: CommitResult) -> Status:
    """N-EVENT-REPORT-RQ with ``result``; the status of the peer's N-EVENT-REPORT-RSP."""
    ts = assoc.require_established().contexts[context_id].transfer_syntax
    event_type, body = encode_event(result, ts)
    mid = assoc.next_message_id()
    rq = NEventReportRQ(message_id=mid, affected_sop_class_uid=STORAGE_COMMITMENT_PUSH_MODEL,
                        affected_sop_instance_uid=STORAGE_COMMITMENT_INSTANCE,
                        event_type_id=event_type, has_dataset=True)
    rsp, data = await assoc.request(context_id, rq, body, message_id=mid)
    if data is not None:
        await data.discard()
    status = Status(int(getattr(rsp, "status", Status.PROCESSING_FAILURE)))
    if status != Status.SUCCESS:
        log.warning("association %d: storage commitment report %s answered %s", assoc.id,
                    result.transaction_uid, status)
    return status
