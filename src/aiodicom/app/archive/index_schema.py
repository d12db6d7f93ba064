"""The index schema, one list of versioned migrations for both backends (SQLite, PostgreSQL).

Each migration is applied once, in order, in the transaction that records its number in
the `schema_version` table, so a database is upgraded in place from whatever version it
holds. An SQLite index written before this table existed records its version in
`PRAGMA user_version` (1); that is where its upgrade starts, and `user_version` is kept
equal to the schema version so an older aiodicom refuses a newer index instead of misreading
it. Migrations are frozen once released: a new column is a new migration, never an edit.

The SQL differs between the dialects in column types only: PostgreSQL text columns are
`COLLATE "C"` (byte order, as SQLite compares), sizes BIGINT and times DOUBLE PRECISION.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["FOLDED", "SCHEMA_VERSION", "Dialect", "POSTGRES", "SQLITE", "migrations"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Dialect:
    """What differs between the backends' SQL: types, and three functions matching uses."""

    name: str
    text: str
    integer: str
    real: str
    instr: str
    """position of a substring, 1-based (SQLite instr, PostgreSQL strpos)"""
    distinct_list: str
    """aggregate of distinct values, comma-separated; `{}` is the column"""
    wildcard_escape: bool
    """True: wildcards as LIKE patterns with `\\` escapes; False: SQLite GLOB"""


SQLITE = Dialect(name="sqlite", text="TEXT", integer="INTEGER", real="REAL", instr="instr",
                 distinct_list="group_concat(DISTINCT {})", wildcard_escape=False)
POSTGRES = Dialect(name="postgresql", text='TEXT COLLATE "C"', integer="BIGINT",
                   real="DOUBLE PRECISION", instr="strpos",
                   distinct_list="string_agg(DISTINCT {}, ',')", wildcard_escape=True)

FOLDED: dict[str, str] = {"PatientName": "patient", "ReferringPhysicianName": "study"}
"""PN keys matched case-insensitively, by keyword -> table: their Unicode case folding
(Python's str.casefold, the same for both backends) is stored beside them as KEYWORD_fold
(schema version 2)."""

_V1: tuple[tuple[str, str | None, tuple[str, ...]], ...] = (
    ("patient", None, ("PatientID", "PatientName", "PatientBirthDate", "PatientSex")),
    ("study", "PatientID", ("StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber",
                            "StudyDescription", "ReferringPhysicianName", "StudyID")),
    ("series", "StudyInstanceUID", ("SeriesInstanceUID", "Modality", "SeriesNumber",
                                    "SeriesDescription")),
    ("instance", "SeriesInstanceUID", ("SOPInstanceUID", "SOPClassUID", "InstanceNumber",
                                       "TransferSyntaxUID")),
)
"""Schema version 1, frozen: table, parent key, keywords (the first one is the key)."""

_V2_IMAGE_KEYS = ("ContentDate", "ContentTime", "AcquisitionDateTime")


def _version_1(d: Dialect) -> list[str]:
    statements = []
    for table, parent, keywords in _V1:
        columns = [f'"{keywords[0]}" {d.text} PRIMARY KEY']
        columns += [f"\"{k}\" {d.text} NOT NULL DEFAULT ''" for k in keywords[1:]]
        if parent is not None:
            columns.append(f'"{parent}" {d.text} NOT NULL')
        if table == "instance":
            columns += [f"path {d.text} NOT NULL", f"size {d.integer} NOT NULL",
                        f"source_ae_title {d.text} NOT NULL DEFAULT ''",
                        f"received_at {d.real} NOT NULL", f"indexed_at {d.real} NOT NULL"]
        statements.append(f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(columns)})")
        if parent is not None:
            statements.append(
                f'CREATE INDEX IF NOT EXISTS {table}_parent ON {table}("{parent}")')
    statements += [f'CREATE INDEX IF NOT EXISTS {table}_{column} ON {table}("{column}")'
                   for table, column in (("study", "StudyDate"), ("study", "AccessionNumber"),
                                         ("patient", "PatientName"))]
    return statements


def _version_2(d: Dialect) -> list[str]:
    """IMAGE-level date and time keys (PS3.4 C.6.1.1.5), and folded PN columns, indexed,
    so a PN key is matched by an index on both backends instead of a function per row.
    Instances indexed before keep "" in the new image columns until `aiodicom index
    rebuild`; the folded columns are filled here (SQLite has `dicom_fold` registered)."""
    fold = "dicom_fold" if d is SQLITE else "lower"
    statements = [f"ALTER TABLE instance ADD COLUMN \"{k}\" {d.text} NOT NULL DEFAULT ''"
                  for k in _V2_IMAGE_KEYS]
    for keyword, table in FOLDED.items():
        statements += [
            f"ALTER TABLE {table} ADD COLUMN \"{keyword}_fold\" {d.text} NOT NULL DEFAULT ''",
            f'UPDATE {table} SET "{keyword}_fold" = {fold}("{keyword}")',
        ]
    statements += [
        "DROP INDEX IF EXISTS patient_PatientName",
        'CREATE INDEX IF NOT EXISTS patient_PatientName_fold ON patient("PatientName_fold")',
        'CREATE INDEX IF NOT EXISTS instance_ContentDate ON instance("ContentDate")',
    ]
    return statements


_MIGRATIONS: tuple[Callable[[Dialect], list[str]], ...] = (_version_1, _version_2)

SCHEMA_VERSION = len(_MIGRATIONS)
"""The schema this aiodicom writes; an index with a higher version is refused."""

VERSION_TABLE = "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"


def migrations(dialect: Dialect, current: int) -> Sequence[tuple[int, list[str]]]:
    """The migrations after version ``current``, in order: (version, statements)."""
    return [(number, make(dialect)) for number, make in enumerate(_MIGRATIONS, start=1)
            if number > current]


Run = Callable[[str, Sequence[object]], Sequence[Sequence[object]]]
"""Execute one statement with parameters (`?` placeholders), return its rows."""


def upgrade(run: Run, dialect: Dialect, legacy: int = 0) -> int:
    """Bring the schema to `SCHEMA_VERSION` inside the caller's transaction; returns the
    version found. ``legacy`` is the version of a database without `schema_version` (an
    SQLite index's user_version). Raises ValueError for a newer schema than ours."""
    run(VERSION_TABLE, ())
    rows = run("SELECT max(version) FROM schema_version", ())
    found = rows[0][0] if rows and rows[0][0] is not None else legacy
    current = int(str(found))
    if current > SCHEMA_VERSION:
        raise ValueError(f"it has schema version {current}, newer than this aiodicom's "
                         f"({SCHEMA_VERSION})")
    for _number, statements in migrations(dialect, current):
        for statement in statements:
            run(statement, ())
    if current != SCHEMA_VERSION or not rows or rows[0][0] is None:
        run("DELETE FROM schema_version", ())
        run("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
    return current
