"""The index, SQLite and PostgreSQL: upsert, hierarchy pruning, DICOM matching, rebuild from
the files, schema migrations. Fixtures `index` and `filled` run each test on both backends
(the PostgreSQL server is tests/services' `postgres`; a missing one fails, never skips)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiodicom.app.archive.index import INDEX_NAME, Index, read_stored_file
from aiodicom.app.archive.index_pg import PgIndex
from aiodicom.app.archive.storage import (
    DuplicatePolicy,
    Storage,
    StorageError,
    StorageSettings,
    StoredInstance,
    StoreOutcome,
)

from .test_storage import CT, EXPLICIT, IMPLICIT, encode, make_dataset, store

MR = "1.2.840.10008.5.1.4.1.1.4"


def uid(*parts: int) -> str:
    return "1.2.826.0.1.3680043.9." + ".".join(str(p) for p in parts)


# (patient id, name, study, date, time, series, modality, instances)
LAYOUT = [
    ("P1", "Müller^Jörg", 1, "20240110", "083000", 1, "CT", 3),
    ("P1", "Müller^Jörg", 1, "20240110", "083000", 2, "MR", 2),
    ("P1", "Müller^Jörg", 2, "20240215", "120030", 3, "CT", 1),
    ("P2", "Smith^Anna", 3, "20231231", "235959", 4, "US", 2),
    ("P3", "O[Brien]^Pat", 4, "", "", 5, "CT", 1),
]


def populate(storage: Storage, index: Index | None = None) -> list[StoredInstance]:
    stored = []
    for pid, name, study, date, tm, series, modality, count in LAYOUT:
        for number in range(1, count + 1):
            sop = uid(study, series, number)
            ds = make_dataset(
                sop=sop,
                PatientID=pid,
                PatientName=name,
                StudyInstanceUID=uid(study),
                SeriesInstanceUID=uid(study, series),
                StudyDate=date,
                StudyTime=tm,
                Modality=modality,
                SeriesNumber=str(series),
                InstanceNumber=str(number),
                AccessionNumber=f"ACC{study}",
            )
            if modality == "MR":
                ds.SOPClassUID = MR
            syntax = IMPLICIT if number % 2 else EXPLICIT
            writer = storage.begin(
                sop_class_uid=ds.SOPClassUID, sop_instance_uid=sop, transfer_syntax_uid=syntax,
                source_ae_title="SCANNER",
            )
            with writer:
                writer.write(encode(ds, syntax))
                stored.append(writer.commit())
            if index is not None:
                index.add(stored[-1])
    return stored


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(StorageSettings(root=tmp_path / "store"))


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_index_url(postgres: Any) -> str:
    """One database per test process; each test starts from empty tables."""
    return str(postgres.create_database(f"qr_index_{uuid.uuid4().hex[:16]}"))


def open_backend(kind: str, storage: Storage, request: pytest.FixtureRequest) -> Index:
    if kind == "sqlite":
        return Index.for_root(storage.root)
    opened = PgIndex(request.getfixturevalue("pg_index_url"))
    with opened._transaction() as db:
        db.execute("TRUNCATE patient, study, series, instance")
    return opened


@pytest.fixture(params=BACKENDS)
def index(request: pytest.FixtureRequest, storage: Storage) -> Iterator[Index]:
    with open_backend(request.param, storage, request) as opened:
        yield opened


@pytest.fixture
def filled(storage: Storage, index: Index) -> Index:
    populate(storage, index)
    return index


@pytest.fixture
def sqlite_filled(storage: Storage) -> Iterator[Index]:
    with Index.for_root(storage.root) as opened:
        populate(storage, opened)
        yield opened


def keys(rows: list[dict[str, str]], keyword: str) -> list[str]:
    return sorted(row[keyword] for row in rows)


def test_add_and_count(filled: Index, storage: Storage) -> None:
    assert filled.count() == 9
    if not isinstance(filled, PgIndex):
        assert filled.path == storage.root / INDEX_NAME
    assert len(filled.query("PATIENT")) == 3
    assert len(filled.query("study")) == 4
    assert len(filled.query("SERIES")) == 5
    images = filled.query("IMAGE", {"SOPInstanceUID": uid(1, 1, 2)})
    assert len(images) == 1
    image = images[0]
    assert Path(image["path"]) == storage.root / uid(1) / uid(1, 1) / f"{uid(1, 1, 2)}.dcm"
    assert Path(image["path"]).stat().st_size == int(image["size"])
    assert image["source_ae_title"] == "SCANNER"
    assert image["TransferSyntaxUID"] == EXPLICIT
    assert image["PatientName"] == "Müller^Jörg"  # higher levels are included
    assert image["StudyDate"] == "20240110"
    assert image["received_at"].endswith("+00:00")
    assert filled.locate(uid(1, 1, 2)) == Path(image["path"])
    assert filled.locate(uid(9, 9, 9)) is None


def test_upsert_is_idempotent(filled: Index, storage: Storage) -> None:
    for stored in populate(storage):
        filled.add(stored)
    assert filled.count() == 9
    assert len(filled.query("SERIES")) == 5


@pytest.mark.parametrize(
    ("level", "filters", "keyword", "expected"),
    [
        ("PATIENT", {"PatientID": "P2"}, "PatientID", ["P2"]),
        ("PATIENT", {"PatientName": "müller*"}, "PatientID", ["P1"]),  # PN: case-insensitive
        ("PATIENT", {"PatientName": "SMITH^ANNA"}, "PatientID", ["P2"]),
        ("PATIENT", {"PatientID": "P?"}, "PatientID", ["P1", "P2", "P3"]),
        ("PATIENT", {"PatientID": "p1"}, "PatientID", []),  # LO: case-sensitive
        ("PATIENT", {"PatientName": "O[Brien]*"}, "PatientID", ["P3"]),  # '[' is literal
        ("PATIENT", {"PatientName": "*", "PatientID": ""}, "PatientID", ["P1", "P2", "P3"]),
        ("STUDY", {"StudyDate": "20240101-20240131"}, "AccessionNumber", ["ACC1", "ACC4"]),
        ("STUDY", {"StudyDate": "20240110"}, "AccessionNumber", ["ACC1", "ACC4"]),
        ("STUDY", {"StudyDate": "-20231231"}, "AccessionNumber", ["ACC3", "ACC4"]),
        ("STUDY", {"StudyDate": "20240111-"}, "AccessionNumber", ["ACC2", "ACC4"]),
        ("STUDY", {"StudyDate": "20230101-20241231"}, "AccessionNumber",
         ["ACC1", "ACC2", "ACC3", "ACC4"]),  # ACC4 has no date: unknown matches (C.2.2.1.1)
        ("STUDY", {"StudyTime": "1200-1200"}, "AccessionNumber", ["ACC2", "ACC4"]),  # 12:00:30
        ("STUDY", {"StudyTime": "-0900"}, "AccessionNumber", ["ACC1", "ACC4"]),
        ("STUDY", {"PatientID": "P1", "StudyDate": "2024*"}, "AccessionNumber", []),  # DA: no *
        ("STUDY", {"PatientID": "P1", "AccessionNumber": "A*"}, "StudyID", ["", ""]),
        (
            "STUDY",
            {"StudyInstanceUID": f"{uid(1)}\\{uid(3)}"},
            "AccessionNumber",
            ["ACC1", "ACC3"],
        ),
        ("STUDY", {"StudyInstanceUID": uid(1) + "*"}, "AccessionNumber", []),  # UIDs: no wildcard
        ("SERIES", {"Modality": "CT"}, "SeriesNumber", ["1", "3", "5"]),
        ("SERIES", {"Modality": "C?", "PatientID": "P1"}, "SeriesNumber", ["1", "3"]),
        ("IMAGE", {"SeriesInstanceUID": uid(1, 1)}, "InstanceNumber", ["1", "2", "3"]),
        ("IMAGE", {"SOPClassUID": MR}, "SOPInstanceUID", [uid(1, 2, 1), uid(1, 2, 2)]),
        ("IMAGE", {"TransferSyntaxUID": IMPLICIT, "Modality": "US"}, "InstanceNumber", ["1"]),
    ],
)
def test_query_matching(
    filled: Index, level: str, filters: dict[str, str], keyword: str, expected: list[str]
) -> None:
    assert keys(filled.query(level, filters), keyword) == expected


def test_query_refuses_bad_level_and_keys(filled: Index) -> None:
    with pytest.raises(ValueError, match="unknown query level 'FRAME'"):
        filled.query("FRAME", {})
    with pytest.raises(ValueError, match="'Modality' is not a key at the STUDY level"):
        filled.query("STUDY", {"Modality": "CT"})
    with pytest.raises(ValueError, match="'path'"):
        filled.query("IMAGE", {"path": "/etc/passwd"})
    with pytest.raises(ValueError, match="'1=1; DROP TABLE patient'"):
        filled.query("PATIENT", {"1=1; DROP TABLE patient": "x"})
    assert filled.count() == 9


def test_remove_prunes_empty_levels(filled: Index) -> None:
    assert filled.remove(uid(3, 4, 1))
    assert not filled.remove(uid(3, 4, 1))
    assert keys(filled.query("PATIENT"), "PatientID") == ["P1", "P2", "P3"]
    assert filled.remove(uid(3, 4, 2))
    assert keys(filled.query("PATIENT"), "PatientID") == ["P1", "P3"]
    assert keys(filled.query("STUDY"), "AccessionNumber") == ["ACC1", "ACC2", "ACC4"]
    assert uid(3, 4) not in keys(filled.query("SERIES"), "SeriesInstanceUID")
    assert filled.count() == 7


def test_instance_moving_series_prunes_the_old_one(filled: Index, storage: Storage) -> None:
    sop = uid(4, 5, 1)
    ds = make_dataset(
        sop=sop, PatientID="P9", StudyInstanceUID=uid(5), SeriesInstanceUID=uid(5, 6)
    )
    filled.add(store(storage, encode(ds, EXPLICIT), sop=sop))
    assert keys(filled.query("PATIENT"), "PatientID") == ["P1", "P2", "P9"]
    assert uid(4) not in keys(filled.query("STUDY"), "StudyInstanceUID")
    assert uid(4, 5) not in keys(filled.query("SERIES"), "SeriesInstanceUID")
    assert filled.count() == 9


def test_study_moving_patient_and_series_moving_study_prune(
    filled: Index, storage: Storage
) -> None:
    # Study 3 (P2's only study) is re-sent under P3: P2 must go, P3 gains the study.
    for number in (1, 2):
        sop = uid(3, 4, number)
        ds = make_dataset(sop=sop, PatientID="P3", StudyInstanceUID=uid(3),
                          SeriesInstanceUID=uid(3, 4))
        filled.add(store(storage, encode(ds, EXPLICIT), sop=sop))
    assert keys(filled.query("PATIENT"), "PatientID") == ["P1", "P3"]
    assert keys(filled.query("STUDY", {"PatientID": "P3"}), "StudyInstanceUID") == sorted(
        [uid(3), uid(4)]
    )
    # Series 3 (study 2's only series) is re-sent inside study 1: study 2 must go.
    sop = uid(2, 3, 1)
    ds = make_dataset(sop=sop, PatientID="P1", StudyInstanceUID=uid(1),
                      SeriesInstanceUID=uid(2, 3))
    filled.add(store(storage, encode(ds, EXPLICIT), sop=sop))
    assert uid(2) not in keys(filled.query("STUDY"), "StudyInstanceUID")
    assert uid(2, 3) in keys(filled.query("SERIES", {"StudyInstanceUID": uid(1)}),
                             "SeriesInstanceUID")
    assert filled.count() == 9


def test_kept_existing_does_not_change_the_index(tmp_path: Path) -> None:
    storage = Storage(StorageSettings(root=tmp_path, duplicates=DuplicatePolicy.KEEP))
    with Index.for_root(tmp_path) as index:
        first = store(storage, encode(make_dataset(PatientID="FIRST"), EXPLICIT))
        index.add(first)
        second = store(storage, encode(make_dataset(PatientID="SECOND"), EXPLICIT))
        assert second.outcome is StoreOutcome.KEPT_EXISTING
        index.add(second)
        assert keys(index.query("PATIENT"), "PatientID") == ["FIRST"]
    with Index(tmp_path / "other.sqlite") as fresh:  # not indexed yet: reads the kept file
        fresh.add(second)
        assert keys(fresh.query("PATIENT"), "PatientID") == ["FIRST"]


def _image_rows(index: Index) -> list[dict[str, str]]:
    rows = index.query("IMAGE")
    for row in rows:
        del row["received_at"]
    return rows


def test_rebuild_equals_incremental(filled: Index, storage: Storage, tmp_path: Path) -> None:
    (storage.incoming / "junk.part").write_bytes(b"partial")
    (storage.root / "notes.txt").write_text("not DICOM")
    (storage.root / "broken.dcm").write_bytes(b"\x00" * 200)
    with Index(tmp_path / "rebuilt.sqlite") as rebuilt:
        assert rebuilt.rebuild(storage.root) == 9
        assert _image_rows(rebuilt) == _image_rows(filled)
        for level in ("PATIENT", "STUDY", "SERIES"):
            assert rebuilt.query(level) == filled.query(level)


def test_rebuild_in_place_drops_missing_files(filled: Index, storage: Storage) -> None:
    before = _image_rows(filled)
    gone = Path(before[0]["path"])
    gone.unlink()
    assert filled.rebuild(storage.root) == 8
    assert _image_rows(filled) == [row for row in before if row["path"] != str(gone)]
    assert filled.locate(before[0]["SOPInstanceUID"]) is None


def test_shared_between_connections_in_wal_mode(sqlite_filled: Index) -> None:
    filled = sqlite_filled
    with Index(filled.path) as other:
        assert other.count() == 9
        assert other.remove(uid(1, 1, 1))
    assert filled.count() == 8
    with sqlite3.connect(filled.path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_read_stored_file_matches_commit(storage: Storage) -> None:
    stored = store(storage, encode(make_dataset(), IMPLICIT), IMPLICIT)
    again = read_stored_file(stored.path)
    assert again.attributes == stored.attributes
    assert (again.sop_class_uid, again.transfer_syntax_uid) == (CT, IMPLICIT)
    assert again.size == stored.size


def test_unreadable_index_path(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="cannot open the index"):
        Index(tmp_path / "missing-dir" / INDEX_NAME)


def test_query_reads_in_bounded_pages(filled: Index) -> None:
    """Keyset pages (issue 16 item 9): every row once, in order, never more than a page."""
    pages = list(filled.pages("IMAGE", {}, size=2))
    assert [len(page) for page in pages] == [2, 2, 2, 2, 1]
    rows = [row["SOPInstanceUID"] for page in pages for row in page]
    assert rows == [row["SOPInstanceUID"] for row in filled.query("IMAGE")]
    assert len(set(rows)) == 9
    studies = [row["StudyInstanceUID"] for page in filled.pages("STUDY", size=1)
               for row in page]
    assert studies == sorted(studies) and len(studies) == 4
    with pytest.raises(ValueError, match="'Modality' is not a key"):
        filled.pages("STUDY", {"Modality": "CT"})  # refused at once, not on first page


def test_search_indexes_exist(sqlite_filled: Index) -> None:
    filled = sqlite_filled
    db = sqlite3.connect(filled.path)
    try:
        names = {row[0] for row in db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        db.close()
    assert {"study_StudyDate", "study_AccessionNumber", "patient_PatientName_fold",
            "instance_ContentDate"} <= names


_V1_SCHEMA = [
    "CREATE TABLE patient (\"PatientID\" TEXT PRIMARY KEY, \"PatientName\" TEXT NOT NULL "
    "DEFAULT '', \"PatientBirthDate\" TEXT NOT NULL DEFAULT '', \"PatientSex\" TEXT NOT NULL "
    "DEFAULT '')",
    "CREATE TABLE study (\"StudyInstanceUID\" TEXT PRIMARY KEY, \"StudyDate\" TEXT NOT NULL "
    "DEFAULT '', \"StudyTime\" TEXT NOT NULL DEFAULT '', \"AccessionNumber\" TEXT NOT NULL "
    "DEFAULT '', \"StudyDescription\" TEXT NOT NULL DEFAULT '', \"ReferringPhysicianName\" "
    "TEXT NOT NULL DEFAULT '', \"StudyID\" TEXT NOT NULL DEFAULT '', \"PatientID\" TEXT NOT "
    "NULL)",
    "CREATE TABLE series (\"SeriesInstanceUID\" TEXT PRIMARY KEY, \"Modality\" TEXT NOT NULL "
    "DEFAULT '', \"SeriesNumber\" TEXT NOT NULL DEFAULT '', \"SeriesDescription\" TEXT NOT "
    "NULL DEFAULT '', \"StudyInstanceUID\" TEXT NOT NULL)",
    "CREATE TABLE instance (\"SOPInstanceUID\" TEXT PRIMARY KEY, \"SOPClassUID\" TEXT NOT "
    "NULL DEFAULT '', \"InstanceNumber\" TEXT NOT NULL DEFAULT '', \"TransferSyntaxUID\" TEXT "
    "NOT NULL DEFAULT '', \"SeriesInstanceUID\" TEXT NOT NULL, path TEXT NOT NULL, size "
    "INTEGER NOT NULL, source_ae_title TEXT NOT NULL DEFAULT '', received_at REAL NOT NULL, "
    "indexed_at REAL NOT NULL)",
    "CREATE INDEX patient_PatientName ON patient(\"PatientName\")",
    "INSERT INTO patient VALUES ('P1', 'MÜLLER^Jörg', '', '')",
    "INSERT INTO study VALUES ('1.2.3', '20240110', '', 'ACC1', '', '', '', 'P1')",
    "INSERT INTO series VALUES ('1.2.3.4', 'CT', '1', '', '1.2.3')",
    "INSERT INTO instance VALUES ('1.2.3.4.5', '1.2', '1', '1.2.840.10008.1.2', '1.2.3.4', "
    "'/x.dcm', 10, 'AE', 0.0, 0.0)",
    "PRAGMA user_version = 1",
]
"""An index as aiodicom wrote it before schema_version existed (user_version 1)."""


def test_sqlite_index_upgraded_in_place(tmp_path: Path) -> None:
    """Versioned migrations (issue 14 item 2): a version 1 index keeps its rows, gains the
    IMAGE date/time columns and the folded PN column (filled), and records version 2."""
    path = tmp_path / INDEX_NAME
    db = sqlite3.connect(path)
    for statement in _V1_SCHEMA:
        db.execute(statement)
    db.commit()
    db.close()
    with Index(path) as upgraded:
        assert upgraded.count() == 1
        assert keys(upgraded.query("PATIENT", {"PatientName": "müller*"}), "PatientID") == ["P1"]
        assert upgraded.query("IMAGE", {"ContentDate": "20240101"}) == []
        assert [r["ContentDate"] for r in upgraded.query("IMAGE")] == [""]
    db = sqlite3.connect(path)
    try:
        assert db.execute("SELECT version FROM schema_version").fetchall() == [(2,)]
        assert db.execute("PRAGMA user_version").fetchone() == (2,)
        db.execute("UPDATE schema_version SET version = 3")
        db.commit()
    finally:
        db.close()
    with pytest.raises(StorageError, match="schema version 3, newer"):
        Index(path)


def test_a_batch_prunes_as_one_by_one_would(filled: Index, storage: Storage) -> None:
    """add_many (one transaction; on PostgreSQL a batch of executemany) ends where adding
    the same instances one at a time ends: moved instances leave no empty parent, the last
    instance of the batch wins."""
    batch = []
    for number in (1, 2):  # study 3 (P2's only one) moves under P3
        sop = uid(3, 4, number)
        batch.append(store(storage, encode(make_dataset(
            sop=sop, PatientID="P3", StudyInstanceUID=uid(3), SeriesInstanceUID=uid(3, 4),
            AccessionNumber=f"NEW{number}"), EXPLICIT), sop=sop))
    sop = uid(2, 3, 1)  # series 3 (study 2's only one) moves into study 1
    batch.append(store(storage, encode(make_dataset(
        sop=sop, PatientID="P1", StudyInstanceUID=uid(1), SeriesInstanceUID=uid(2, 3)),
        EXPLICIT), sop=sop))
    filled.add_many(batch)
    assert keys(filled.query("PATIENT"), "PatientID") == ["P1", "P3"]
    assert uid(2) not in keys(filled.query("STUDY"), "StudyInstanceUID")
    assert [r["AccessionNumber"] for r in filled.query(
        "STUDY", {"StudyInstanceUID": uid(3)})] == ["NEW2"]
    assert filled.count() == 9
