"""What a server handler is given, and the handler signatures (typed Protocols)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from io import BytesIO
from typing import TYPE_CHECKING, Any, Protocol

from aiodicom.aio.association import AssociationInfo, IncomingData
from aiodicom.core.dimse import CEchoRQ, CStoreRQ, Status
from aiodicom.core.pdu import AAssociateRJ, AAssociateRQ

if TYPE_CHECKING:
    from aiodicom.app.archive.storage import Storage, StoredInstance

__all__ = [
    "Authorizer",
    "EchoHandler",
    "EchoRequest",
    "StoreHandler",
    "StoreRequest",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class EchoRequest:
    """A C-ECHO request (PS3.7 §9.1.5)."""

    association: AssociationInfo
    command: CEchoRQ


@dataclass(slots=True, kw_only=True)
class StoreRequest:
    """A C-STORE request whose data set is still arriving.

    A handler takes the data set the way it prefers: as memoryview fragments
    (`fragments`, zero-copy, bounded memory), written to storage as a Part 10 file
    (`save`), or decoded (`dataset`, which holds it whole in memory). If it takes none,
    the data set is read and dropped after the handler returns.
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
        """The data set decoded by pydicom (held whole in memory: use for small objects)."""
        from pydicom.dataset import Dataset, FileMetaDataset
        from pydicom.filereader import read_dataset

        buf = BytesIO()
        async for batch in self.data.chunks():
            for view in batch:
                buf.write(view)
        buf.seek(0)
        implicit = self.transfer_syntax == "1.2.840.10008.1.2"
        big = self.transfer_syntax == "1.2.840.10008.1.2.2"
        ds: Dataset = read_dataset(buf, is_implicit_VR=implicit, is_little_endian=not big)
        from pydicom.uid import UID

        meta = FileMetaDataset()
        meta.TransferSyntaxUID = UID(self.transfer_syntax)
        meta.MediaStorageSOPClassUID = UID(self.sop_class_uid)
        meta.MediaStorageSOPInstanceUID = UID(self.sop_instance_uid)
        ds.file_meta = meta
        return ds

    async def save(self, storage: Storage) -> StoredInstance:
        """Stream the data set into ``storage`` as a Part 10 file, renamed in place when whole."""
        writer = storage.begin(
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


class EchoHandler(Protocol):
    def __call__(self, request: EchoRequest, /) -> Awaitable[Status]: ...


class StoreHandler(Protocol):
    def __call__(self, request: StoreRequest, /) -> Awaitable[Status]: ...


Authorizer = Callable[[AssociationInfo, AAssociateRQ], Awaitable[AAssociateRJ | None]]
"""Called before negotiation; returns an A-ASSOCIATE-RJ to refuse, or None to go on."""
