"""Query/Retrieve (PS3.4 Annex C): C-FIND, C-GET and C-MOVE for both roles.

As SCU (`ClientAssociation.find/get/move`): `FindQuery` iterates the pending identifiers of
a C-FIND and sends C-CANCEL-RQ when closed early; `retrieve` runs a C-GET or C-MOVE to its
final status and counts. The C-STORE sub-operations of a C-GET arrive on the same
association and go to a `StoreHandler` through `answer_store`.

As SCP (`Server(find=..., get=..., move=...)`): handlers are async iterators, run in a task
that C-CANCEL-RQ or an abort cancels. A find handler yields identifiers (or (status,
identifier) pairs); a get or move handler yields what to send (Part 10 paths or pydicom
Datasets), or a `Status` to end with that status. The server answers each yield with a
pending response and performs the C-STORE sub-operations: on the same association for
C-GET (where role selection gave us the SCU role, PS3.7 D.3.3.4), on a new association to a
destination from `Server.move_destinations` for C-MOVE (unknown: 0xA801).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import warnings
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from aiodicom.aio.association import Association, AssociationInfo, IncomingData
from aiodicom.aio.requests import StoreHandler, StoreRequest
from aiodicom.core.dimse import (
    CCancelRQ,
    CFindRQ,
    CFindRSP,
    CGetRQ,
    CGetRSP,
    CMoveRQ,
    CMoveRSP,
    CStoreRQ,
    CStoreRSP,
    Message,
    Status,
    StatusCategory,
)
from aiodicom.core.negotiation import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    find_context,
)
from aiodicom.core.uids import is_valid_uid
from aiodicom.core.user_items import RoleSelection
from aiodicom.errors import AssociationAborted, DicomError, DimseError

if TYPE_CHECKING:
    from aiodicom.aio.server import ServerAssociation

__all__ = [
    "MODELS",
    "FindHandler",
    "FindQuery",
    "FindRequest",
    "GetHandler",
    "GetRequest",
    "MoveDestination",
    "MoveHandler",
    "MoveRequest",
    "QRModel",
    "RetrieveResult",
    "qr_contexts",
    "retrieve_contexts",
]

log = logging.getLogger("aiodicom.qr")

QRModel = Literal["patient", "study"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Model:
    find: str
    move: str
    get: str


MODELS: Mapping[str, _Model] = {
    "patient": _Model(find="1.2.840.10008.5.1.4.1.2.1.1", move="1.2.840.10008.5.1.4.1.2.1.2",
                      get="1.2.840.10008.5.1.4.1.2.1.3"),
    "study": _Model(find="1.2.840.10008.5.1.4.1.2.2.1", move="1.2.840.10008.5.1.4.1.2.2.2",
                    get="1.2.840.10008.5.1.4.1.2.2.3"),
}
"""Patient Root and Study Root information models (PS3.4 C.6.1, C.6.2): their SOP classes."""

_MODEL_OF = {uid: name for name, m in MODELS.items() for uid in (m.find, m.move, m.get)}
_SYNTAXES = [EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN]
MAX_IDENTIFIER = 1 << 20
"""Largest identifier we decode: a query is a few keys, never megabytes."""

MoveDestination = tuple[str, int] | tuple[str, int, "ssl.SSLContext | None"]
"""(host, port) or (host, port, TLS client context) of a C-MOVE destination AE."""


def qr_contexts() -> list[tuple[str, list[str]]]:
    """Presentation contexts for FIND, GET and MOVE of both information models."""
    return [(uid, list(_SYNTAXES)) for m in MODELS.values() for uid in (m.find, m.get, m.move)]


def retrieve_contexts(
    storage_sop_classes: Sequence[str],
) -> tuple[list[tuple[str, list[str]]], list[RoleSelection]]:
    """Contexts and role selections for a C-GET SCU: the Q/R classes, plus each storage
    class with us as SCP (PS3.4 C.4.3.1, PS3.7 D.3.3.4)."""
    contexts = qr_contexts() + [(uid, list(_SYNTAXES)) for uid in storage_sop_classes]
    roles = [RoleSelection(sop_class_uid=uid, scu_role=False, scp_role=True)
             for uid in storage_sop_classes]
    return contexts, roles


# -- identifiers --------------------------------------------------------------------------------


async def read_identifier(data: IncomingData | None) -> bytes:
    """The whole identifier data set (small by nature), or b"" if none came."""
    if data is None:
        return b""
    buf = BytesIO()
    async for batch in data.chunks():
        for view in batch:
            if buf.tell() + len(view) > MAX_IDENTIFIER:
                await data.discard()
                raise DimseError(f"identifier larger than {MAX_IDENTIFIER} bytes")
            buf.write(view)
    return buf.getvalue()


def decode_identifier(raw: bytes, transfer_syntax: str) -> Any:
    """An identifier as a pydicom Dataset; ValueError if it does not parse."""
    from pydicom.filereader import read_dataset

    try:
        with warnings.catch_warnings():  # ranges and wildcards are not valid DA/UI/... values
            warnings.simplefilter("ignore")
            ds = read_dataset(BytesIO(raw),
                              is_implicit_VR=transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN,
                              is_little_endian=transfer_syntax != EXPLICIT_VR_BIG_ENDIAN)
            for _ in ds:  # parse every element now, not later in a handler
                pass
    except Exception as exc:
        raise ValueError(f"undecodable identifier: {exc}") from exc
    return ds


def encode_identifier(ds: Any, transfer_syntax: str) -> bytes:
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    buf = DicomBytesIO()
    buf.is_little_endian = transfer_syntax != EXPLICIT_VR_BIG_ENDIAN
    buf.is_implicit_VR = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    with warnings.catch_warnings():  # query keys: wildcards and ranges (PS3.4 C.2.2.2)
        warnings.simplefilter("ignore")
        write_dataset(buf, ds)
    return buf.getvalue()


# -- SCU ------------------------------------------------------------------------------------------


class FindQuery:
    """The matches of one C-FIND, as an async iterator (and async context manager).

    ``status`` is the final status once iteration ends (None before). Closing early
    (``aclose``, leaving ``async with``) sends C-CANCEL-RQ and waits for the final response.
    """

    def __init__(self, assoc: Association, identifier: Any, *, model: QRModel,
                 priority: int) -> None:
        self.status: Status | None = None
        self._gen = self._run(assoc, identifier, MODELS[model].find, priority)

    def __aiter__(self) -> FindQuery:
        return self

    async def __anext__(self) -> Any:
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        await self._gen.aclose()

    async def __aenter__(self) -> FindQuery:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _run(self, assoc: Association, identifier: Any, sop: str,
                   priority: int) -> AsyncGenerator[Any, None]:
        ctx = find_context(assoc._established(), sop)
        mid = assoc.next_message_id()
        rq = CFindRQ(message_id=mid, affected_sop_class_uid=sop, priority=priority)
        body = encode_identifier(identifier, ctx.transfer_syntax)
        responses = assoc.request_responses(ctx.context_id, rq, body, message_id=mid)
        try:
            async for rsp, data in responses:
                raw = await read_identifier(data)
                status = Status(int(getattr(rsp, "status", 0)))
                if status.category is not StatusCategory.PENDING:
                    self.status = status
                    return
                if raw:
                    yield decode_identifier(raw, ctx.transfer_syntax)
        finally:
            if self.status is None and assoc.is_established:
                with contextlib.suppress(DicomError):
                    await assoc.send_message(
                        ctx.context_id, CCancelRQ(message_id_being_responded_to=mid))
                    async for rsp, data in responses:
                        if data is not None:
                            await data.discard()
                        self.status = Status(int(getattr(rsp, "status", 0)))
            await responses.aclose()


@dataclass(frozen=True, slots=True, kw_only=True)
class RetrieveResult:
    """The outcome of a C-GET or C-MOVE: the final status and sub-operation counts."""

    status: Status
    completed: int = 0
    failed: int = 0
    warning: int = 0
    remaining: int = 0
    """Non-zero only when the retrieve was cancelled or failed part way."""
    failed_sop_instances: tuple[str, ...] = ()
    """(0008,0058) Failed SOP Instance UID List from the final response."""


async def retrieve(assoc: Association, identifier: Any, *, model: QRModel, priority: int = 0,
                   destination: str | None = None) -> RetrieveResult:
    """C-GET (``destination`` None) or C-MOVE to ``destination``; waits for the final status."""
    m = MODELS[model]
    sop = m.get if destination is None else m.move
    ctx = find_context(assoc._established(), sop)
    mid = assoc.next_message_id()
    rq: Message = (
        CGetRQ(message_id=mid, affected_sop_class_uid=sop, priority=priority)
        if destination is None else
        CMoveRQ(message_id=mid, affected_sop_class_uid=sop, priority=priority,
                move_destination=destination)
    )
    body = encode_identifier(identifier, ctx.transfer_syntax)
    last: Any = None
    raw = b""
    async for rsp, data in assoc.request_responses(ctx.context_id, rq, body, message_id=mid):
        raw = await read_identifier(data)
        last = rsp
    failed_uids: tuple[str, ...] = ()
    if raw:
        with contextlib.suppress(ValueError):
            found = decode_identifier(raw, ctx.transfer_syntax).get("FailedSOPInstanceUIDList")
            if found:
                failed_uids = tuple(str(u) for u in ([found] if isinstance(found, str)
                                                     else found))

    def count(name: str) -> int:
        return int(getattr(last, f"number_of_{name}_suboperations", None) or 0)

    return RetrieveResult(
        status=Status(int(last.status)), completed=count("completed"), failed=count("failed"),
        warning=count("warning"), remaining=count("remaining"),
        failed_sop_instances=failed_uids,
    )


async def answer_store(assoc: Association, handler: StoreHandler | None, context_id: int,
                       msg: CStoreRQ, data: IncomingData) -> None:
    """Perform a C-STORE the peer sent us as a C-GET sub-operation and answer it."""
    status = Status.SOP_CLASS_NOT_SUPPORTED
    negotiated = assoc.negotiated
    ctx = negotiated.contexts.get(context_id) if negotiated is not None else None
    if handler is not None and ctx is not None and ctx.scp_role and assoc.info is not None:
        request = StoreRequest(association=assoc.info, command=msg, context_id=context_id,
                               transfer_syntax=ctx.transfer_syntax, data=data)
        try:
            status = Status(int(await handler(request)))
        except AssociationAborted:
            raise
        except Exception:
            log.exception("association %d: C-STORE handler failed", assoc.id)
            status = Status(0xC000)
    if not data.complete:
        await data.discard()
    with contextlib.suppress(AssociationAborted):
        await assoc.send_message(context_id, CStoreRSP(
            message_id_being_responded_to=msg.message_id,
            affected_sop_class_uid=msg.affected_sop_class_uid,
            affected_sop_instance_uid=msg.affected_sop_instance_uid, status=status))


# -- SCP ------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class _QRRequest:
    association: AssociationInfo
    context_id: int
    identifier: Any
    """The decoded identifier (a pydicom Dataset): the query keys."""

    @property
    def level(self) -> str:
        """(0008,0052) Query/Retrieve Level, upper case ("" if absent)."""
        return str(getattr(self.identifier, "QueryRetrieveLevel", "") or "").strip().upper()


@dataclass(frozen=True, slots=True, kw_only=True)
class FindRequest(_QRRequest):
    """A C-FIND request (PS3.7 §9.1.2, PS3.4 C.4.1)."""

    command: CFindRQ

    @property
    def model(self) -> QRModel:
        return "patient" if _MODEL_OF.get(self.command.affected_sop_class_uid) == "patient" \
            else "study"


@dataclass(frozen=True, slots=True, kw_only=True)
class GetRequest(_QRRequest):
    """A C-GET request (PS3.7 §9.1.3, PS3.4 C.4.3)."""

    command: CGetRQ

    @property
    def model(self) -> QRModel:
        return "patient" if _MODEL_OF.get(self.command.affected_sop_class_uid) == "patient" \
            else "study"


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveRequest(_QRRequest):
    """A C-MOVE request (PS3.7 §9.1.4, PS3.4 C.4.2); the destination is known to the server."""

    command: CMoveRQ

    @property
    def model(self) -> QRModel:
        return "patient" if _MODEL_OF.get(self.command.affected_sop_class_uid) == "patient" \
            else "study"

    @property
    def destination(self) -> str:
        return self.command.move_destination.strip()


FindItem = Any
"""A Dataset (a pending match) or a (Status, Dataset | None) pair; a non-pending status ends."""
RetrieveItem = Any
"""A Part 10 path (str or Path), a pydicom Dataset, or a Status that ends the retrieve."""


class FindHandler(Protocol):
    def __call__(self, request: FindRequest, /) -> AsyncIterator[FindItem]: ...


class GetHandler(Protocol):
    def __call__(self, request: GetRequest, /) -> AsyncIterator[RetrieveItem]: ...


class MoveHandler(Protocol):
    def __call__(self, request: MoveRequest, /) -> AsyncIterator[RetrieveItem]: ...


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
            if self.cancelled and (current is None or not current.cancelling()):
                return Status.CANCEL
            raise
        finally:
            self.task = None


def cancel_operation(assoc: ServerAssociation, msg: CCancelRQ) -> None:
    """C-CANCEL-RQ: stop the operation it names; it answers with status 0xFE00 itself."""
    op = assoc.operations.get(msg.message_id_being_responded_to)
    if op is not None:
        op.cancel()


async def _close(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()


def _send_soon(assoc: Association, context_id: int, msg: Message, body: bytes | None) -> Any:
    """Send a message even if our task is cancelled meanwhile: a half-sent message would
    corrupt the stream, so it always completes (or the association ends)."""
    task = asyncio.ensure_future(assoc.send_message(context_id, msg, body))
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return asyncio.shield(task)


async def run_query_retrieve(assoc: ServerAssociation, context_id: int,
                             msg: CFindRQ | CGetRQ | CMoveRQ,
                             data: IncomingData | None) -> tuple[Message, bytes | None]:
    """Perform one C-FIND, C-GET or C-MOVE; returns the final response and its data set, for
    the caller to send (pending responses are sent here)."""
    assert assoc.info is not None and assoc.negotiated is not None
    server = assoc.server
    handler: Any = {CFindRQ: server.find_handler, CGetRQ: server.get_handler,
                    CMoveRQ: server.move_handler}[type(msg)]
    rsp_type: Any = {CFindRQ: CFindRSP, CGetRQ: CGetRSP, CMoveRQ: CMoveRSP}[type(msg)]
    base = {"message_id_being_responded_to": msg.message_id,
            "affected_sop_class_uid": msg.affected_sop_class_uid}
    ts = assoc.negotiated.contexts[context_id].transfer_syntax
    try:
        raw = await read_identifier(data)
        identifier = decode_identifier(raw, ts)
    except (ValueError, DimseError) as exc:
        log.warning("association %d: %s", assoc.id, exc)
        return rsp_type(status=Status(0xA900), error_comment=str(exc)[:64], **base), None
    if handler is None:
        return rsp_type(status=Status.SOP_CLASS_NOT_SUPPORTED, **base), None
    destination = None
    if isinstance(msg, CMoveRQ):
        destination = server.move_destinations.get(msg.move_destination.strip())
        if destination is None:
            log.warning("association %d: C-MOVE to unknown destination %r", assoc.id,
                        msg.move_destination)
            return rsp_type(status=Status.MOVE_DESTINATION_UNKNOWN, **base), None
    op = Operation()
    assoc.operations[msg.message_id] = op
    fields = {"association": assoc.info, "context_id": context_id, "identifier": identifier,
              "command": msg}
    try:
        if isinstance(msg, CFindRQ):
            return await _find(assoc, op, handler(FindRequest(**fields)), context_id, ts,
                               base), None
        request = (GetRequest if isinstance(msg, CGetRQ) else MoveRequest)(**fields)
        target = None
        if isinstance(msg, CMoveRQ) and destination is not None:
            target = (msg.move_destination.strip(), destination)
        return await _retrieve(assoc, op, handler(request), context_id, ts, base, rsp_type,
                               target)
    finally:
        assoc.operations.pop(msg.message_id, None)


async def _find(assoc: ServerAssociation, op: Operation, matches: Any, context_id: int,
                ts: str, base: dict[str, Any]) -> Message:
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

    try:
        status = await op.run(work())
    except (AssociationAborted, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("association %d: C-FIND handler failed", assoc.id)
        status = Status(0xC000)
    return CFindRSP(status=status, **base)


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


def _sop_of(item: Any) -> tuple[str, str, str]:
    """(SOP class, SOP instance, transfer syntax) of a path or Dataset."""
    if isinstance(item, str | Path):
        from aiodicom.aio.part10 import read_part10_info

        info = read_part10_info(Path(item))
        return info.sop_class_uid, info.sop_instance_uid, info.transfer_syntax_uid
    meta = getattr(item, "file_meta", None)
    ts = str(meta.TransferSyntaxUID) if meta is not None and "TransferSyntaxUID" in meta else ""
    return str(item.SOPClassUID), str(item.SOPInstanceUID), ts or EXPLICIT_VR_LITTLE_ENDIAN


async def _retrieve(assoc: ServerAssociation, op: Operation, items: Any, context_id: int,
                    ts: str, base: dict[str, Any], rsp_type: Any,
                    destination: tuple[str, MoveDestination] | None,
                    ) -> tuple[Message, bytes | None]:
    try:
        collected = await op.run(_collect(items))
    except (AssociationAborted, asyncio.CancelledError):
        raise
    except Exception:
        log.exception("association %d: %s handler failed", assoc.id, rsp_type.__name__[:-4])
        return rsp_type(status=Status(0xC000), **base), None
    if isinstance(collected, Status):
        return rsp_type(status=collected, **base), None
    counts = {"completed": 0, "failed": 0, "warning": 0}
    target: Association = assoc
    originator = None
    if destination is not None:
        assert assoc.info is not None
        originator = (assoc.info.calling_ae_title, base["message_id_being_responded_to"])
        try:
            target = await _open_destination(assoc, destination, collected)
        except (DicomError, OSError, ValueError) as exc:
            log.warning("association %d: C-MOVE destination %r unreachable: %s",
                        assoc.id, destination[0], exc)
            counts["failed"] = len(collected)
            return rsp_type(status=Status(0xA702), **_counts(counts, None), **base), None
    failed: list[str] = []
    try:
        for index, item in enumerate(collected):
            if op.cancelled:
                break
            status = await _suboperation(target, item, originator, target is assoc)
            key = {StatusCategory.SUCCESS: "completed",
                   StatusCategory.WARNING: "warning"}.get(status.category, "failed")
            counts[key] += 1
            if key == "failed" and (uid := _uid_of(item)) is not None:
                failed.append(uid)
            remaining = len(collected) - index - 1
            if remaining and not op.cancelled:
                await _send_soon(assoc, context_id, rsp_type(
                    status=Status.PENDING, **_counts(counts, remaining), **base), None)
    finally:
        if target is not assoc:
            await _close_destination(target)
    return _final(counts, failed, len(collected), op.cancelled, ts, base, rsp_type)


def _final(counts: dict[str, int], failed: list[str], total: int, cancelled: bool, ts: str,
           base: dict[str, Any], rsp_type: Any) -> tuple[Message, bytes | None]:
    """The final C-GET/C-MOVE response (PS3.4 C.4.2.1.5, C.4.3.1.4)."""
    done = sum(counts.values())
    if cancelled and done < total:
        status = Status.CANCEL
    elif total and counts["failed"] == total:
        status = Status(0xA702)
    elif counts["failed"] or counts["warning"]:
        status = Status(0xB000)
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


async def _suboperation(target: Association, item: Any, originator: tuple[str, int] | None,
                        own: bool) -> Status:
    """One C-STORE sub-operation; a failure status if it could not be sent."""
    try:
        return await target.send_store(item, move_originator=originator)
    except AssociationAborted:
        if own:  # the requestor is gone: nobody to answer
            raise
        log.warning("C-MOVE destination association ended: sub-operation failed")
    except (DicomError, OSError, ValueError) as exc:
        log.warning("C-STORE sub-operation failed: %s", exc)
    return Status(0xC000)


def _uid_of(item: Any) -> str | None:
    """The SOP Instance UID of an item, None if it has no readable, valid one."""
    try:
        uid = _sop_of(item)[1]
    except Exception:
        return None
    return uid if is_valid_uid(uid) else None


async def _open_destination(assoc: ServerAssociation,
                            destination: tuple[str, MoveDestination],
                            items: list[Any]) -> Association:
    """A new association to the C-MOVE destination proposing the items' SOP classes."""
    from aiodicom.aio.client import open_association
    from aiodicom.settings import AssociationSettings

    wanted: dict[str, list[str]] = {}
    for item in items:
        sop_class, _, ts = _sop_of(item)
        syntaxes = wanted.setdefault(sop_class, [])
        for each in (ts, *_SYNTAXES):
            if each not in syntaxes:
                syntaxes.append(each)
    title, address = destination
    tls = address[2] if len(address) > 2 else None
    settings = assoc.server.settings
    return await open_association(
        address[0], address[1], called_ae_title=title, contexts=list(wanted.items())[:128],
        settings=AssociationSettings(ae_title=settings.ae_title, timeouts=settings.timeouts),
        tls=tls,
    )


async def _close_destination(target: Association) -> None:
    release: Callable[[], Awaitable[None]] | None = getattr(target, "release", None)
    try:
        if release is not None:
            await release()
    except (DicomError, OSError):
        target.abort()
