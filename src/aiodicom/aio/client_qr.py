"""The SCU side of Query/Retrieve (PS3.4 Annex C): C-FIND, C-GET and C-MOVE requests.

`FindQuery` iterates the pending identifiers of a C-FIND and sends C-CANCEL-RQ when closed
early; `retrieve` runs a C-GET or C-MOVE to its final status and counts. The C-STORE
sub-operations of a C-GET arrive on the same association and are answered by
`answer_store` with the handler the caller gave.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable
from dataclasses import dataclass
from typing import Any

from aiodicom.aio.association import Association, IncomingData
from aiodicom.aio.requests import StoreHandler, StoreRequest, run_handler
from aiodicom.core.dimse import (
    CCancelRQ,
    CFindRQ,
    CGetRQ,
    CMoveRQ,
    CStoreRQ,
    CStoreRSP,
    Message,
    Status,
    StatusCategory,
)
from aiodicom.core.negotiation import find_context
from aiodicom.core.qr import (
    MAX_IDENTIFIER,
    MODELS,
    InvalidIdentifier,
    QRModel,
    decode_identifier,
    encode_identifier,
)
from aiodicom.errors import AssociationAborted, DicomError

__all__ = ["FindQuery", "RetrieveResult", "answer_store", "retrieve"]


async def _read_identifier(data: IncomingData | None) -> bytes:
    return b"" if data is None else await data.read_bounded(MAX_IDENTIFIER)


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
        ctx = find_context(assoc.require_established(), sop)
        mid = assoc.next_message_id()
        rq = CFindRQ(message_id=mid, affected_sop_class_uid=sop, priority=priority)
        body = encode_identifier(identifier, ctx.transfer_syntax)
        responses = assoc.request_responses(ctx.context_id, rq, body, message_id=mid)
        try:
            async for rsp, data in responses:
                raw = await _read_identifier(data)
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
                   destination: str | None = None,
                   started: Callable[[tuple[int, int]], None] | None = None) -> RetrieveResult:
    """C-GET (``destination`` None) or C-MOVE to ``destination``; waits for the final status.

    ``started`` is told (context ID, message ID) once the request is on its way, so a
    caller can cancel it (C-CANCEL-RQ)."""
    m = MODELS[model]
    sop = m.get if destination is None else m.move
    ctx = find_context(assoc.require_established(), sop)
    mid = assoc.next_message_id()
    rq: Message = (
        CGetRQ(message_id=mid, affected_sop_class_uid=sop, priority=priority)
        if destination is None else
        CMoveRQ(message_id=mid, affected_sop_class_uid=sop, priority=priority,
                move_destination=destination)
    )
    body = encode_identifier(identifier, ctx.transfer_syntax)
    if started is not None:
        started((ctx.context_id, mid))
    last: Any = None
    raw = b""
    async for rsp, data in assoc.request_responses(ctx.context_id, rq, body, message_id=mid):
        raw = await _read_identifier(data)
        last = rsp
    failed_uids: tuple[str, ...] = ()
    if raw:
        with contextlib.suppress(InvalidIdentifier):
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
        status = Status(int(await run_handler(
            handler(request), failure=Status.CANNOT_UNDERSTAND, what="C-STORE",
            association_id=assoc.id)))
    if not data.complete:
        await data.discard()
    with contextlib.suppress(AssociationAborted):
        await assoc.send_message(context_id, CStoreRSP(
            message_id_being_responded_to=msg.message_id,
            affected_sop_class_uid=msg.affected_sop_class_uid,
            affected_sop_instance_uid=msg.affected_sop_instance_uid, status=status))
