"""The index from an object store: `aiodicom index rebuild az://container/prefix`.

An object-store archive is indexed as a directory is (`Index.rebuild`), from what it
holds: the prefix is listed, and each object laid out as ``PREFIX/{Study}/{Series}/
{SOP}.dcm`` is described from its head, one range GET of its first `META_RANGE` bytes
(again with the first multipart part, `PART_SIZE`, when the header does not end within
them: the backend refuses to store a data set whose header is not in its first part).
Objects that are not usable Part 10 are skipped and logged; a store failure stops the
rebuild before it prunes anything. The same reader describes a KEPT_EXISTING duplicate the
index lacks (`Index.read_kept`).
"""

from __future__ import annotations

import concurrent.futures
import io
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from aiodicom.app.archive.index import Index, describe_part10
from aiodicom.app.archive.object_reads import META_RANGE, list_instances, read_head
from aiodicom.app.archive.storage import StorageError, StorageFailure, StoredInstance

__all__ = ["describe_object", "object_reader", "rebuild_from_store"]

logger = logging.getLogger(__name__)

CONCURRENCY = 8
"""Objects whose head is read at once."""


def describe_object(store: Any, key: str, *, size: int, modified: float) -> StoredInstance:
    """The index's description of the object ``key`` (``size`` bytes), from its head.
    Raises `StorageError` (INVALID_DATASET) if it is not usable Part 10; store failures
    propagate as obstore raises them."""
    from aiodicom.app.archive.object_storage import PART_SIZE

    head = read_head(store, key, META_RANGE)
    try:
        return describe_part10(io.BytesIO(head), Path(key), size=size, modified=modified)
    except StorageError:
        if len(head) >= size:  # the whole object was read: it is not usable
            raise
    head = read_head(store, key, PART_SIZE)
    return describe_part10(io.BytesIO(head), Path(key), size=size, modified=modified)


def object_reader(get_store: Callable[[], Any]) -> Callable[[Path], StoredInstance]:
    """A `Index.read_kept` for objects: the object a key names, described. The store is
    ``get_store()``, called at the first read (the server's own, or one opened from the
    environment). Raises `StorageError` when the object cannot be read."""
    import obstore

    opened: list[Any] = []

    def read(path: Path) -> StoredInstance:
        key = str(path)
        try:
            if not opened:
                opened.append(get_store())
            store = opened[0]
            meta = obstore.head(store, key)
            return describe_object(store, key, size=int(meta["size"]),
                                   modified=meta["last_modified"].timestamp())
        except StorageError:
            raise
        except Exception as exc:  # obstore's errors, FileNotFoundError, a bad environment
            raise StorageError(f"cannot read the object {key}: {exc}",
                               failure=StorageFailure.IO_ERROR) from None

    return read


def _instances(store: Any, prefix: str) -> Iterator[StoredInstance]:
    def one(meta: dict[str, Any]) -> StoredInstance | None:
        try:
            return describe_object(store, meta["path"], size=int(meta["size"]),
                                   modified=meta["last_modified"].timestamp())
        except StorageError as exc:
            logger.warning("index rebuild: skipping %s", exc)
            return None

    with concurrent.futures.ThreadPoolExecutor(CONCURRENCY,
                                               thread_name_prefix="aiodicom-rebuild") as pool:
        for page in list_instances(store, prefix):
            yield from (stored for stored in pool.map(one, page) if stored is not None)


def rebuild_from_store(index: Index, url: str,
                       environ: Mapping[str, str] | None = None) -> int:
    """Rebuild ``index`` from the objects under the store URL ``url`` (credentials from
    ``environ``, default os.environ); returns how many were indexed. Raises ValueError for
    a bad URL; a store failure propagates (obstore's exception) with nothing pruned."""
    from aiodicom.app.objstore import open_store

    store, prefix = open_store(url, environ=environ)
    return index.rebuild_from(_instances(store, prefix))
