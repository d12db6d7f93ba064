"""index_journal.entry: the hand-built journal line is the JSON encoder's, byte for byte."""

from __future__ import annotations

import enum
import math
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.app.archive.index_journal import _ENCODE, _entry_fields, entry, parse_entry
from aiodicom.app.archive.storage import StoredInstance, StoreOutcome

_TEXT = st.text(max_size=20)  # every code point: quotes, controls, non-ASCII, surrogates


def _encoded(stored: StoredInstance) -> bytes:
    return _ENCODE(_entry_fields(stored)).encode() + b"\n"


def _instance(**changes: object) -> StoredInstance:
    values: dict[str, object] = dict(
        path=Path("/srv/dicom/1.2/1.2.3/1.2.3.4.dcm"), sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid="1.2.3.4", transfer_syntax_uid="1.2.840.10008.1.2",
        study_instance_uid="1.2", series_instance_uid="1.2.3", size=2048,
        source_ae_title="STORESCU", received_at=1_764_800_000.123456,
        outcome=StoreOutcome.STORED,
        attributes={"PatientID": "P1", "PatientName": "Doe^Jane", "StudyDate": ""})
    values.update(changes)
    return StoredInstance(**values)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(path=_TEXT, uids=st.lists(_TEXT, min_size=6, max_size=6),
       size=st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
       received=st.floats(allow_nan=True, allow_infinity=True),
       outcome=st.sampled_from(StoreOutcome),
       attributes=st.dictionaries(_TEXT, _TEXT, max_size=8))
def test_entry_is_the_encoders_line(path: str, uids: list[str], size: int, received: float,
                                    outcome: StoreOutcome, attributes: dict[str, str]) -> None:
    stored = StoredInstance(
        path=Path(path), sop_class_uid=uids[0], sop_instance_uid=uids[1],
        transfer_syntax_uid=uids[2], study_instance_uid=uids[3],
        series_instance_uid=uids[4], size=size, source_ae_title=uids[5],
        received_at=received, outcome=outcome, attributes=attributes)
    line = entry(stored)
    assert line == _encoded(stored)
    if math.isfinite(received):
        assert parse_entry(line) == StoredInstance(
            path=Path(str(Path(path))), sop_class_uid=uids[0], sop_instance_uid=uids[1],
            transfer_syntax_uid=uids[2], study_instance_uid=uids[3],
            series_instance_uid=uids[4], size=size, source_ae_title=uids[5],
            received_at=received, outcome=outcome, attributes=attributes)


class _Number(enum.IntEnum):
    SIZE = 7


class _Text(str):
    pass


def test_entry_of_other_types_is_the_encoders_line() -> None:
    """What the encoder writes its own way (true, NaN, an IntEnum's int, null, a non-str
    key, a str subclass) or refuses, entry writes or refuses the same."""
    for changes in ({"size": True}, {"size": _Number.SIZE}, {"received_at": 5},
                    {"received_at": float("nan")}, {"received_at": -math.inf},
                    {"source_ae_title": None}, {"attributes": {1: "one", "x": None}},
                    {"sop_instance_uid": _Text("1.2.3")}, {"attributes": {_Text("k"): "v"}}):
        stored = _instance(**changes)
        assert entry(stored) == _encoded(stored), changes
    for bad in ({"attributes": {"x": object()}}, {"size": 1j}):
        stored = _instance(**bad)
        for make in (entry, _encoded):
            try:
                make(stored)
            except TypeError:
                continue
            raise AssertionError(f"{bad} encoded")
