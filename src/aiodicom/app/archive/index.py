"""The SQLite index of stored instances (ROOT/index.sqlite), for query and retrieve.

Four tables follow the Patient/Study/Series/Image hierarchy of PS3.4 §C.6.1; their
columns are the DICOM keywords of the key attributes. `Index.query` implements the
matching of PS3.4 §C.2.2.2: universal ("" or "*"), single value (case-insensitive for
PN), wildcard ("*", "?"), UID list ("\\"-separated) and DA/TM range ("A-B", "A-", "-B").
WAL mode and a busy timeout let several server processes share the file; a patient is
identified by PatientID alone. `Index.rebuild` recreates the rows from the files, as
`aiodicom index rebuild STORAGE` does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

from aiodicom.app.archive.index_schema import FOLDED, SCHEMA_VERSION, SQLITE, Dialect, upgrade
from aiodicom.app.archive.matching import Query, build_query, fold
from aiodicom.app.archive.storage import (
    HeaderError,
    StorageError,
    StorageFailure,
    StoredInstance,
    StoreOutcome,
    read_header,
)
from aiodicom.core.part10 import read_file_meta
from aiodicom.core.uids import validate_uid

__all__ = ["INDEX_NAME", "LEVELS", "Index", "read_stored_file"]

logger = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite"
"""The index file name under the storage root."""

_BATCH = 256

LEVELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "PATIENT": ("patient", ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")),
    "STUDY": (
        "study",
        (
            "StudyInstanceUID",
            "StudyDate",
            "StudyTime",
            "AccessionNumber",
            "StudyDescription",
            "ReferringPhysicianName",
            "StudyID",
        ),
    ),
    "SERIES": ("series", ("SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription")),
    "IMAGE": (
        "instance",
        ("SOPInstanceUID", "SOPClassUID", "InstanceNumber", "TransferSyntaxUID",
         "ContentDate", "ContentTime", "AcquisitionDateTime"),
    ),
}
"""Query/Retrieve level -> (table, keywords); each level's first keyword is its key."""

_ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")
_PARENT_KEY = {"study": "PatientID", "series": "StudyInstanceUID", "instance": "SeriesInstanceUID"}
PAGE_SIZE = 512
"""Rows read per page of a query: memory per query is bounded by this, not by the result."""
_FILE_COLUMNS = ("path", "size", "source_ae_title", "received_at")


def _private_files(path: Path) -> None:
    """Create the database 0600 before SQLite opens it (it holds patient names, IDs and
    birth dates); SQLite gives -wal and -shm the database's mode. Tighten older files."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        with contextlib.suppress(OSError):
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)


class Index:
    """The index database; one connection, safe to share between threads and processes."""

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        _private_files(self.path)
        try:
            self._db = sqlite3.connect(
                self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._db.create_function("dicom_fold", 1, fold, deterministic=True)
            self._db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = NORMAL")
            with self._transaction() as db:
                legacy = db.execute("PRAGMA user_version").fetchone()[0]
                try:
                    found = upgrade(lambda sql, args: db.execute(sql, args).fetchall(),
                                    SQLITE, legacy)
                except ValueError as exc:
                    raise StorageError(
                        f"the index {self.path}: {exc}; upgrade aiodicom or run "
                        "`aiodicom index rebuild` after moving it away",
                        failure=StorageFailure.IO_ERROR,
                    ) from None
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            if 0 < found < 2:
                logger.warning("index %s upgraded from schema version %d: run `aiodicom index "
                               "rebuild` to match ContentDate/ContentTime/AcquisitionDateTime "
                               "of the instances stored before", self.path, found)
        except sqlite3.Error as exc:
            raise StorageError(
                f"cannot open the index {self.path}: {exc}; check the path and permissions, "
                "or run `aiodicom index rebuild`",
                failure=StorageFailure.IO_ERROR,
            ) from exc

    @classmethod
    def for_root(cls, root: Path) -> Index:
        """The index of the storage tree at `root` (ROOT/index.sqlite)."""
        return cls(Path(root) / INDEX_NAME)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Index:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    dialect: Dialect = SQLITE
    """The SQL dialect of this backend (index_schema)."""

    @property
    def key(self) -> str:
        """What identifies this index among the open ones (index_writer)."""
        return str(self.path.resolve())

    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        """BEGIN ... COMMIT; the connection it yields has execute(sql, args) -> a cursor
        with fetchone, fetchall and rowcount (`?` placeholders)."""
        return _Transaction(self._db, self._lock)

    def _read(self, sql: str, args: Sequence[object]) -> Sequence[Sequence[Any]]:
        """One read statement's rows (a short read under the lock)."""
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def add(self, stored: StoredInstance) -> None:
        """Insert or update an instance and its series, study and patient rows.

        A KEPT_EXISTING outcome means the file on disk is the earlier one: the index
        keeps its row, or learns that file's own attributes if it had none.
        """
        self.add_many([stored])

    read_kept: Callable[[Path], StoredInstance] | None = None
    """How a KEPT_EXISTING instance the index lacks is read back: `read_stored_file` when
    None; the writer of an object-store archive sets an object reader (index_objects)."""

    def add_many(self, instances: list[StoredInstance]) -> None:
        """`add` each, in one transaction (all or none)."""
        rows = [stored if stored.outcome is not StoreOutcome.KEPT_EXISTING
                else self._kept(stored) for stored in instances
                if stored.outcome is not StoreOutcome.KEPT_EXISTING
                or self.locate(stored.sop_instance_uid) is None]
        if rows:
            self._write(rows)

    def _kept(self, stored: StoredInstance) -> StoredInstance:
        """The kept instance as stored (its own attributes, not the duplicate's); raises
        `StorageError` if it cannot be read."""
        return (self.read_kept or read_stored_file)(stored.path)

    def _write(self, rows: list[StoredInstance]) -> None:
        """Upsert ``rows`` (and their parents; prune what they left empty) in one
        transaction."""
        with self._transaction() as db:
            now = time.time()
            for stored in rows:
                _upsert(db, stored, now)

    def remove(self, sop_instance_uid: str) -> bool:
        """Forget an instance (and any series, study or patient left empty)."""
        with self._transaction() as db:
            candidates = _parents(db, sop_instance_uid, None, None)
            cursor = db.execute(
                'DELETE FROM instance WHERE "SOPInstanceUID" = ?', (sop_instance_uid,)
            )
            _prune(db, *candidates)
            return bool(cursor.rowcount > 0)

    def locate(self, sop_instance_uid: str) -> Path | None:
        """The file of an indexed instance, or None."""
        rows = self._read('SELECT path FROM instance WHERE "SOPInstanceUID" = ?',
                          [sop_instance_uid])
        return Path(str(rows[0][0])) if rows else None

    def count(self) -> int:
        """The number of indexed instances."""
        return int(str(self._read("SELECT count(*) FROM instance", [])[0][0]))

    def query(self, level: str, filters: Mapping[str, str] | None = None,
              computed: tuple[str, ...] = ()) -> list[dict[str, str]]:
        """Match `filters` (DICOM keyword -> key value) at a Query/Retrieve level.

        `level` is PATIENT, STUDY, SERIES or IMAGE. Keys may belong to the level or
        any level above it (PS3.4 §C.4.1.2.1). Each result holds every keyword of the
        level and the levels above, plus path, size, source_ae_title and received_at
        (ISO 8601, UTC) at IMAGE level, plus the `computed` keys (matching.COMPUTED);
        absent values are "". All rows in memory: `pages` streams them.
        """
        return [row for page in self.pages(level, filters, computed) for row in page]

    def pages(self, level: str, filters: Mapping[str, str] | None = None,
              computed: tuple[str, ...] = (), *, size: int = PAGE_SIZE,
              ) -> Iterator[list[dict[str, str]]]:
        """`query`'s rows a page at a time (each page a separate, short read under the lock,
        so writers are never held off for a whole result). Raises ValueError at once for a
        bad level or key."""
        name = level.upper()
        if name not in LEVELS:
            raise ValueError(f"unknown query level {level!r}: use one of {', '.join(_ORDER)}")
        query = build_query(
            name, filters or {}, {k: v[0] for k, v in LEVELS.items()},
            {k: v[1] for k, v in LEVELS.items()}, _PARENT_KEY,
            extra=_FILE_COLUMNS if name == "IMAGE" else (), computed=computed,
            dialect=self.dialect)
        return self._pages(query, size)

    def _pages(self, query: Query, size: int) -> Iterator[list[dict[str, str]]]:
        after: list[str] | None = None
        while True:
            sql, args = query.page(after, size)
            rows = self._read(sql, args)
            if not rows:
                return
            yield [dict(zip(query.names, map(_as_text, row), strict=True)) for row in rows]
            if len(rows) < size:
                return
            after = [rows[-1][i] for i in query.key_positions]

    def rebuild(self, root: Path) -> int:
        """Re-index every stored file under `root`; returns how many were indexed.

        Skips ROOT/.incoming and files that are not usable Part 10 files (logged).
        Rows for files that are gone are dropped; instances that a running server
        stores meanwhile are kept, so this is safe to run beside it: every row written
        during the rebuild (found here, or stored meanwhile) has `indexed_at` >= its start,
        so the rows older than that are the ones no file backs any more.
        """
        return self.rebuild_from(_described(_walk(Path(root))))

    def rebuild_from(self, instances: Iterable[StoredInstance]) -> int:
        """`rebuild` from ``instances`` (every instance the archive holds: files, objects);
        if iterating raises, nothing is pruned and the error propagates."""
        started = time.time()
        indexed = 0
        batch: list[StoredInstance] = []
        for stored in instances:
            batch.append(stored)
            if len(batch) >= _BATCH:
                indexed += self._add_batch(batch)
                batch = []
        indexed += self._add_batch(batch)
        with self._transaction() as db:
            db.execute("DELETE FROM instance WHERE indexed_at < ?", (started,))
            db.execute('DELETE FROM series WHERE "SeriesInstanceUID" NOT IN '
                       '(SELECT "SeriesInstanceUID" FROM instance)')
            db.execute('DELETE FROM study WHERE "StudyInstanceUID" NOT IN '
                       '(SELECT "StudyInstanceUID" FROM series)')
            db.execute('DELETE FROM patient WHERE "PatientID" NOT IN '
                       '(SELECT "PatientID" FROM study)')
        return indexed

    def _add_batch(self, batch: list[StoredInstance]) -> int:
        with self._transaction() as db:
            now = time.time()
            for stored in batch:
                _upsert(db, stored, now)
        return len(batch)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT under the connection lock (ROLLBACK on error)."""

    def __init__(self, db: sqlite3.Connection, lock: threading.Lock) -> None:
        self._db, self._lock = db, lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
        finally:
            self._lock.release()


def _as_text(value: object) -> str:
    if isinstance(value, float):
        return datetime.fromtimestamp(value, UTC).isoformat(timespec="seconds")
    return "" if value is None else str(value)


def _one(db: Any, sql: str, key: str | None) -> str | None:
    if key is None:
        return None
    row = db.execute(sql, (key,)).fetchone()
    return None if row is None else str(row[0])


def _parents(
    db: Any, sop_uid: str, series_uid: str | None, study_uid: str | None
) -> tuple[set[str], set[str], set[str]]:
    """Series, studies and patients that may become empty when these rows change."""
    old_series = _one(db, 'SELECT "SeriesInstanceUID" FROM instance WHERE "SOPInstanceUID" = ?',
                      sop_uid)
    series = {s for s in (old_series,) if s is not None}
    studies = {
        s
        for s in (
            _one(db, 'SELECT "StudyInstanceUID" FROM series WHERE "SeriesInstanceUID" = ?', key)
            for key in (old_series, series_uid)
        )
        if s is not None
    }
    patients = {
        p
        for p in (
            _one(db, 'SELECT "PatientID" FROM study WHERE "StudyInstanceUID" = ?', key)
            for key in {*studies, study_uid}
        )
        if p is not None
    }
    return series, studies, patients


PRUNE = (
    'DELETE FROM series WHERE "SeriesInstanceUID" = ? AND NOT EXISTS '
    '(SELECT 1 FROM instance WHERE "SeriesInstanceUID" = ?)',
    'DELETE FROM study WHERE "StudyInstanceUID" = ? AND NOT EXISTS '
    '(SELECT 1 FROM series WHERE "StudyInstanceUID" = ?)',
    'DELETE FROM patient WHERE "PatientID" = ? AND NOT EXISTS '
    '(SELECT 1 FROM study WHERE "PatientID" = ?)',
)
"""Delete a series, study or patient (its key given twice) if nothing is left below it."""


def _prune(db: Any, series: set[str], studies: set[str], patients: set[str]) -> None:
    for sql, keys in zip(PRUNE, (series, studies, patients), strict=True):
        for key in keys:
            db.execute(sql, (key, key))


def _upsert_sql(table: str, names: list[str]) -> str:
    quoted = ", ".join(f'"{n}"' for n in names)
    updates = ", ".join(f'"{n}" = excluded."{n}"' for n in names[1:])
    return (
        f"INSERT INTO {table} ({quoted}) VALUES ({', '.join('?' * len(names))}) "
        f'ON CONFLICT("{names[0]}") DO UPDATE SET {updates}'
    )


def _upsert_plan() -> list[tuple[str, tuple[str, ...]]]:
    """Per level, top down: the upsert statement and the attribute keywords it binds."""
    plan = []
    for level in _ORDER:
        table, keywords = LEVELS[level]
        names = list(keywords)
        if table in _PARENT_KEY:
            names.append(_PARENT_KEY[table])
        names += [f"{k}_fold" for k, home in FOLDED.items() if home == table]
        columns = names + (["path", "size", "source_ae_title", "received_at", "indexed_at"]
                           if table == "instance" else [])
        plan.append((_upsert_sql(table, columns), tuple(names)))
    return plan


_UPSERTS = _upsert_plan()
"""Built once: a store's index update is ~10 statements, and building them cost as much."""


def upsert_rows(stored: StoredInstance, now: float) -> list[tuple[str, list[object]]]:
    """The upserts of one instance, top down (patient, study, series, instance): each
    statement with its arguments."""
    attributes = dict(stored.attributes)
    attributes.update(
        SOPInstanceUID=stored.sop_instance_uid,
        SOPClassUID=stored.sop_class_uid,
        StudyInstanceUID=stored.study_instance_uid,
        SeriesInstanceUID=stored.series_instance_uid,
        TransferSyntaxUID=stored.transfer_syntax_uid,
    )
    for keyword in FOLDED:
        attributes[f"{keyword}_fold"] = fold(attributes.get(keyword, "")) or ""
    get = attributes.get
    rows: list[tuple[str, list[object]]] = [
        (sql, [get(name, "") for name in names]) for sql, names in _UPSERTS]
    rows[-1][1].extend([str(stored.path), stored.size, stored.source_ae_title,
                        stored.received_at, now])
    return rows


def _upsert(db: Any, stored: StoredInstance, now: float) -> None:
    series, studies, patients = _parents(
        db, stored.sop_instance_uid, stored.series_instance_uid, stored.study_instance_uid
    )
    for sql, args in upsert_rows(stored, now):
        db.execute(sql, args)
    # The rows just written are in use; only a parent the instance left can be empty now.
    series.discard(stored.series_instance_uid)
    studies.discard(stored.study_instance_uid)
    patients.discard(stored.attributes.get("PatientID", ""))
    _prune(db, series, studies, patients)


def _walk(root: Path) -> Iterator[Path]:
    """Every *.dcm file under `root`, outside hidden directories such as .incoming."""
    for directory, subdirs, files in os.walk(root):
        subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))  # .incoming
        for name in sorted(files):
            if name.endswith(".dcm"):
                yield Path(directory) / name


def _described(paths: Iterable[Path]) -> Iterator[StoredInstance]:
    for path in paths:
        try:
            yield read_stored_file(path)
        except StorageError as exc:
            logger.warning("index rebuild: skipping %s", exc)


def read_stored_file(path: Path) -> StoredInstance:
    """Describe a stored Part 10 file from its meta information and data set head.

    Reads a bounded amount whatever the file's size. Raises `StorageError`
    (INVALID_DATASET, or IO_ERROR if unreadable) for a file that cannot be indexed.
    """
    try:
        with open(path, "rb") as fp:
            status = os.fstat(fp.fileno())
            return describe_part10(fp, path, size=status.st_size, modified=status.st_mtime)
    except OSError as exc:
        raise StorageError(
            f"cannot read {path}: {exc.strerror}", failure=StorageFailure.IO_ERROR
        ) from exc


def describe_part10(fp: BinaryIO, name: Path, *, size: int, modified: float) -> StoredInstance:
    """Describe the Part 10 file or object ``name`` whose first bytes ``fp`` reads (the
    whole file, or an object's head: `size` is the whole size). Raises `StorageError`
    (INVALID_DATASET) when it cannot be indexed from these bytes."""
    try:
        meta = read_file_meta(fp)
        start = meta.dataset_offset
        syntax = meta.text(0x00020010)
        validate_uid(syntax, "Transfer Syntax UID (0002,0010)")
        attributes = read_header(fp, start, size - start, syntax)
        for keyword in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            validate_uid(attributes[keyword], keyword)
    except (HeaderError, ValueError) as exc:  # NotPart10Error is a ValueError
        raise StorageError(
            f"{name} is not a usable DICOM Part 10 file: {exc}",
            failure=StorageFailure.INVALID_DATASET,
        ) from None
    return StoredInstance(
        path=name,
        sop_class_uid=attributes["SOPClassUID"] or meta.text(0x00020002),
        sop_instance_uid=attributes["SOPInstanceUID"],
        transfer_syntax_uid=syntax,
        study_instance_uid=attributes["StudyInstanceUID"],
        series_instance_uid=attributes["SeriesInstanceUID"],
        size=size,
        source_ae_title=meta.text(0x00020016),
        received_at=modified,
        attributes=attributes,
    )
