"""Index updates off the event loop: one writer thread per index file and process.

The bundled server answers C-STORE success once the Part 10 file is renamed into place
(and fsynced when configured): the file is the record, and the index is derived from the
files (`aiodicom index rebuild` recreates it). The index row is written just after, here,
so an SQLite write (up to the busy timeout when several workers share the file) never
stalls the associations of the event loop. What is queued together (within `LINGER` of
the first) is written in one transaction. Queries of the same index in this process first
wait for the writes queued before them (`settled`), so a C-FIND after a C-STORE success
sees the instance.

The same promise holds for a PostgreSQL index (index_pg): nothing waits for the index
before the C-STORE is answered. When the index server is unreachable the batch stays
queued and is retried (with a growing pause, logged once per outage and when it ends)
for up to `RETRY_FOR` seconds or until `close`; instances given up on are logged one by
one and come back with `aiodicom index rebuild`.

What a process acknowledged but did not index before it died (SIGKILL between the
response and the writer's commit) is not left to an operator: `submit` first appends the
instance to the process's journal (index_journal: one write, fsynced with --fsync), which
is emptied each time the writer has caught up; a writer opened by `writer_for_index`
replays, at start, the journals that processes now gone left behind.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiodicom.app.archive.index import INDEX_NAME, Index
from aiodicom.app.archive.index_journal import Journal, claim_orphans, default_directory, entry
from aiodicom.app.archive.storage import StoredInstance

__all__ = ["IndexWriter", "open_index", "settled", "writer_for", "writer_for_index"]

logger = logging.getLogger(__name__)

OnError = Callable[[StoredInstance, BaseException], None]
_Item = tuple[StoredInstance, OnError | None] | concurrent.futures.Future[None]

BATCH = 128
"""Instances written per transaction at most (only what is already queued is batched)."""

LINGER = 0.005
"""Seconds the thread waits after the first queued instance for more to join its
transaction. A `settle` that finds the thread idle does not linger; one queued meanwhile
waits at most this long more. The instance is acknowledged already (file durable,
journaled): this delays only its row."""

IDLE_EXIT = 1.0
"""Seconds the thread waits for work before it ends (the next write starts another)."""

SETTLE_TIMEOUT = 5.0
"""How long a query waits for earlier writes (another process holding the index's write
lock can delay them up to the busy timeout); after that it reads what is committed."""

RETRY_FOR = 600.0
"""Seconds a batch is retried while the index server is unavailable before it is given
up (logged per instance; `aiodicom index rebuild` restores it)."""

RETRY_PAUSE = (0.2, 5.0)
"""The first and the longest pause between two tries (doubling)."""


class IndexWriter:
    """A queue of index updates and the one thread that applies them.

    The `Index` connection is used only by that thread once writes begin. The thread is
    not a daemon: at interpreter exit, the writes already queued are committed first
    (it ends after `IDLE_EXIT` seconds without work).
    """

    def __init__(self, index: Index, journal: Journal | None = None) -> None:
        self.index = index
        self.journal = journal
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = threading.Event()
        self._unindexed: list[bytes] = []
        """Journal lines of instances the index was unavailable for: kept in the journal."""

    def submit(self, stored: StoredInstance, on_error: OnError | None = None) -> None:
        """Queue an instance for the index; returns once it is in the journal (if any): call
        it before acknowledging the instance. ``on_error`` is called (in the writer thread)
        if its update fails; the file stays stored."""
        self._put((stored, on_error))

    def recover(self) -> int:
        """Queue the instances in the journals of processes that are gone (journaled again
        in this one first, then their files deleted); returns how many."""
        if self.journal is None:
            return 0
        count = 0
        for path, instances in claim_orphans(self.journal.directory, self.journal.path):
            for stored in instances:
                self.submit(stored)
            count += len(instances)
            if instances:
                logger.warning("index journal %s: %d instance(s) acknowledged by an earlier "
                               "run but not indexed are queued for the index", path,
                               len(instances))
        return count

    def settle(self) -> concurrent.futures.Future[None]:
        """A future done once every update queued before this call is committed (or
        failed)."""
        done: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._put(done)
        return done

    def flush(self, timeout: float | None = None) -> None:
        """Block until the updates queued so far are applied (tests, shutdown)."""
        self.settle().result(timeout)

    def _put(self, item: _Item) -> None:
        with self._lock:
            if self.journal is not None and isinstance(item, tuple):
                try:
                    self.journal.append(entry(item[0]))
                except OSError as exc:  # the instance is durable; only its replay is not
                    logger.error("index journal %s: cannot record %s (%s); if this process "
                                 "dies before indexing it, run `aiodicom index rebuild`",
                                 self.journal.directory, item[0].path, exc)
            self._queue.put(item)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="aiodicom-index-writer")
                self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=IDLE_EXIT)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():  # nothing slipped in: a later _put starts anew
                        self._thread = None
                        return
                continue
            if isinstance(first, tuple) and LINGER > 0:
                # Gather what arrives next into the same transaction: stores answered one
                # at a time would otherwise cost one commit and one journal clear each, and
                # a wake-up of this thread per put. Puts meanwhile wake nobody.
                self._closed.wait(LINGER)
            items = [first]
            while len(items) < BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._apply(items)
            if self.journal is not None:
                with self._lock:
                    if self._queue.empty():  # all that was journaled is applied
                        self._clear_journal()
            for item in items:  # settled: written, and out of the journal
                if not isinstance(item, tuple) and item.set_running_or_notify_cancel():
                    item.set_result(None)

    def _clear_journal(self) -> None:
        assert self.journal is not None
        try:
            self.journal.clear(self._unindexed)
        except OSError as exc:  # it grows until the next clear; replays are harmless
            logger.error("index journal %s: cannot empty it (%s)", self.journal.path, exc)

    def close(self, timeout: float | None = None) -> None:
        """Stop retrying an unavailable index, wait for the thread (at most ``timeout``)."""
        self._closed.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout)
        if self.journal is not None:
            with self._lock:
                if self._thread is None or not self._thread.is_alive():
                    self.journal.close()

    def _retrying(self, write: Callable[[], None]) -> None:
        """Run ``write``, again while the index is unavailable (`RETRY_FOR`, `close`)."""
        from aiodicom.app.archive.index_pg import IndexUnavailable

        pause, waited, warned = RETRY_PAUSE[0], 0.0, False
        while True:
            try:
                write()
            except IndexUnavailable as exc:
                # give up at close, after RETRY_FOR, or at interpreter exit (the main
                # thread has ended: this non-daemon thread must not hold the exit)
                if (self._closed.is_set() or waited >= RETRY_FOR
                        or not threading.main_thread().is_alive()):
                    raise
                if not warned:
                    logger.warning("%s; index updates are queued and retried", exc)
                    warned = True
                self._closed.wait(pause)
                waited += pause
                pause = min(pause * 2, RETRY_PAUSE[1])
                continue
            if warned:
                logger.warning("the index is available again: queued updates written")
            return

    def _apply(self, items: list[_Item]) -> None:
        from aiodicom.app.archive.index_pg import IndexUnavailable

        batch = [item for item in items if isinstance(item, tuple)]
        if batch:
            try:
                self._retrying(lambda: self.index.add_many([stored for stored, _ in batch]))
            except Exception:  # one bad instance spoils the transaction: try them one by one
                for stored, on_error in batch:
                    try:
                        self._retrying(lambda stored=stored: self.index.add(stored))  # type: ignore[misc]
                    except Exception as exc:
                        if isinstance(exc, IndexUnavailable):  # a restart replays it
                            self._unindexed.append(entry(stored))
                        _report(stored, on_error, exc)


def _report(stored: StoredInstance, on_error: OnError | None, exc: BaseException) -> None:
    if on_error is None:
        logger.error("index update failed for %s: %s", stored.path, exc)
        return
    try:
        on_error(stored, exc)
    except Exception:
        logger.exception("index update failed for %s", stored.path)


_writers: dict[str, IndexWriter] = {}
_writers_lock = threading.Lock()


def writer_for(root: Path) -> IndexWriter:
    """The writer of the index of the storage tree at ``root`` in this process (opened, so
    a bad index fails now, at start, not at the first store)."""
    return writer_for_index(None, root)


def open_index(spec: str | None, storage: str | Path) -> Index:
    """Open the index named by ``--index``: a PostgreSQL URL, an SQLite file path, or (None)
    STORAGE/index.sqlite. With an object-store ``storage`` URL an index is required (the
    default file would have no directory to live in). Raises StorageError or ValueError."""
    from aiodicom.app.archive.index_pg import PgIndex, is_postgres_url

    if spec and is_postgres_url(spec):
        return PgIndex(spec)
    if spec:
        return Index(Path(spec))
    if "://" in str(storage):
        raise ValueError(f"an object-store --storage ({str(storage).split('://')[0]}://...) "
                         "needs --index: an SQLite file path or postgresql://user:pass@host/db")
    root = Path(storage)
    root.mkdir(parents=True, exist_ok=True)
    return Index(root / INDEX_NAME)


def _key_of(spec: str | None, storage: str | Path) -> str:
    from aiodicom.app.archive.index_pg import is_postgres_url, redact

    if spec and is_postgres_url(spec):
        return redact(spec)
    return str(Path(spec if spec else Path(storage) / INDEX_NAME).resolve())


def writer_for_index(spec: str | None, storage: str | Path, *,
                     fsync: bool | None = None, store: Any = None) -> IndexWriter:
    """The writer of the index ``spec`` (see `open_index`) of ``storage`` in this process,
    opened once, with its journal (`index_journal.default_directory`; fsynced per
    ``fsync`` when given); opening it replays what earlier runs left unindexed. A
    KEPT_EXISTING duplicate the index lacks is read from the object ``store`` (the
    server's) when given, else from a store opened from the environment."""
    key = _key_of(spec, storage)
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            index = open_index(spec, storage)
            if "://" in str(storage):
                from aiodicom.app.archive.index_objects import object_reader
                from aiodicom.app.objstore import open_store

                index.read_kept = object_reader(lambda: open_store(str(storage))[0])
            journal = Journal(default_directory(spec, storage, index.key))
            writer = _writers[key] = IndexWriter(index, journal)
            writer.recover()
        if fsync is not None and writer.journal is not None:
            writer.journal.fsync = fsync
        if store is not None:
            from aiodicom.app.archive.index_objects import object_reader

            writer.index.read_kept = object_reader(lambda: store)
        return writer


async def settled(key: str) -> None:
    """Wait (at most `SETTLE_TIMEOUT` s) until the index updates this process queued for
    the index ``key`` (`Index.key`) before now are committed; at once if there are none."""
    writer = _writers.get(key)
    if writer is None:
        return
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(writer.settle())),
                               SETTLE_TIMEOUT)
    except TimeoutError:
        logger.warning("index updates still pending after %.0f s: querying without them",
                       SETTLE_TIMEOUT)
