"""The index in PostgreSQL (`--index postgresql://user:pass@host:port/db`), through asyncpg.

The same tables, migrations (index_schema) and matching SQL (matching, in its PostgreSQL
dialect) as the SQLite index, so both give the same C-FIND/C-GET/C-MOVE answers; several
nodes share one database. `PgIndex` keeps `Index`'s synchronous interface (the writer
thread and the Q/R worker threads call it as they call SQLite): asyncpg runs on a private
event loop in its own thread, with a connection pool, and each call waits for its result
there. No call waits forever: acquiring a connection and every statement time out, and a
lost server is reported as `IndexUnavailable`, which the writer retries and a query answers
with a failure status. asyncpg is imported only when a PostgreSQL URL is given.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import re
import threading
import time
from collections.abc import Awaitable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from aiodicom.app.archive.index import PRUNE, Index, upsert_rows
from aiodicom.app.archive.index_schema import POSTGRES, SCHEMA_VERSION, Dialect, upgrade
from aiodicom.app.archive.storage import StorageError, StorageFailure, StoredInstance

__all__ = ["IndexUnavailable", "PgIndex", "is_postgres_url", "redact"]

T = TypeVar("T")

TIMEOUT = 10.0
"""Seconds for a connection, a pooled connection to free up, or one statement."""

_MIGRATION_LOCK = 0x41494F44  # "AIOD": one node migrates at a time (pg_advisory_xact_lock)


class IndexUnavailable(StorageError):
    """The index server cannot be reached now (down, restarting, timed out): retry later."""

    def __init__(self, message: str) -> None:
        super().__init__(message, failure=StorageFailure.IO_ERROR)


def is_postgres_url(text: str) -> bool:
    """True for postgresql:// and postgres:// URLs."""
    return text.startswith(("postgresql://", "postgres://"))


def redact(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


_PLACEHOLDER = re.compile(r"\?")


def numbered(sql: str) -> str:
    """`?` placeholders as PostgreSQL's $1, $2... (the SQL built here has no literal `?`)."""
    counter = itertools.count(1)  # no cap: a C-MOVE's UID list can hold 10,000+ values
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


class _Result:
    def __init__(self, rows: Sequence[Any], rowcount: int) -> None:
        self._rows, self.rowcount = rows, rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> Sequence[Any]:
        return self._rows


class _Connection:
    """One pooled connection inside a transaction, as the shared index code uses it."""

    def __init__(self, index: PgIndex, connection: Any) -> None:
        self._index, self._connection = index, connection

    def execute(self, sql: str, args: Sequence[object] = ()) -> _Result:
        text = numbered(sql)
        if sql.lstrip()[:6].upper() == "SELECT":
            rows = self._index._call(self._connection.fetch(text, *args, timeout=TIMEOUT))
            return _Result(rows, len(rows))
        status = self._index._call(self._connection.execute(text, *args, timeout=TIMEOUT))
        return _Result((), _rowcount(str(status)))


_OLD_SERIES = ('SELECT "SeriesInstanceUID" FROM instance '
               'WHERE "SOPInstanceUID" = ANY($1::text[])')
_OLD_STUDIES = ('SELECT "StudyInstanceUID" FROM series '
                'WHERE "SeriesInstanceUID" = ANY($1::text[])')
_OLD_PATIENTS = 'SELECT "PatientID" FROM study WHERE "StudyInstanceUID" = ANY($1::text[])'


async def _write_batch(connection: Any, rows: list[StoredInstance],
                       plans: list[list[tuple[str, list[object]]]]) -> None:
    async def column(sql: str, keys: set[str]) -> set[str]:
        return {str(r[0]) for r in await connection.fetch(sql, list(keys), timeout=TIMEOUT)}

    series = await column(_OLD_SERIES, {s.sop_instance_uid for s in rows})
    studies = await column(_OLD_STUDIES, series | {s.series_instance_uid for s in rows})
    patients = await column(_OLD_PATIENTS, studies | {s.study_instance_uid for s in rows})
    for level in range(len(plans[0])):
        await connection.executemany(numbered(plans[0][level][0]),
                                     [plan[level][1] for plan in plans], timeout=TIMEOUT)
    for sql, keys in zip(PRUNE, (series, studies, patients), strict=True):
        if keys:
            await connection.executemany(numbered(sql), [(key, key) for key in sorted(keys)],
                                         timeout=TIMEOUT)


class _Newer(Exception):
    """The database's schema is newer than this aiodicom's."""


class PgIndex(Index):
    """The index in a PostgreSQL database; safe to share between threads, processes and
    nodes. Opening it connects, and migrates the schema (one node at a time)."""

    dialect: Dialect = POSTGRES

    def __init__(self, url: str, *, max_connections: int = 8) -> None:  # noqa: D107
        import asyncpg  # type: ignore[import-untyped]

        self.url = url
        self.path = Path(redact(url))  # shown in messages; not a file
        self._asyncpg = asyncpg
        self._transient: tuple[type[BaseException], ...] = (
            OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
            asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True,
                                        name="aiodicom-pg-index")
        self._thread.start()
        try:
            async def open_pool() -> Any:  # created on the index loop, which it binds to
                return await asyncpg.create_pool(
                    url, min_size=0, max_size=max_connections, timeout=TIMEOUT,
                    command_timeout=TIMEOUT)

            self._pool = self._call(open_pool())
            with self._transaction() as db:
                db.execute(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
                try:
                    upgrade(lambda sql, args: db.execute(sql, args).fetchall(), POSTGRES)
                except ValueError as exc:  # a newer schema than ours
                    raise _Newer(str(exc)) from None
        except _Newer as exc:
            self.close()
            raise StorageError(f"the index {self.key}: {exc}; upgrade aiodicom",
                               failure=StorageFailure.IO_ERROR) from None
        except (StorageError, ValueError, TypeError) as exc:  # down, refused, a bad URL
            self.close()
            raise StorageError(f"cannot open the PostgreSQL index {self.key}: {exc}; check "
                               "that the server runs and the URL, user and password are right",
                               failure=StorageFailure.IO_ERROR) from None

    @property
    def key(self) -> str:
        return redact(self.url)

    @classmethod
    def for_root(cls, root: Path) -> Index:  # pragma: no cover - not a file index
        raise TypeError("a PostgreSQL index is opened from its URL")

    def _call(self, awaitable: Awaitable[T]) -> T:
        """Run on the index loop and wait; connection trouble -> IndexUnavailable, any
        other database error -> StorageError."""
        future = asyncio.run_coroutine_threadsafe(_awaited(awaitable), self._loop)
        try:
            return future.result(TIMEOUT * 2)
        except self._transient as exc:
            future.cancel()
            raise IndexUnavailable(
                f"the PostgreSQL index {self.key} is unavailable "
                f"({type(exc).__name__}: {exc})") from None
        except self._asyncpg.PostgresError as exc:
            raise StorageError(f"the PostgreSQL index {self.key}: {exc}",
                               failure=StorageFailure.IO_ERROR) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        connection = self._call(self._pool.acquire(timeout=TIMEOUT))
        try:
            transaction = connection.transaction()
            self._call(transaction.start())
            try:
                yield _Connection(self, connection)
            except BaseException:
                with contextlib.suppress(Exception):
                    self._call(transaction.rollback())
                raise
            self._call(transaction.commit())
        finally:
            with contextlib.suppress(Exception):
                self._call(self._pool.release(connection, timeout=TIMEOUT))

    def _write(self, rows: list[StoredInstance]) -> None:
        """A batch in a few round trips (not ~10 per instance): the parents the instances
        may leave, then each level's upserts with executemany (in order, so a later
        instance of the batch wins as it would one by one), then the prunes, which delete
        only what is left empty. One transaction; one hop to the index loop."""
        now = time.time()
        plans = [upsert_rows(stored, now) for stored in rows]

        async def write() -> None:
            async with (self._pool.acquire(timeout=TIMEOUT) as connection,
                        connection.transaction()):
                await _write_batch(connection, rows, plans)

        self._call(write())

    def _read(self, sql: str, args: Sequence[object]) -> Sequence[Sequence[Any]]:
        async def read() -> Sequence[Any]:
            async with self._pool.acquire(timeout=TIMEOUT) as connection:
                rows: Sequence[Any] = await connection.fetch(numbered(sql), *args,
                                                             timeout=TIMEOUT)
                return rows

        return self._call(read())

    def rebuild_from(self, instances: Iterable[StoredInstance]) -> int:
        """`Index.rebuild_from`, then ANALYZE: the planner needs statistics after a bulk
        load (autovacuum gathers them later otherwise; until then a count per study scans)."""
        indexed = super().rebuild_from(instances)
        self.analyze()
        return indexed

    def analyze(self) -> None:
        """Refresh the planner's statistics (after a bulk load)."""
        self._call(self._pool.execute("ANALYZE patient, study, series, instance"))

    def close(self) -> None:
        if self._loop.is_closed() or not self._thread.is_alive():
            return  # closed already
        pool = getattr(self, "_pool", None)  # None: opening failed before the pool existed
        if pool is not None:
            with contextlib.suppress(Exception):
                self._call(pool.close())
        self._stop()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(TIMEOUT)
        if not self._loop.is_running():
            self._loop.close()

    @property
    def schema_version(self) -> int:
        """The version recorded in the database (`SCHEMA_VERSION` once opened)."""
        rows = self._read("SELECT max(version) FROM schema_version", [])
        return int(rows[0][0]) if rows and rows[0][0] is not None else SCHEMA_VERSION
