"""What a handler is given and what it returns: request types and handler Protocols.

A server (and, for C-GET sub-operations, a client) calls one async handler per DIMSE
request. Handlers get a typed request: who is on the other side (`AssociationInfo`), the
command, and for C-STORE the data set as it arrives. C-ECHO and C-STORE handlers return a
`Status`; C-FIND, C-GET and C-MOVE handlers are async iterators (see their Protocols).

`run_handler` is the one place a handler's failure becomes a status: an exception is
logged once with its traceback and answered with the failure status the service defines,
never silenced and never allowed to take the association down.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiodicom.aio.association import AssociationInfo, IncomingData
from aiodicom.aio.commitment import CommitHandler
from aiodicom.core.dimse import CEchoRQ, CFindRQ, CGetRQ, CMoveRQ, CStoreRQ, Message, Status
from aiodicom.core.part10 import decode_dataset
from aiodicom.core.pdu import AAssociateRJ, AAssociateRQ
from aiodicom.core.qr import QRModel, model_of
from aiodicom.errors import AssociationAborted

__all__ = [
    "Authorizer",
    "EchoHandler",
    "EchoRequest",
    "FindHandler",
    "FindItem",
    "FindRequest",
    "GetHandler",
    "GetRequest",
    "Handlers",
    "MoveHandler",
    "MoveRequest",
    "RequestFilter",
    "RetrieveItem",
    "StoreHandler",
    "StoreRequest",
    "StoreSink",
    "StoreWriter",
    "async_echo_success",
    "run_handler",
]

log = logging.getLogger("aiodicom.handlers")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


async def run_handler(
    awaitable: Awaitable[T], *, failure: Status, what: str, association_id: int
) -> T | Status:
    """Await a handler's work; an exception becomes ``failure`` and one logged traceback.

    `AssociationAborted` and cancellation pass through: the association is gone, there is
    nobody to answer.
    """
    try:
        return await awaitable
    except AssociationAborted:
        raise
    except Exception:
        log.exception("association %d: %s handler failed", association_id, what)
        return failure


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoRequest:
    """A C-ECHO request (PS3.7 §9.1.5)."""

    association: AssociationInfo
    command: CEchoRQ


class StoreWriter(Protocol[T_co]):
    """One data set being written by a `StoreSink`: fragments in, then commit or abort."""

    def write(self, data: memoryview, /) -> None: ...

    def commit(self) -> T_co: ...

    def abort(self) -> None: ...


class StoreSink(Protocol[T_co]):
    """Where `StoreRequest.save` streams a data set (the bundled server's `Storage` is one).

    ``begin`` validates what it is given before anything is written; ``commit`` makes the
    instance visible only once it is whole.
    """

    def begin(
        self, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
        source_ae_title: str, receiving_ae_title: str,
    ) -> StoreWriter[T_co]: ...


@dataclass(slots=True, kw_only=True)
class StoreRequest:
    """A C-STORE request whose data set is still arriving.

    A handler takes the data set the way it prefers: as memoryview fragments
    (`fragments`, zero-copy, bounded memory), written to a sink (`save`), or decoded
    (`dataset`, which holds it whole in memory). If it takes none, the data set is read and
    dropped after the handler returns.
    """

    association: AssociationInfo
    command: CStoreRQ
    context_id: int
    transfer_syntax: str
    data: IncomingData

    @property
    def sop_class_uid(self) -> str:
        return self.command.affected_sop_class_uid

    @property
    def sop_instance_uid(self) -> str:
        return self.command.affected_sop_instance_uid

    def fragments(self) -> AsyncIterator[memoryview]:
        """The data set as it arrives, one memoryview per PDV, never joined."""
        return self.data.__aiter__()

    async def dataset(self) -> Any:
        """The data set decoded by pydicom in the context's transfer syntax (deflated and
        big endian included); held whole in memory, so use it for small objects. Raises
        `aiodicom.core.part10.DatasetCodecError` if it does not parse."""
        from pydicom.uid import UID

        views: list[memoryview] = []
        async for batch in self.data.chunks():
            views.extend(batch)
        ds = decode_dataset(views, self.transfer_syntax)
        ds.file_meta.MediaStorageSOPClassUID = UID(self.sop_class_uid)
        ds.file_meta.MediaStorageSOPInstanceUID = UID(self.sop_instance_uid)
        return ds

    async def save(self, sink: StoreSink[T]) -> T:
        """Stream the data set into ``sink``; on any failure the writer is aborted, so no
        partial instance is ever visible."""
        writer = sink.begin(
            sop_class_uid=self.sop_class_uid,
            sop_instance_uid=self.sop_instance_uid,
            transfer_syntax_uid=self.transfer_syntax,
            source_ae_title=self.association.calling_ae_title,
            receiving_ae_title=self.association.called_ae_title,
        )
        try:
            async for batch in self.data.chunks():
                for view in batch:
                    writer.write(view)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()


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
        return model_of(self.command.affected_sop_class_uid)


@dataclass(frozen=True, slots=True, kw_only=True)
class GetRequest(_QRRequest):
    """A C-GET request (PS3.7 §9.1.3, PS3.4 C.4.3)."""

    command: CGetRQ

    @property
    def model(self) -> QRModel:
        return model_of(self.command.affected_sop_class_uid)


@dataclass(frozen=True, slots=True, kw_only=True)
class MoveRequest(_QRRequest):
    """A C-MOVE request (PS3.7 §9.1.4, PS3.4 C.4.2); the destination is known to the server."""

    command: CMoveRQ

    @property
    def model(self) -> QRModel:
        return model_of(self.command.affected_sop_class_uid)

    @property
    def destination(self) -> str:
        return self.command.move_destination.strip()


FindItem = Any
"""A Dataset (a pending match) or a (Status, Dataset | None) pair; a non-pending status ends."""
RetrieveItem = Any
"""A Part 10 path (str or Path), a pydicom Dataset, or a Status that ends the retrieve."""


class EchoHandler(Protocol):
    def __call__(self, request: EchoRequest, /) -> Awaitable[Status]: ...


class StoreHandler(Protocol):
    def __call__(self, request: StoreRequest, /) -> Awaitable[Status]: ...


class FindHandler(Protocol):
    def __call__(self, request: FindRequest, /) -> AsyncIterator[FindItem]: ...


class GetHandler(Protocol):
    def __call__(self, request: GetRequest, /) -> AsyncIterator[RetrieveItem]: ...


class MoveHandler(Protocol):
    def __call__(self, request: MoveRequest, /) -> AsyncIterator[RetrieveItem]: ...


async def async_echo_success(request: EchoRequest) -> Status:
    """The default C-ECHO handler: the Verification service always succeeds."""
    return Status.SUCCESS


@dataclass(frozen=True, slots=True, kw_only=True)
class Handlers:
    """A server's handler per DIMSE service; a service without one is refused (0x0122)."""

    echo: EchoHandler = async_echo_success
    """None, like the default, means the Verification service always succeeds."""
    store: StoreHandler | None = None
    find: FindHandler | None = None
    get: GetHandler | None = None
    move: MoveHandler | None = None
    commit: CommitHandler | None = None
    """Storage commitment (PS3.4 J, `aiodicom.aio.commitment`): N-ACTION-RQ."""

    def __post_init__(self) -> None:
        if self.echo is None:
            object.__setattr__(self, "echo", async_echo_success)


Authorizer = Callable[[AssociationInfo, AAssociateRQ], Awaitable[AAssociateRJ | None]]
"""Called before negotiation; returns an A-ASSOCIATE-RJ to refuse, or None to go on."""

RequestFilter = Callable[[AssociationInfo, Message], Status | None]
"""Called for each request before its handler: a Status refuses it (e.g. 0x0124), None lets
it run. See `aiodicom.app.server.policy.make_request_filter`."""
