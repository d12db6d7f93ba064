"""Index text that one backend would refuse: the same answers from SQLite and PostgreSQL."""

from __future__ import annotations

from aiodicom.app.archive.index import Index
from aiodicom.app.archive.index_pg import numbered
from aiodicom.app.archive.storage import Storage

from .test_index import index, pg_index_url, storage  # noqa: F401
from .test_storage import EXPLICIT, encode, make_dataset, store


def test_numbered_has_no_cap() -> None:
    """A C-MOVE's UID list may bind 10,000+ values: $10000 and on are numbered too."""
    sql = "SELECT 1 WHERE x IN (" + ",".join("?" * 12_000) + ")"
    text = numbered(sql)
    assert "?" not in text
    assert text.endswith("$11999,$12000)")


def test_a_nul_inside_a_name_is_indexed_on_both_backends(
        storage: Storage, index: Index) -> None:  # noqa: F811
    """PostgreSQL refuses NUL in text ("invalid byte sequence for encoding UTF8: 0x00"):
    the acknowledged instance was missing from C-FIND on PostgreSQL only. The index copy
    drops an inner NUL (the file keeps its bytes), on both backends alike."""
    ds = make_dataset(PatientName="A\x00B^C")
    stored = store(storage, encode(ds, EXPLICIT))
    assert stored.attributes["PatientName"] == "AB^C"
    index.add(stored)
    rows = index.query("STUDY", {"PatientName": "AB^C"})
    assert [row["PatientName"] for row in rows] == ["AB^C"]
    assert b"A\x00B^C" in stored.path.read_bytes()
