"""Received C-STORE data sets written to an object store (Azure Blob, S3, GCS) via obstore.

Theory of operation, the object-store twin of `storage.Part10Writer`: `ObjectStorage.begin`
validates the command exactly as the local backend does (`check_request`) and starts a
buffer with the File Meta Information. P-DATA fragments are appended to that buffer; when
it holds one part (`part_size`, at least 5 MiB, the S3 minimum), the head of the data set
is checked on the buffered bytes (UIDs against the command, Study/Series UIDs valid: the
same `check_header` as on disk, never by reading the object back), which names the object
``PREFIX/{Study}/{Series}/{SOP}.dcm`` (the disk layout), and a multipart upload starts;
every later full part is handed to it (the bytearray itself, never copied) and the handler
waits while the queue is full. Memory per store is thus at most about five parts whatever
the data set's size (the part filling, the part queued, two uploading; 4.5 measured by
tests/app/archive/test_object_storage_memory.py). A data set under one part is one PUT.

The object becomes visible only when complete: a multipart upload is completed at commit
and aborted on any failure (obstore aborts it when the part iterator raises), so no reader
ever sees a partial instance. S3 and GCS drop the parts of an aborted upload; on Azure,
the blocks of an aborted upload stay uncommitted (never readable or listed by GET/HEAD/LIST)
until the service discards them (7 days), as object_store's Azure abort is a no-op.

Duplicates (`DuplicatePolicy`) are answered by the store: KEEP and REJECT use a
conditional PUT (``If-None-Match: *``) for a single-part instance, and a HEAD before the
upload for a multipart one (obstore cannot make a multipart completion conditional: two
simultaneous first stores of one instance may both succeed, the later one replacing the
earlier). OVERWRITE writes without asking, and reports STORED.

Any store failure (unreachable, refused, timed out after `open_store`'s bounded retries)
is a `StorageError` with `StorageFailure.OUT_OF_RESOURCES`, which the server answers
0xA700: the modality keeps the instance and retries later.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiodicom.app.archive.head import HeaderError, header_from_prefix, read_header
from aiodicom.app.archive.storage import (
    CheckedRequest,
    DuplicatePolicy,
    StorageError,
    StorageFailure,
    StoredInstance,
    StoreOutcome,
    check_header,
    check_request,
    invalid_dataset,
)
from aiodicom.app.objstore import StoreURL, open_store, parse_store_url
from aiodicom.core.uids import validate_uid

if TYPE_CHECKING:
    from obstore.store import ObjectStore

    from aiodicom.aio.commitment import CommitHandler
    from aiodicom.aio.requests import StoreRequest
    from aiodicom.app.archive.index import Index
    from aiodicom.app.archive.object_reads import ObjectReader

__all__ = [
    "MIN_PART_SIZE",
    "PART_SIZE",
    "ObjectStorage",
    "ObjectStorageSettings",
    "ObjectWriter",
    "StoreUnavailable",
]

log = logging.getLogger("aiodicom.object_storage")

MIB = 1024 * 1024
MIN_PART_SIZE = 5 * MIB
"""S3's (and moto's) smallest part but the last (``EntityTooSmall`` below it)."""
PART_SIZE = 8 * MIB
"""The default part: a 1 GiB data set is 128 parts (S3 allows 10,000)."""


class StoreUnavailable(StorageError):
    """The object store failed or could not be reached; nothing was stored (0xA700)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, failure=StorageFailure.OUT_OF_RESOURCES)


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectStorageSettings:
    """Where and how to store received instances in an object store."""

    url: str
    """``az://container/prefix``, ``s3://bucket/prefix`` or ``gs://bucket/prefix``."""
    duplicates: DuplicatePolicy = DuplicatePolicy.OVERWRITE
    part_size: int = PART_SIZE
    """Bytes per multipart part (>= 5 MiB); also what a store holds in memory per part."""
    retry_timeout: float = 15.0
    """Seconds a failing request is retried before the C-STORE fails (`open_store`)."""


def store_errors() -> tuple[type[BaseException], ...]:
    """What obstore raises for a store-side failure (imported lazily)."""
    from obstore.exceptions import BaseError

    return (BaseError, OSError, TimeoutError)


class ObjectStorage:
    """Instances as objects ``PREFIX/{Study}/{Series}/{SOP}.dcm`` in one bucket/container."""

    def __init__(self, settings: ObjectStorageSettings, *,
                 environ: Mapping[str, str] | None = None,
                 store: ObjectStore | None = None) -> None:
        if settings.part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (5 MiB: the "
                             f"S3 minimum), got {settings.part_size}")
        self.settings = settings
        self.url: StoreURL = parse_store_url(settings.url)
        if store is None:
            store, _ = open_store(settings.url, environ=environ,
                                  retry_timeout=settings.retry_timeout)
        self.store: ObjectStore = store
        self._uploads: set[asyncio.Task[Any]] = set()
        self._reader: ObjectReader | None = None

    @property
    def reader(self) -> ObjectReader:
        """Reads back (retrieve staging, commitment), created on first use."""
        if self._reader is None:
            from aiodicom.app.archive.object_reads import ObjectReader

            self._reader = ObjectReader(self)
        return self._reader

    async def retrieve_file(self, recorded: str) -> Path:
        """A staged local copy of the object the index recorded (its key)."""
        return await self.reader.fetch(recorded)

    def commit_handler(self, index: Callable[[], Index | None]) -> CommitHandler:
        """Storage commitment answered from the objects (app/archive/object_reads.py)."""
        from aiodicom.app.archive.object_reads import make_object_commit_handler

        return make_object_commit_handler(self.reader, index)

    @property
    def location(self) -> str:
        """The URL, for logs."""
        return str(self.url)

    def key_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> str:
        """The object key of an instance; every UID must be valid (they become names)."""
        return self.url.key(
            f"{validate_uid(study_uid, 'Study Instance UID')}/"
            f"{validate_uid(series_uid, 'Series Instance UID')}/"
            f"{validate_uid(sop_instance_uid, 'SOP Instance UID')}.dcm")

    def begin(self, *, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
              source_ae_title: str, receiving_ae_title: str = "AIODICOM") -> ObjectWriter:
        """Start an instance: validate first (`InvalidStorageRequest`), nothing sent yet."""
        checked = check_request(sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
                                transfer_syntax_uid=transfer_syntax_uid,
                                source_ae_title=source_ae_title,
                                receiving_ae_title=receiving_ae_title)
        return ObjectWriter(self, checked)

    async def save(self, request: StoreRequest) -> StoredInstance:
        """Stream a C-STORE's data set into the store (the `StorageBackend` entry point).

        On any failure, or if the association ends mid-data-set, the upload is aborted and
        nothing is visible; the exception propagates (`StorageError` for the store's own).
        """
        writer = self.begin(sop_class_uid=request.sop_class_uid,
                            sop_instance_uid=request.sop_instance_uid,
                            transfer_syntax_uid=request.transfer_syntax,
                            source_ae_title=request.association.calling_ae_title,
                            receiving_ae_title=request.association.called_ae_title)
        try:
            async for batch in request.data.chunks():
                for view in batch:
                    if writer.write(view):
                        await writer.drain()
            return await writer.commit()
        except BaseException:
            writer.abort()
            raise

    async def exists(self, key: str) -> bool:
        """True if the object ``key`` is there (HEAD); store failures raise."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            await obstore.head_async(self.store, key)
        except (FileNotFoundError, NotFoundError):
            return False
        return True

    def _track(self, task: asyncio.Task[Any]) -> None:
        self._uploads.add(task)
        task.add_done_callback(self._uploads.discard)

    async def settle(self) -> None:
        """Wait until every upload this process started has completed or been aborted."""
        while self._uploads:
            await asyncio.gather(*list(self._uploads), return_exceptions=True)

    async def close(self) -> None:
        """Let aborts finish (their parts are dropped); remove the retrieve staging."""
        await self.settle()
        if self._reader is not None:
            self._reader.close()


class _End:
    """Queued after the last part: the iterator stops, the upload completes."""


class _Aborted(Exception):
    """Raised into the upload by its own part iterator: obstore then aborts it."""


class _Upload:
    """One multipart upload, fed part by part from the event loop.

    obstore's ``put_async`` pulls parts from this async iterator (``__anext__`` runs on
    our loop) and uploads them; when it raises, obstore aborts the multipart upload before
    ``put_async`` fails. The queue holds one part: `send` waits while the previous one has
    not been taken, which is the back-pressure that bounds memory.
    """

    def __init__(self, storage: ObjectStorage, key: str) -> None:
        import obstore

        self.key = key
        self._queue: asyncio.Queue[bytearray | _End | _Aborted] = asyncio.Queue(maxsize=1)
        self.task = asyncio.ensure_future(obstore.put_async(
            storage.store, key, self, chunk_size=storage.settings.part_size,
            max_concurrency=1, use_multipart=True))
        storage._track(self.task)

    def __aiter__(self) -> _Upload:
        return self

    async def __anext__(self) -> bytearray:
        item = await self._queue.get()
        if isinstance(item, _End):
            raise StopAsyncIteration
        if isinstance(item, _Aborted):
            raise item
        return item

    async def _put(self, item: bytearray | _End) -> None:
        """Queue ``item``, unless the upload failed meanwhile (its error is raised)."""
        if self.task.done():
            self.task.result()  # raises the store's error
            raise _Aborted("the upload ended early")
        put = asyncio.ensure_future(self._queue.put(item))
        try:
            await asyncio.wait({put, self.task}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not put.done():
                put.cancel()
        if not put.done() or put.cancelled():
            self.task.result()
            raise _Aborted("the upload ended early")

    async def send(self, part: bytearray) -> None:
        """Queue a part (obstore takes it as it is: the writer never touches it again)."""
        await self._put(part)

    async def finish(self) -> None:
        """Complete the upload: the object becomes visible now, whole."""
        await self._put(_End())
        await asyncio.shield(self.task)

    def abort(self) -> None:
        """Make the iterator raise: obstore aborts the upload (asynchronously; the task is
        tracked by `ObjectStorage.settle`)."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(_Aborted("aborted"))
        self.task.add_done_callback(_consume)


def _consume(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


class ObjectWriter:
    """One instance being received into the object store: `write`, `drain`, `commit`.

    `write` only appends to the part buffer and says when a part is full; `drain` ships the
    full parts (the first one after the head check, which names the object).
    """

    def __init__(self, storage: ObjectStorage, checked: CheckedRequest) -> None:
        self._storage = storage
        self.sop_class_uid = checked.sop_class_uid
        self.sop_instance_uid = checked.sop_instance_uid
        self.transfer_syntax_uid = checked.transfer_syntax_uid
        self.source_ae_title = checked.source_ae_title
        self._meta_length = len(checked.meta)
        self._buffer = bytearray(checked.meta)
        """The part being filled; full parts move to `_ready` whole (never copied)."""
        self._ready: list[bytearray] = []
        self._part = storage.settings.part_size
        self._upload: _Upload | None = None
        self._attributes: dict[str, str] | None = None
        self._key: str | None = None
        self._exists = False  # KEEP/REJECT found the object: the rest is dropped
        self._finished = False
        self.size = len(checked.meta)
        """Bytes received so far, meta information included."""

    @property
    def finished(self) -> bool:
        return self._finished

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Append one fragment; True when a part is full (then await `drain`)."""
        if self._finished:
            raise StorageError("write after commit or abort: begin a new instance",
                               failure=StorageFailure.STATE)
        view = memoryview(data).cast("B")
        self.size += view.nbytes
        if self._exists:
            return False
        while view.nbytes:
            room = self._part - len(self._buffer)
            self._buffer += view[:room]
            view = view[room:]
            if len(self._buffer) == self._part:
                self._ready.append(self._buffer)
                self._buffer = bytearray()
        return bool(self._ready)

    async def drain(self) -> None:
        """Ship every full part; the first starts the upload once the head is checked."""
        try:
            while self._ready and not self._exists:
                if self._upload is None:
                    await self._start(self._ready[0], complete=False)
                    if self._upload is None:  # an existing object, kept or rejected
                        self._ready.clear()
                        self._buffer = bytearray()
                        return
                await self._upload.send(self._ready.pop(0))
        except BaseException as exc:
            self.abort()
            translated = _translate(exc, self.sop_instance_uid)
            if translated is exc:
                raise
            raise translated from exc

    async def _start(self, first: bytearray, *, complete: bool) -> None:
        """Check the head in ``first`` (the first part, or the whole instance), name the
        object, apply the duplicate policy and (for a multipart instance) open the upload."""
        attributes = self._head(first, complete=complete)
        check_header(attributes, sop_instance_uid=self.sop_instance_uid,
                     sop_class_uid=self.sop_class_uid)
        self._attributes = attributes
        self._key = self._storage.key_for(attributes["StudyInstanceUID"],
                                          attributes["SeriesInstanceUID"],
                                          self.sop_instance_uid)
        if complete:
            return
        if self._storage.settings.duplicates is not DuplicatePolicy.OVERWRITE and \
                await self._storage.exists(self._key):
            self._exists = True
            return
        self._upload = _Upload(self._storage, self._key)

    def _head(self, first: bytearray, *, complete: bool) -> dict[str, str]:
        """`read_header`'s attributes from the buffered bytes (the data set's first part or
        all of it); a head not within the first part is refused, never read back."""
        start, syntax = self._meta_length, self.transfer_syntax_uid
        with memoryview(first) as whole, whole[start:] as head:
            length = head.nbytes
            try:
                found = header_from_prefix(head, length, syntax)  # type: ignore[arg-type]
            except HeaderError:
                found = None
            if found is not None:
                return found
            fp = io.BytesIO(head)
        try:
            return read_header(fp, 0, length, syntax)
        except HeaderError as exc:
            if complete:
                raise invalid_dataset(self.sop_instance_uid, exc) from None
            raise StorageError(
                f"the head of the data set for {self.sop_instance_uid} (up to (0020,0013)) "
                f"is not within its first {self._part // MIB} MiB ({exc}); the object "
                "store backend names the object from it before uploading; nothing was stored",
                failure=StorageFailure.INVALID_DATASET) from None

    async def commit(self) -> StoredInstance:
        """Complete the object (or PUT it whole) and describe it; `StorageError` on any
        failure, with nothing visible."""
        if self._finished:
            raise StorageError("commit after commit or abort: begin a new instance",
                               failure=StorageFailure.STATE)
        await self.drain()
        try:
            outcome = await self._complete()
        except BaseException as exc:
            self.abort()
            translated = _translate(exc, self.sop_instance_uid)
            if translated is exc:
                raise
            raise translated from exc
        self._finished = True
        self._buffer = bytearray()
        assert self._attributes is not None and self._key is not None
        if outcome is None:
            raise StorageError(
                f"SOP instance {self.sop_instance_uid} is already stored and the duplicate "
                "policy is REJECT; nothing was changed", failure=StorageFailure.DUPLICATE)
        if outcome is StoreOutcome.KEPT_EXISTING:
            return await self._kept(self._key)
        return StoredInstance(
            path=Path(self._key),
            sop_class_uid=self.sop_class_uid,
            sop_instance_uid=self.sop_instance_uid,
            transfer_syntax_uid=self.transfer_syntax_uid,
            study_instance_uid=self._attributes["StudyInstanceUID"],
            series_instance_uid=self._attributes["SeriesInstanceUID"],
            size=self.size,
            source_ae_title=self.source_ae_title,
            received_at=time.time(),
            outcome=outcome,
            attributes=self._attributes,
        )

    async def _complete(self) -> StoreOutcome | None:
        """STORED, KEPT_EXISTING, or None for a REJECT duplicate."""
        import obstore

        policy = self._storage.settings.duplicates
        if not self._exists and self._upload is None:  # the whole instance is buffered
            await self._start(self._buffer, complete=True)
            assert self._key is not None
            if policy is DuplicatePolicy.OVERWRITE:
                await obstore.put_async(self._storage.store, self._key, self._buffer,
                                        use_multipart=False)
            else:
                from obstore.exceptions import AlreadyExistsError, PreconditionError

                try:
                    await obstore.put_async(self._storage.store, self._key, self._buffer,
                                            mode="create")
                except (AlreadyExistsError, PreconditionError):
                    self._exists = True
        elif self._upload is not None:
            if self._buffer:
                last, self._buffer = self._buffer, bytearray()
                await self._upload.send(last)
            await self._upload.finish()
        if not self._exists:
            return StoreOutcome.STORED
        return StoreOutcome.KEPT_EXISTING if policy is DuplicatePolicy.KEEP else None

    async def _kept(self, key: str) -> StoredInstance:
        """The object KEEP kept, described from its own first part (as the index describes
        a kept file on disk, which it cannot do for an object: it would look for a local
        file). Reported as STORED so the index learns it: the object may be one whose
        index write was lost (a node killed between the two), and success was answered."""
        import obstore

        from aiodicom.core.part10 import read_file_meta

        unreadable: tuple[type[BaseException], ...] = (HeaderError, ValueError, *store_errors())
        try:
            size = int((await obstore.head_async(self._storage.store, key))["size"])
            first = bytes(await obstore.get_range_async(
                self._storage.store, key, start=0, length=min(size, self._part)))
            fp = io.BytesIO(first)
            meta = read_file_meta(fp)
            syntax = meta.text(0x00020010)
            attributes = read_header(fp, meta.dataset_offset, len(first) - meta.dataset_offset,
                                     syntax)
        except unreadable as exc:
            raise StoreUnavailable(
                f"{self.sop_instance_uid} is already stored (KEEP) but the object {key} could "
                f"not be read back to index it: {type(exc).__name__}: {str(exc)[:300]}"
            ) from exc
        return StoredInstance(
            path=Path(key), sop_class_uid=attributes["SOPClassUID"] or meta.text(0x00020002),
            sop_instance_uid=self.sop_instance_uid, transfer_syntax_uid=syntax,
            study_instance_uid=attributes["StudyInstanceUID"],
            series_instance_uid=attributes["SeriesInstanceUID"], size=size,
            source_ae_title=meta.text(0x00020016), received_at=time.time(),
            outcome=StoreOutcome.STORED, attributes=attributes)

    def abort(self) -> None:
        """Drop the instance: the upload (if any) is aborted; idempotent."""
        self._finished = True
        self._buffer = bytearray()
        self._ready.clear()
        upload, self._upload = self._upload, None
        if upload is not None and not upload.task.done():
            upload.abort()


def _translate(exc: BaseException, sop_instance_uid: str) -> BaseException:
    """A store failure as `StoreUnavailable`; our own errors and cancellation unchanged."""
    if isinstance(exc, StorageError) or not isinstance(exc, Exception):
        return exc
    if isinstance(exc, (_Aborted, *store_errors())):
        return StoreUnavailable(
            f"the object store failed while storing {sop_instance_uid}: "
            f"{type(exc).__name__}: {str(exc)[:300]}; nothing was stored")
    return exc
