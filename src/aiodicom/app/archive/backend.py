"""Storage backends behind one interface: local Part 10 files, or an object store.

`aiodicom serve --storage DIR` keeps the local tree (`storage.Storage`, unchanged);
``--storage az://container/prefix``, ``s3://bucket/prefix`` or ``gs://bucket/prefix``
writes the same ``{Study}/{Series}/{SOP}.dcm`` layout as objects
(`object_storage.ObjectStorage`, credentials from the environment: app/objstore.py).
The server speaks only `StorageBackend`: save a C-STORE, hand a retrieve a file to send,
answer storage commitment, close.

What the index records for an instance is the backend's name for it: a file path
(relative to the root or absolute, as today) or the object key (``prefix/study/series/
sop.dcm``); `StorageBackend.retrieve_file` turns it back into something to send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from aiodicom.app.archive.storage import (
    DuplicatePolicy,
    Storage,
    StorageSettings,
    StoredInstance,
)
from aiodicom.app.objstore import is_store_url

if TYPE_CHECKING:
    from aiodicom.aio.commitment import CommitHandler
    from aiodicom.aio.requests import StoreRequest
    from aiodicom.app.archive.index import Index

__all__ = ["LocalStorage", "StorageBackend", "open_backend"]

log = logging.getLogger("aiodicom.serve")

PURGE_AFTER = 3600.0
"""Seconds after which a temporary file in .incoming is a crash's leftover."""


class StorageBackend(Protocol):
    """What the server needs from where instances are kept."""

    @property
    def location(self) -> str:
        """The directory or URL, for logs."""
        ...

    async def save(self, request: StoreRequest) -> StoredInstance:
        """Stream a C-STORE's data set in; visible only once whole and checked. Raises
        `StorageError` (its ``failure`` chooses the status) with nothing left behind."""
        ...

    async def retrieve_file(self, recorded: str) -> Path:
        """A Part 10 file to send for the index's record (path or key) of an instance."""
        ...

    def commit_handler(self, index: Callable[[], Index]) -> CommitHandler:
        """Storage commitment (PS3.4 J) answered from what this backend holds."""
        ...

    async def close(self) -> None:
        """Finish or abort what is in flight and release resources."""
        ...


class LocalStorage:
    """The local tree ROOT/{Study}/{Series}/{SOP}.dcm (`storage.Storage`), as before."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.root = storage.root

    @property
    def location(self) -> str:
        return str(self.root)

    async def save(self, request: StoreRequest) -> StoredInstance:
        return await request.save(self.storage)

    async def retrieve_file(self, recorded: str) -> Path:
        path = Path(recorded)
        return path if path.is_absolute() else self.root / path

    def commit_handler(self, index: Callable[[], Index]) -> CommitHandler:
        from aiodicom.app.archive.commitment import make_commit_handler

        return make_commit_handler(self.root, index)

    async def close(self) -> None:
        return None


def open_backend(
    location: Path | str,
    *,
    fsync: bool = False,
    duplicates: DuplicatePolicy = DuplicatePolicy.OVERWRITE,
    environ: Mapping[str, str] | None = None,
    part_size: int | None = None,
) -> StorageBackend:
    """The backend ``location`` names: an object-store URL, else a directory (created, and
    its temporary files older than an hour, left by a crash, removed).

    Raises ValueError for a malformed URL and `StorageError` for an unusable directory.
    ``fsync`` applies to files (an object store's completed write is durable by itself).
    """
    if isinstance(location, str) and is_store_url(location):
        from aiodicom.app.archive.object_storage import (
            PART_SIZE,
            ObjectStorage,
            ObjectStorageSettings,
        )

        return ObjectStorage(ObjectStorageSettings(
            url=location, duplicates=duplicates, part_size=part_size or PART_SIZE),
            environ=environ)
    storage = Storage(StorageSettings(root=Path(location), fsync=fsync, duplicates=duplicates))
    purged = storage.purge_incoming(older_than=PURGE_AFTER)
    if purged:
        log.info("removed %d unfinished transfer(s) left by an earlier run", purged)
    return LocalStorage(storage)
