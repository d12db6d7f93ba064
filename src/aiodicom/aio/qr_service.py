"""The SCP side of Query/Retrieve (PS3.4 Annex C): performing C-FIND, C-GET and C-MOVE.

The `Server` gives a `QRService` its handlers and its C-MOVE destinations; the service knows
the association it serves only through `QRPeer`, and a destination only through
`MoveDestination` (which opens the sub-association: `aiodicom.aio.client.RemoteAE` is one),
so the server side never imports the client side.

Handlers are async iterators, run in a task that C-CANCEL-RQ or an abort cancels. A find
handler yields identifiers (or (status, identifier) pairs); a get or move handler yields
what to send (Part 10 paths or pydicom Datasets), or a `Status` to end with that status;
it may yield a `RetrievePlan` (the count, the SOP classes) first, and is then asked for each
item only once the previous one was sent (nothing is gathered; without a plan it is).
Each yield is answered with a pending response, and the C-STORE sub-operations are
performed on the same association for C-GET (where role selection gave us the SCU role,
PS3.7 D.3.3.4), on a new association to the named destination for C-MOVE (unknown: 0xA801).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from aiodicom.aio.association import AssociationInfo, IncomingData
from aiodicom.aio.requests import (
    FindHandler,
    FindRequest,
    GetHandler,
    GetRequest,
    MoveHandler,
    MoveRequest,
    run_handler,
)
from aiodicom.core.buffer import ReadableBuffer
from aiodicom.core.dimse import (
    CCancelRQ,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    Message,
    Status,
    StatusCategory,
)
from aiodicom.core.negotiation import EXPLICIT_VR_LITTLE_ENDIAN, NegotiatedAssociation
from aiodicom.core.part10 import read_part10_info
from aiodicom.core.qr import (
    MAX_IDENTIFIER,
    UNCOMPRESSED_SYNTAXES,
    decode_identifier,
    encode_identifier,
)
from aiodicom.core.uids import is_valid_uid
from aiodicom.errors import AssociationAborted, DicomError, DimseError
from aiodicom.settings import AssociationSettings

__all__ = ["MoveDestination", "Operation", "QRPeer", "QRService", "RetrievePlan",
           "SubAssociation"]

log = logging.getLogger("aiodicom.qr")


class SubAssociation(Protocol):
    """An association the service opened to a C-MOVE destination."""

    async def send_store(self, source: Path | str | Any, *, priority: int = 0,
                         move_originator: tuple[str, int] | None = None) -> Status: ...

    async def release(self) -> None: ...

    def abort(self) -> None: ...


class MoveDestination(Protocol):
    """A C-MOVE destination AE: it knows how to reach it (address, TLS)."""

    async def open(self, *, called_ae_title: str, contexts: Sequence[tuple[str, list[str]]],
                   settings: AssociationSettings) -> SubAssociation: ...


class QRPeer(Protocol):
    """What the service needs of the association it serves."""

    @property
    def id(self) -> int: ...

    @property
    def info(self) -> AssociationInfo | None: ...

    @property
    def negotiated(self) -> NegotiatedAssociation | None: ...

    @property
    def operations(self) -> dict[int, Operation]: ...

    async def send_message(self, context_id: int, msg: Message,
                           dataset: ReadableBuffer | Iterable[ReadableBuffer] | None = None,
                           ) -> None: ...

    async def send_store(self, source: Path | str | Any, *, priority: int = 0,
                         move_originator: tuple[str, int] | None = None) -> Status: ...


class Operation:
    """A running C-FIND/GET/MOVE that a C-CANCEL-RQ naming its message ID may stop."""

    __slots__ = ("cancelled", "task")

    def __init__(self) -> None:
        self.cancelled = False
        self.task: asyncio.Task[Any] | None = None

    def cancel(self) -> None:
        self.cancelled = True
        if self.task is not None:
            self.task.cancel()

    async def run(self, coro: Awaitable[Any]) -> Any:
        """Await ``coro`` in a task C-CANCEL may cancel; returns `Status.CANCEL` if it did."""
        self.task = asyncio.ensure_future(coro)
        try:
            return await self.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            ours = self.cancelled and (current is None or not current.cancelling())
            del current  # the task keeps the error raised here, whose traceback holds us
            if ours:
                return Status.CANCEL
            raise
        finally:
            self.task = None


@dataclass(frozen=True, slots=True, kw_only=True)
class QRService:
    """C-FIND/C-GET/C-MOVE as SCP: the server's handlers and its C-MOVE destinations."""

    find: FindHandler | None = None
    get: GetHandler | None = None
    move: MoveHandler | None = None
    destinations: Mapping[str, MoveDestination] = field(default_factory=dict)
    """C-MOVE destination AE title -> how to reach it; others get 0xA801."""
    settings: AssociationSettings = field(default_factory=AssociationSettings)
    """Our AE title and timeouts on C-MOVE sub-associations."""

    @staticmethod
    def cancel(assoc: QRPeer, msg: CCancelRQ) -> None:
        """C-CANCEL-RQ: stop the operation it names; that operation answers 0xFE00 itself."""
        op = assoc.operations.get(msg.message_id_being_responded_to)
        if op is not None:
            op.cancel()

    async def perform(self, assoc: QRPeer, context_id: int, msg: CFindRQ | CGetRQ | CMoveRQ,
                      data: IncomingData | None) -> tuple[Message, bytes | None]:
        """Perform one C-FIND, C-GET or C-MOVE; returns the final response and its data set
        for the caller to send (pending responses are sent here)."""
        assert assoc.info is not None and assoc.negotiated is not None
        handler: Any = {CFindRQ: self.find, CGetRQ: self.get, CMoveRQ: self.move}[type(msg)]
        rsp_type: Any = {CFindRQ: CFindRSP, CGetRQ: CGetRSP, CMoveRQ: CMoveRSP}[type(msg)]
        base = {"message_id_being_responded_to": msg.message_id,
                "affected_sop_class_uid": msg.affected_sop_class_uid}
        ts = assoc.negotiated.contexts[context_id].transfer_syntax
        try:
            raw = b"" if data is None else await data.read_bounded(MAX_IDENTIFIER)
            identifier = decode_identifier(raw, ts)
        except DimseError as exc:  # too large, or undecodable (InvalidIdentifier)
            log.warning("association %d: identifier: %s", assoc.id, exc)
            return rsp_type(status=Status.DATASET_MISMATCH, error_comment=str(exc)[:64],
                            **base), None
        if handler is None:
            return rsp_type(status=Status.SOP_CLASS_NOT_SUPPORTED, **base), None
        target: tuple[str, MoveDestination] | None = None
        if isinstance(msg, CMoveRQ):
            title = msg.move_destination.strip()
            destination = self.destinations.get(title)
            if destination is None:
                log.warning("association %d: C-MOVE to unknown destination %r", assoc.id,
                            msg.move_destination)
                return rsp_type(status=Status.MOVE_DESTINATION_UNKNOWN, **base), None
            target = (title, destination)
        op = Operation()
        assoc.operations[msg.message_id] = op
        fields = {"association": assoc.info, "context_id": context_id,
                  "identifier": identifier, "command": msg}
        try:
            if isinstance(msg, CFindRQ):
                matches = handler(FindRequest(**fields))
                return await _find(assoc, op, matches, context_id, ts, base), None
            request = (GetRequest if isinstance(msg, CGetRQ) else MoveRequest)(**fields)
            return await self._retrieve(assoc, op, handler(request), context_id, ts, base,
                                        rsp_type, target)
        finally:
            assoc.operations.pop(msg.message_id, None)

    async def _retrieve(self, assoc: QRPeer, op: Operation, items: Any, context_id: int,
                        ts: str, base: dict[str, Any], rsp_type: Any,
                        destination: tuple[str, MoveDestination] | None,
                        ) -> tuple[Message, bytes | None]:
        what = rsp_type.__name__[:-4]
        try:
            first = await run_handler(op.run(_next(items)), failure=Status.CANNOT_UNDERSTAND,
                                      what=what, association_id=assoc.id)
            if isinstance(first, Status):
                return rsp_type(status=first, **base), None
            plan: RetrievePlan | None = first if isinstance(first, RetrievePlan) else None
            if plan is None:  # a plain handler: what it yields, gathered, then sent
                rest = await run_handler(op.run(_collect(items)),
                                         failure=Status.CANNOT_UNDERSTAND, what=what,
                                         association_id=assoc.id)
                if isinstance(rest, Status):
                    return rsp_type(status=rest, **base), None
                collected = rest if first is _END else [first, *rest]
                return await self._send(assoc, op, _listed(collected), len(collected),
                                        _ListedPlan(collected), context_id, ts, base,
                                        rsp_type, destination)
            return await self._send(assoc, op, items, plan.total, plan, context_id, ts,
                                    base, rsp_type, destination)
        finally:
            await _close(items)

    async def _send(self, assoc: QRPeer, op: Operation, items: Any, total: int,
                    plan: RetrievePlan | _ListedPlan, context_id: int, ts: str,
                    base: dict[str, Any], rsp_type: Any,
                    destination: tuple[str, MoveDestination] | None,
                    ) -> tuple[Message, bytes | None]:
        """The C-STORE sub-operations, one item pulled from ``items`` just before each:
        a staged copy exists only while it is being sent."""
        counts = {"completed": 0, "failed": 0, "warning": 0}
        target: QRPeer | SubAssociation = assoc
        originator = None
        if destination is not None:
            assert assoc.info is not None
            originator = (assoc.info.calling_ae_title, base["message_id_being_responded_to"])
            try:  # under the Operation: a C-CANCEL does not wait for the destination
                opened = await op.run(self._open_destination(destination, plan))
            except (DicomError, OSError, ValueError) as exc:
                log.warning("association %d: C-MOVE destination %r unreachable: %s",
                            assoc.id, destination[0], exc)
                counts["failed"] = total
                # A702 names what was not sent (PS3.4 C.4.2.1.5), nothing fetched for it
                not_sent = await _not_sent(plan, assoc.id)
                return _final(counts, not_sent, total, False, ts, base, rsp_type)
            if isinstance(opened, Status):  # cancelled while connecting: nothing was sent
                return _final(counts, [], total, True, ts, base, rsp_type)
            target = opened
        failed: list[str] = []
        ended: Status | None = None
        try:
            while not op.cancelled:
                item = await run_handler(op.run(_next(items)),
                                         failure=Status.CANNOT_UNDERSTAND,
                                         what=rsp_type.__name__[:-4], association_id=assoc.id)
                if item is _END or (isinstance(item, Status) and item == Status.CANCEL
                                     and op.cancelled):
                    break
                if isinstance(item, Status):  # the handler ended part way
                    ended = item
                    break
                status = await _suboperation(target, item, originator, target is assoc)
                key = {StatusCategory.SUCCESS: "completed",
                       StatusCategory.WARNING: "warning"}.get(status.category, "failed")
                counts[key] += 1
                if key == "failed" and (uid := _uid_of(item)) is not None:
                    failed.append(uid)
                del item  # a staged copy is removed now, before the next one is fetched
                remaining = total - sum(counts.values())
                if remaining > 0 and not op.cancelled:
                    await _send_soon(assoc, context_id, rsp_type(
                        status=Status.PENDING, **_counts(counts, remaining), **base), None)
        finally:
            if target is not assoc:
                await _close_destination(target)  # type: ignore[arg-type]
        done = sum(counts.values())
        if ended is not None:
            if not done:
                return rsp_type(status=ended, **base), None
            return rsp_type(status=ended, **_counts(counts, None), **base), None
        return _final(counts, failed, max(total, done), op.cancelled, ts, base, rsp_type)

    async def _open_destination(self, destination: tuple[str, MoveDestination],
                                plan: RetrievePlan | _ListedPlan) -> SubAssociation:
        """A new association to the C-MOVE destination proposing the items' SOP classes."""
        if isinstance(plan, _ListedPlan):  # reads Part 10 headers
            wanted = _proposed(await asyncio.to_thread(_stored_syntaxes, plan.items))
        else:
            wanted = _proposed(plan.contexts)
        title, remote = destination
        settings = AssociationSettings(ae_title=self.settings.ae_title,
                                       timeouts=self.settings.timeouts)
        return await remote.open(called_ae_title=title, contexts=list(wanted.items())[:128],
                                 settings=settings)


@dataclass(frozen=True, slots=True)
class RetrievePlan:
    """What a get/move handler may yield first, before any item: the C-STORE
    sub-operations are then sent as the handler yields each item (an item is asked for
    only when the previous one has been sent), so nothing is gathered or staged ahead.

    Without a plan, everything the handler yields is gathered before the first
    sub-operation (its items are few, or cheap)."""

    total: int
    """How many items will follow: the Number of Remaining Sub-operations."""
    contexts: Mapping[str, Sequence[str]]
    """SOP class UID -> the transfer syntaxes the items are stored in (a C-MOVE proposes
    them, then the uncompressed ones)."""
    instance_uids: Callable[[], AsyncIterator[str]] | None = None
    """The SOP Instance UIDs of the items, read without fetching them: the Failed SOP
    Instance UID List when the C-MOVE destination cannot be reached."""


class _ListedPlan:
    """The items of a handler that gave no plan, gathered."""

    __slots__ = ("items",)

    def __init__(self, items: list[Any]) -> None:
        self.items = items


class _End:
    __slots__ = ()


_END = _End()


async def _next(items: Any) -> Any:
    """The next item of ``items``, or _END."""
    try:
        return await anext(items)
    except StopAsyncIteration:
        return _END


async def _listed(items: list[Any]) -> AsyncIterator[Any]:
    for item in items:
        yield item


async def _not_sent(plan: RetrievePlan | _ListedPlan, association_id: int) -> list[str]:
    if isinstance(plan, _ListedPlan):  # reading UIDs is file I/O
        return await asyncio.to_thread(
            lambda: [uid for item in plan.items if (uid := _uid_of(item)) is not None])
    if plan.instance_uids is None:
        return []
    try:
        return [uid async for uid in plan.instance_uids() if is_valid_uid(uid)]
    except Exception:  # the index went down: the counts still say what failed
        log.exception("association %d: listing what was not sent", association_id)
        return []


def _proposed(stored: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """SOP class -> transfer syntaxes to propose: the stored ones, then uncompressed."""
    return {sop_class: list(dict.fromkeys((*(s for s in syntaxes if s),
                                           *UNCOMPRESSED_SYNTAXES)))
            for sop_class, syntaxes in stored.items() if sop_class}


def _stored_syntaxes(items: list[Any]) -> dict[str, list[str]]:
    """SOP class -> the transfer syntaxes ``items`` are stored in."""
    wanted: dict[str, list[str]] = {}
    for item in items:
        sop_class, _, ts = _sop_of(item)
        syntaxes = wanted.setdefault(sop_class, [])
        if ts not in syntaxes:
            syntaxes.append(ts)
    return wanted


async def _find(assoc: QRPeer, op: Operation, matches: Any, context_id: int, ts: str,
                base: dict[str, Any]) -> Message:
    async def work() -> Status:
        try:
            async for item in matches:
                status, ds = item if isinstance(item, tuple) else (Status.PENDING, item)
                status = Status(int(status))
                if status.category is not StatusCategory.PENDING:
                    return status
                body = encode_identifier(ds, ts) if ds is not None else None
                await _send_soon(assoc, context_id, CFindRSP(
                    status=status, has_dataset=body is not None, **base), body)
            return Status.SUCCESS
        finally:
            await _close(matches)

    status = await run_handler(op.run(work()), failure=Status.CANNOT_UNDERSTAND,
                               what="C-FIND", association_id=assoc.id)
    return CFindRSP(status=Status(int(status)), **base)


async def _close(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _send_soon(assoc: QRPeer, context_id: int, msg: Message, body: bytes | None) -> Any:
    """Send a message even if our task is cancelled meanwhile: a half-sent message would
    corrupt the stream, so it always completes (or the association ends)."""
    task = asyncio.ensure_future(assoc.send_message(context_id, msg, body))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return asyncio.shield(task)


async def _collect(items: Any) -> list[Any] | Status:
    """Everything a retrieve handler yields, or the Status it ended with."""
    found: list[Any] = []
    try:
        async for item in items:
            if isinstance(item, Status):
                return item
            found.append(item)
    finally:
        await _close(items)
    return found


def _final(counts: dict[str, int], failed: list[str], total: int, cancelled: bool, ts: str,
           base: dict[str, Any], rsp_type: Any) -> tuple[Message, bytes | None]:
    """The final C-GET/C-MOVE response (PS3.4 C.4.2.1.5, C.4.3.1.4)."""
    done = sum(counts.values())
    if cancelled and done < total:
        status = Status.CANCEL
    elif total and counts["failed"] == total:
        status = Status.SUBOPERATIONS_FAILED
    elif counts["failed"] or counts["warning"]:
        status = Status.SUBOPERATIONS_WARNING
    else:
        status = Status.SUCCESS
    body = None
    if failed:
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.FailedSOPInstanceUIDList = failed
        body = encode_identifier(ds, ts)
    remaining = total - done if status == Status.CANCEL else None
    rsp = rsp_type(status=status, has_dataset=body is not None,
                   **_counts(counts, remaining), **base)
    return rsp, body


def _counts(counts: dict[str, int], remaining: int | None) -> dict[str, int | None]:
    return {"number_of_remaining_suboperations": remaining,
            "number_of_completed_suboperations": counts["completed"],
            "number_of_failed_suboperations": counts["failed"],
            "number_of_warning_suboperations": counts["warning"]}


async def _suboperation(target: QRPeer | SubAssociation, item: Any,
                        originator: tuple[str, int] | None, own: bool) -> Status:
    """One C-STORE sub-operation; a failure status if it could not be sent."""
    try:
        return await target.send_store(item, move_originator=originator)
    except AssociationAborted:
        if own:  # the requestor is gone: nobody to answer
            raise
        log.warning("C-MOVE destination association ended: sub-operation failed")
    except (DicomError, OSError, ValueError) as exc:
        log.warning("C-STORE sub-operation failed: %s", exc)
    return Status.CANNOT_UNDERSTAND


def _sop_of(item: Any) -> tuple[str, str, str]:
    """(SOP class, SOP instance, transfer syntax) of a path or Dataset."""
    if isinstance(item, str | Path):
        info = read_part10_info(Path(item))
        return info.sop_class_uid, info.sop_instance_uid, info.transfer_syntax_uid
    meta = getattr(item, "file_meta", None)
    ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else ""
    return str(item.SOPClassUID), str(item.SOPInstanceUID), ts or EXPLICIT_VR_LITTLE_ENDIAN


def _uid_of(item: Any) -> str | None:
    """The SOP Instance UID of an item, None if it has no readable, valid one."""
    try:
        uid = _sop_of(item)[1]
    except Exception:
        return None
    return uid if is_valid_uid(uid) else None


async def _close_destination(target: SubAssociation) -> None:
    try:
        await target.release()
    except (DicomError, OSError):
        target.abort()
