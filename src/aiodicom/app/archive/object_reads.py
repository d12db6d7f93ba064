"""Reading instances back from the object store: C-GET/C-MOVE and storage commitment.

Retrieve: the server's C-STORE sub-operations send Part 10 *files* (streamed from disk,
never loaded whole; aio/qr_service.py), so each object a retrieve names is first copied,
streamed in bounded chunks, to a private staging directory (mode 0700), one file per
object. A staged file is deleted as soon as the retrieve lets go of it (a finalizer on the
path object the retrieve holds), and the whole directory when the server closes the store;
a retrieve therefore needs local disk for the instances it sends at once, not for the
archive.

Storage commitment (PS3.4 J) answers from the store, as the local backend answers from
its files: an instance is committed when its object exists with the SOP class asked for
and was sent by the AE title asking (its File Meta's Source AE Title). The index names the
object. An instance it does not list yet is, first, one this process acknowledged and
has not indexed: the index writer is waited for (`index_writer.settled`) and the index
asked again; then (another node's instance, its row not written yet) the prefix is listed,
at most `LIST_PAGES` pages of `LIST_CHUNK` keys per request, so a peer asking about UIDs
that do not exist cannot make each N-ACTION list the whole archive. What is still not
found is 0x0112 (no such object instance) when the listing was complete, and 0x0110
(processing failure: ask again later) when the pages ran out first: an instance that may
exist is never reported as gone. A store failure while checking reports 0x0110 too, never
a commitment we could not verify.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import logging
import os
import shutil
import tempfile
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path, PosixPath
from typing import TYPE_CHECKING, Any

from aiodicom.aio.commitment import (
    CommitFailure,
    CommitHandler,
    CommitRequest,
    CommitResult,
    FailureReason,
    Reference,
)
from aiodicom.core.part10 import FileMeta, NotPart10Error, read_file_meta

if TYPE_CHECKING:
    from aiodicom.app.archive.index import Index
    from aiodicom.app.archive.object_storage import ObjectStorage

__all__ = ["ObjectReader", "instance_depth", "list_instances", "make_object_commit_handler",
           "read_head"]

log = logging.getLogger("aiodicom.object_storage")

META_RANGE = 64 * 1024
"""Bytes fetched to read an object's File Meta Information (preamble and group 0002)."""
FETCH_CHUNK = 1024 * 1024
"""Bytes per chunk when copying an object to its staging file."""
CHECK_CONCURRENCY = 8
"""Objects whose meta is fetched at once for one commitment request."""
LIST_CHUNK = 1000
"""Keys per listing page (the stores' own maximum page)."""
LIST_PAGES = 2
"""Listing pages one commitment request may read to find instances the index lacks."""


class _StagedPath(PosixPath):
    """A staged file's path; the file is removed when the last reference goes."""


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


async def _items(stream: Any) -> AsyncIterator[Any]:
    """An obstore stream's items. Its exhausted ``__anext__`` future keeps the final
    StopAsyncIteration, whose traceback would hold the awaiting frame (and what that frame
    refers to: a staged path) in a cycle through Rust objects the collector cannot see;
    the traceback is dropped here so each frame is freed when it returns."""
    while True:
        try:
            item = await stream.__anext__()
        except StopAsyncIteration as exc:
            exc.__traceback__ = None
            return
        yield item


def instance_depth(prefix: str) -> int:
    """The number of ``/`` in the key of an instance, ``PREFIX/{Study}/{Series}/{SOP}.dcm``."""
    return prefix.count("/") + 3 if prefix else 2


def list_instances(store: Any, prefix: str) -> Iterator[list[Any]]:
    """The objects laid out as instances under ``prefix``, a listing page at a time (each
    obstore's ObjectMeta: path, size, last_modified...); blocking, for a worker thread."""
    import obstore

    depth = instance_depth(prefix)
    for page in obstore.list(store, prefix=f"{prefix}/" if prefix else None, chunk_size=1000):
        yield [meta for meta in page
               if meta["path"].endswith(".dcm") and meta["path"].count("/") == depth]


def read_head(store: Any, key: str, length: int = META_RANGE) -> bytes:
    """The first ``length`` bytes of the object ``key`` (one range GET; fewer if it is
    shorter); blocking, for a worker thread. Store failures raise (NotFoundError...)."""
    import obstore

    return bytes(obstore.get_range(store, key, start=0, length=length))


class ObjectReader:
    """Reads of one `ObjectStorage`: staged copies for retrieves, File Meta for commitment."""

    def __init__(self, storage: ObjectStorage, staging_root: Path | None = None) -> None:
        self.storage = storage
        self._staging_root = staging_root
        self._staging: Path | None = None
        self._counter = itertools.count()

    def _staging_dir(self) -> Path:
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix="aiodicom-retrieve-",
                                                  dir=self._staging_root))
        return self._staging

    async def fetch(self, key: str) -> Path:
        """A local copy of the object ``key`` (a Part 10 file) for a C-STORE
        sub-operation; deleted when the returned path is no longer referenced."""
        import obstore

        name = key.rsplit("/", 3)[-3:]  # {study}/{series}/{sop}.dcm, for the audit trail
        target = self._staging_dir().joinpath(str(next(self._counter)), *name)
        await asyncio.to_thread(target.parent.mkdir, parents=True, exist_ok=True)
        result = await obstore.get_async(self.storage.store, key)
        fp = await asyncio.to_thread(open, target, "wb")
        try:
            async for chunk in _items(result.stream(min_chunk_size=FETCH_CHUNK)):
                await asyncio.to_thread(fp.write, chunk)
        except BaseException:
            await asyncio.to_thread(fp.close)
            _remove(str(target))
            raise
        await asyncio.to_thread(fp.close)
        del result
        staged = _StagedPath(target)
        weakref.finalize(staged, _remove, str(target))
        return staged

    async def read_meta(self, key: str) -> FileMeta | None:
        """The File Meta Information of the object ``key``; None if there is no such
        object or it is not Part 10. Store failures raise."""
        import obstore
        from obstore.exceptions import NotFoundError

        try:
            head = await obstore.get_range_async(self.storage.store, key, start=0,
                                                 length=META_RANGE)
        except (FileNotFoundError, NotFoundError):
            return None
        try:
            return read_file_meta(io.BytesIO(bytes(head)))
        except NotPart10Error:
            return None

    async def find_keys(self, uids: set[str],
                        max_pages: int | None = None) -> tuple[dict[str, str], bool]:
        """Objects named ``{uid}.dcm`` two levels under the prefix, for the UIDs wanted
        (listing the prefix, at most ``max_pages`` pages when given; names come from the
        listing, never from the peer), and whether the listing was read to its end (or
        every UID found): only then is a UID not found known to be absent."""
        import obstore

        wanted = {f"{uid}.dcm": uid for uid in uids}
        found: dict[str, str] = {}
        prefix = self.storage.url.prefix
        depth = instance_depth(prefix)
        stream = obstore.list(self.storage.store, prefix=f"{prefix}/" if prefix else None,
                              chunk_size=LIST_CHUNK)
        pages = 0
        async for batch in _items(stream):
            pages += 1
            for meta in batch:
                path = meta["path"]
                uid = wanted.get(path.rsplit("/", 1)[-1])
                if uid is not None and path.count("/") == depth:
                    found[uid] = path
            if len(found) == len(wanted):
                return found, True
            if max_pages is not None and pages >= max_pages:
                log.debug("storage commitment: %d UID(s) not in the index nor in the first "
                          "%d listing page(s): answered 0x0110 (ask again later)",
                          len(wanted) - len(found), pages)
                return found, False
        return found, True

    def close(self) -> None:
        """Remove the staging directory and whatever is still in it."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None


def make_object_commit_handler(reader: ObjectReader,
                               index: Callable[[], Index | None]) -> CommitHandler:
    """Storage commitment answered from the object store (``index()`` may be None)."""

    async def commit(request: CommitRequest) -> CommitResult:
        committed, failed = await check_object_references(
            reader, index(), request.references, request.association.calling_ae_title)
        return CommitResult(transaction_uid=request.transaction_uid,
                            committed=tuple(committed), failed=tuple(failed))

    return commit


async def check_object_references(
    reader: ObjectReader, index: Index | None, references: Iterable[Reference],
    requester: str | None = None,
) -> tuple[list[Reference], list[CommitFailure]]:
    """(committed, failed) for ``references`` from the objects in the store; with
    ``requester``, only objects that AE title sent count."""
    from aiodicom.app.archive.commitment import check_meta
    from aiodicom.app.archive.index_writer import settled
    from aiodicom.app.archive.object_storage import store_errors

    refs = list(references)
    keys: dict[str, str] = {}

    async def locate(uids: set[str]) -> None:
        if index is not None:
            idx = index
            located = await asyncio.to_thread(lambda: {uid: idx.locate(uid) for uid in uids})
            keys.update({uid: str(path) for uid, path in located.items() if path is not None})

    await locate({r.sop_instance_uid for r in refs})
    missing = {r.sop_instance_uid for r in refs if r.sop_instance_uid not in keys}
    if missing and index is not None:  # acknowledged here, its row still queued?
        await settled(index.key)
        await locate(missing)
        missing -= keys.keys()
    limit = asyncio.Semaphore(CHECK_CONCURRENCY)

    listed_all = True

    async def one(ref: Reference) -> int | None:
        key = keys.get(ref.sop_instance_uid)
        if key is None:
            return (FailureReason.NO_SUCH_OBJECT_INSTANCE if listed_all
                    else FailureReason.PROCESSING_FAILURE)
        async with limit:
            meta = await reader.read_meta(key)
        return check_meta(meta, ref, requester)

    try:
        if missing:
            found, listed_all = await reader.find_keys(missing, max_pages=LIST_PAGES)
            keys.update(found)
        reasons: list[Any] = await asyncio.gather(*(one(ref) for ref in refs))
    except store_errors() as exc:  # the store failed: nothing verified, ask again later
        log.warning("storage commitment: the object store failed: %s", exc)
        reasons = [FailureReason.PROCESSING_FAILURE] * len(refs)
    committed = [ref for ref, reason in zip(refs, reasons, strict=True) if reason is None]
    failed = [CommitFailure(reference=ref, reason=reason)
              for ref, reason in zip(refs, reasons, strict=True) if reason is not None]
    return committed, failed
