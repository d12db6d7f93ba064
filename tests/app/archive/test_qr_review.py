"""Review of issue 16 against PS3.4 Annex C: matching cases the first tests did not cover
(DT with a negative UTC offset, TM values equal but spelt with a fraction, an empty
ModalitiesInStudy list, PN wildcards on case-folded text), on both index backends."""

from __future__ import annotations

from typing import Any

from aiodicom.app.archive.index import Index
from aiodicom.app.archive.qr import QueryRetrieve
from aiodicom.app.archive.storage import Storage
from aiodicom.core.dimse import Status

from .test_index import index, pg_index_url, storage, uid  # noqa: F401 - fixtures
from .test_qr import _add, find, qr  # noqa: F401 - fixtures


def _sops(found: list[tuple[Status, Any]]) -> list[tuple[Status, str]]:
    return [(s, str(ds.SOPInstanceUID) if ds is not None else "") for s, ds in found]


def _times(storage: Storage, index: Index, **column: str) -> None:  # noqa: F811
    (keyword, values), = column.items()
    for number, value in enumerate(values.split(","), start=1):
        _add(storage, index, uid(7, 1, number), PatientID="P7", StudyInstanceUID=uid(7),
             SeriesInstanceUID=uid(7, 1), AccessionNumber="ACC7", **{keyword: value})


def _image(qr: QueryRetrieve, **keys: str) -> list[tuple[Status, str]]:  # noqa: F811
    return _sops(find(qr, "study", "IMAGE", StudyInstanceUID=uid(7),
                      SeriesInstanceUID=uid(7, 1), **keys))


def test_dt_with_a_negative_offset_is_a_single_value(
        qr: QueryRetrieve, storage: Storage, index: Index) -> None:  # noqa: F811
    """PS3.5 DT: YYYYMMDDHHMMSS.FFFFFF&ZZXX, & being + or -. "20240102120000-0500" is one
    value (noon at UTC-5), not the range 20240102120000 to 0500 (PS3.4 C.2.2.2.5)."""
    _times(storage, index, AcquisitionDateTime="20240102120000-0500,20240102120000+0100")
    assert _image(qr, AcquisitionDateTime="20240102120000-0500") == [
        (Status.PENDING, uid(7, 1, 1))]
    # A range whose bounds carry negative offsets is still a range of two values.
    assert _image(qr, AcquisitionDateTime="20240102-0500-20240103-0500") == [
        (Status.PENDING, uid(7, 1, 1)), (Status.PENDING, uid(7, 1, 2))]


def test_tm_single_value_ignores_trailing_fraction_zeros(
        qr: QueryRetrieve, storage: Storage, index: Index) -> None:  # noqa: F811
    """TM matches by value (docs/conformance.md): 120000 is 12:00:00 whether stored as 1200,
    120000 or 120000.000, as the range 120000-120000 already finds."""
    _times(storage, index, ContentTime="120000.000,1200,120000.5")
    expected = [(Status.PENDING, uid(7, 1, 1)), (Status.PENDING, uid(7, 1, 2))]
    assert _image(qr, ContentTime="120000-120000")[:2] == expected
    assert _image(qr, ContentTime="120000") == expected
    assert _image(qr, ContentTime="120000.50") == [(Status.PENDING, uid(7, 1, 3))]


def test_empty_modalities_in_study_list_is_universal(qr: QueryRetrieve) -> None:  # noqa: F811
    """ModalitiesInStudy "\\" (two empty values) holds no modality to match: universal, not
    an SQL syntax error that ends the C-FIND."""
    everything = find(qr, "study", "STUDY", ModalitiesInStudy="")
    found = find(qr, "study", "STUDY", ModalitiesInStudy=["", ""])
    assert [s for s, _ in found] == [Status.PENDING] * len(everything)


def test_an_empty_optional_time_is_not_midnight(
        qr: QueryRetrieve, storage: Storage, index: Index) -> None:  # noqa: F811
    """An empty ContentTime (an Optional key) matches only universal matching
    (docs/conformance.md), not "-0900" nor "000000" as if it were 00:00:00."""
    _times(storage, index, ContentTime=",000000")
    assert _image(qr, ContentTime="-0900") == [(Status.PENDING, uid(7, 1, 2))]
    assert _image(qr, ContentTime="000000") == [(Status.PENDING, uid(7, 1, 2))]
    assert len(_image(qr, ContentTime="")) == 2


def test_is_single_value_matches_by_value(qr: QueryRetrieve) -> None:  # noqa: F811
    """IS is an integer: SeriesNumber 01 (or +1) names the series stored as 1."""
    for value in ("01", "+1", "1"):
        found = find(qr, "study", "SERIES", StudyInstanceUID=uid(1), SeriesNumber=value)
        assert [str(ds.SeriesInstanceUID) for _, ds in found] == [uid(1, 1)], value


def test_charset_is_the_answer_s_own(qr: QueryRetrieve) -> None:  # noqa: F811
    """A SERIES answer that holds only ASCII declares no (0008,0005), though the study's
    patient (not asked for) is Müller^Jörg; asking for the name brings ISO_IR 100."""
    plain = find(qr, "study", "SERIES", StudyInstanceUID=uid(1), Modality="")
    assert plain and all("SpecificCharacterSet" not in ds for _, ds in plain)
    named = find(qr, "study", "SERIES", StudyInstanceUID=uid(1), PatientName="")
    assert [ds.SpecificCharacterSet for _, ds in named] == ["ISO_IR 100"] * len(named)
    assert {str(ds.PatientName) for _, ds in named} == {"Müller^Jörg"}


def test_a_long_uid_list_matches_on_both_backends(qr: QueryRetrieve,  # noqa: F811
                                                  index: Index) -> None:  # noqa: F811
    """A UID list of 12,000 UIDs (~330 KB: an implicit VR identifier, under the 1 MiB
    bound) matches on PostgreSQL as on SQLite: one bound value per UID ran out of
    numbered placeholders (RuntimeError "coroutine raised StopIteration" past 9,999)."""
    uids = [f"1.2.826.0.1.3680043.9.99.{n}" for n in range(12_000)] + [uid(1)]
    rows = index.query("STUDY", {"StudyInstanceUID": "\\".join(uids)})
    assert [row["StudyInstanceUID"] for row in rows] == [uid(1)]
