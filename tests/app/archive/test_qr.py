"""The bundled server's Q/R handlers over a filled index (PS3.4 Annex C), without a network:
the information models' levels, unique keys for retrieves, character sets of responses,
computed keys, 0xFF01 for keys that were not matched, Retrieve AE Title."""

from __future__ import annotations

import asyncio
import warnings
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.qr_service import RetrievePlan
from aiodicom.aio.requests import FindRequest, GetRequest, MoveRequest
from aiodicom.app.archive.index import Index
from aiodicom.app.archive.qr import QueryRetrieve
from aiodicom.app.archive.storage import Storage
from aiodicom.core.dimse import CFindRQ, CGetRQ, CMoveRQ, Status
from aiodicom.core.qr import MODELS, decode_identifier, encode_identifier

from .test_index import (  # noqa: F401 - fixtures
    LAYOUT,
    index,
    pg_index_url,
    populate,
    storage,
    uid,
)
from .test_storage import EXPLICIT, encode, make_dataset

GREEK = "Παπαδόπουλος^Γιάννης"


def _add(into: Storage, idx: Index, sop: str, **values: str) -> None:
    ds = make_dataset(sop=sop, **values)
    writer = into.begin(sop_class_uid=ds.SOPClassUID, sop_instance_uid=sop,
                           transfer_syntax_uid=EXPLICIT, source_ae_title="SCANNER")
    with writer:
        writer.write(encode(ds, EXPLICIT))
        idx.add(writer.commit())


@pytest.fixture
def qr(storage: Storage, index: Index) -> QueryRetrieve:  # noqa: F811 - the fixtures
    populate(storage, index)
    _add(storage, index, uid(5, 6, 1), PatientID="P4", PatientName=GREEK,
         StudyInstanceUID=uid(5), SeriesInstanceUID=uid(5, 6), StudyTime="1200",
         AccessionNumber="ACC5", Modality="MR")
    _add(storage, index, uid(6, 7, 1), PatientID="P5", PatientName="Plain^Name",
         StudyInstanceUID=uid(6), SeriesInstanceUID=uid(6, 7), AccessionNumber="ACC6")
    return QueryRetrieve(storage.root, index)


INFO = AssociationInfo(id=1, calling_ae_title="SCU", called_ae_title="ARCHIVE",
                       peer_address=None)


def _identifier(level: str, charset: str | None = None, **keys: Any) -> Any:
    """The identifier as the SCP receives it: encoded and decoded again."""
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.QueryRetrieveLevel = level
    with warnings.catch_warnings():  # wildcards are not valid values of their VR
        warnings.simplefilter("ignore")
        for keyword, value in keys.items():
            setattr(ds, keyword, value)
    return decode_identifier(encode_identifier(ds, EXPLICIT), EXPLICIT)


def find(qr: QueryRetrieve, model: str, level: str, charset: str | None = None,
         **keys: Any) -> list[tuple[Status, Any]]:
    request = FindRequest(association=INFO, context_id=1,
                          identifier=_identifier(level, charset, **keys),
                          command=CFindRQ(message_id=1,
                                          affected_sop_class_uid=MODELS[model].find))

    async def go() -> list[tuple[Status, Any]]:
        return [(Status(int(s)), ds) async for s, ds in qr.find(request)]

    return asyncio.run(go())


def retrieve(qr: QueryRetrieve, kind: str, model: str, level: str, **keys: Any) -> Any:
    """The files a C-GET/C-MOVE would send, or the Status it ends with."""
    identifier = _identifier(level, **keys)
    if kind == "move":
        request: Any = MoveRequest(
            association=INFO, context_id=1, identifier=identifier,
            command=CMoveRQ(message_id=1, affected_sop_class_uid=MODELS[model].move,
                            move_destination="DEST"))
        items = qr.move(request)
    else:
        request = GetRequest(association=INFO, context_id=1, identifier=identifier,
                             command=CGetRQ(message_id=1,
                                            affected_sop_class_uid=MODELS[model].get))
        items = qr.get(request)

    async def go() -> Any:
        found = [item async for item in items]
        if len(found) == 1 and isinstance(found[0], Status):
            return found[0]
        plan, *files = found  # the count first, then the files, one at a time
        assert isinstance(plan, RetrievePlan) and plan.total == len(files)
        return sorted(Path(p).stem for p in files)

    return asyncio.run(go())


# -- item 3: a retrieve names its unique keys (PS3.4 C.4.2.2.1, C.4.3.2.1) ----------------

@pytest.mark.parametrize("kind", ["move", "get"])
@pytest.mark.parametrize(("model", "level", "keys"), [
    ("study", "STUDY", {}),
    ("study", "STUDY", {"StudyInstanceUID": ""}),
    ("study", "STUDY", {"StudyInstanceUID": "*"}),
    ("study", "STUDY", {"PatientID": "P1"}),  # not a unique key of the level
    ("study", "STUDY", {"PatientName": "Müller*", "StudyInstanceUID": ""}),
    ("study", "SERIES", {"StudyInstanceUID": uid(1)}),
    ("study", "SERIES", {"SeriesInstanceUID": uid(1, 1)}),  # no study above
    ("study", "IMAGE", {"SOPInstanceUID": uid(1, 1, 1)}),
    ("study", "PATIENT", {"PatientID": "P1"}),  # Study Root has no PATIENT level
    ("patient", "PATIENT", {"PatientID": "P*"}),
    ("patient", "PATIENT", {"PatientID": "P1\\P2"}),
    ("patient", "STUDY", {"StudyInstanceUID": uid(1)}),  # no PatientID above
    ("patient", "STUDY", {"PatientID": "P?", "StudyInstanceUID": uid(1)}),
])
def test_retrieve_without_unique_keys_is_refused(
        qr: QueryRetrieve, kind: str, model: str, level: str, keys: dict[str, str]) -> None:
    assert retrieve(qr, kind, model, level, **keys) == Status.DATASET_MISMATCH


@pytest.mark.parametrize(("model", "level", "keys", "count"), [
    ("study", "STUDY", {"StudyInstanceUID": uid(1)}, 5),
    ("study", "STUDY", {"StudyInstanceUID": [uid(1), uid(3)]}, 7),  # a UID list
    ("study", "SERIES", {"StudyInstanceUID": uid(1), "SeriesInstanceUID": uid(1, 2)}, 2),
    ("study", "IMAGE", {"StudyInstanceUID": uid(1), "SeriesInstanceUID": uid(1, 1),
                        "SOPInstanceUID": [uid(1, 1, 1), uid(1, 1, 3)]}, 2),
    ("patient", "PATIENT", {"PatientID": "P1"}, 6),
    ("patient", "STUDY", {"PatientID": "P1", "StudyInstanceUID": uid(2)}, 1),
    ("patient", "STUDY", {"PatientID": "P2", "StudyInstanceUID": uid(2)}, 0),
    # other keys do not widen or narrow a retrieve: only unique keys match
    ("study", "STUDY", {"StudyInstanceUID": uid(1), "PatientName": "Nobody"}, 5),
])
def test_retrieve_by_unique_keys(qr: QueryRetrieve, model: str, level: str,
                                 keys: dict[str, Any], count: int) -> None:
    assert len(retrieve(qr, "move", model, level, **keys)) == count
    assert len(retrieve(qr, "get", model, level, **keys)) == count


# -- item 2: the levels of each model and the hierarchical search (C.4.1.2.1) -------------

@pytest.mark.parametrize(("model", "level", "keys"), [
    ("study", "PATIENT", {"PatientID": ""}),
    ("study", "SERIES", {"SeriesInstanceUID": ""}),
    ("study", "SERIES", {"StudyInstanceUID": "*", "Modality": ""}),
    ("study", "IMAGE", {"StudyInstanceUID": uid(1), "SOPInstanceUID": ""}),
    ("patient", "STUDY", {"StudyInstanceUID": ""}),
    ("patient", "SERIES", {"PatientID": "P1", "SeriesInstanceUID": ""}),
    ("study", "FRAME", {"StudyInstanceUID": ""}),
    ("study", "", {"StudyInstanceUID": ""}),
])
def test_find_enforces_the_hierarchy(qr: QueryRetrieve, model: str, level: str,
                                     keys: dict[str, str]) -> None:
    assert find(qr, model, level, **keys) == [(Status.DATASET_MISMATCH, None)]


def test_find_answers_carry_the_unique_keys_above(qr: QueryRetrieve) -> None:
    series = find(qr, "study", "SERIES", StudyInstanceUID=uid(1), Modality="")
    assert [(s, str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID), ds.Modality)
            for s, ds in series] == [(Status.PENDING, uid(1, 1), uid(1), "CT"),
                                     (Status.PENDING, uid(1, 2), uid(1), "MR")]
    images = find(qr, "patient", "IMAGE", PatientID="P1", StudyInstanceUID=uid(1),
                  SeriesInstanceUID=uid(1, 2), InstanceNumber="")
    assert [(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
            for _, ds in images] == [("P1", uid(1), uid(1, 2), uid(1, 2, n)) for n in (1, 2)]
    patients = find(qr, "patient", "PATIENT", PatientName="")
    assert sorted(ds.PatientID for _, ds in patients) == ["P1", "P2", "P3", "P4", "P5"]


# -- item 1: character sets (C.4.1.1.3.2) -------------------------------------------------

def _wire(ds: Any) -> tuple[bytes, Any]:
    raw = encode_identifier(ds, EXPLICIT)
    return raw, decode_identifier(raw, EXPLICIT)


@pytest.mark.parametrize("charset", [None, "ISO_IR 6", "ISO_IR 100", "ISO_IR 192"])
def test_responses_name_a_charset_that_holds_their_text(qr: QueryRetrieve,
                                                        charset: str | None) -> None:
    found = {str(ds.PatientID): ds for _, ds in find(qr, "study", "STUDY", charset,
                                                     PatientName="", PatientID="")}
    raw, latin = _wire(found["P1"])
    assert latin.SpecificCharacterSet == "ISO_IR 100"
    assert str(latin.PatientName) == "Müller^Jörg" and b"M\xfcller" in raw
    raw, greek = _wire(found["P4"])
    assert greek.SpecificCharacterSet == "ISO_IR 192"
    assert str(greek.PatientName) == GREEK and GREEK.encode() in raw
    raw, plain = _wire(found["P5"])
    assert "SpecificCharacterSet" not in plain and str(plain.PatientName) == "Plain^Name"


def test_a_non_ascii_key_matches_in_any_request_charset(qr: QueryRetrieve) -> None:
    for charset in ("ISO_IR 100", "ISO_IR 192"):
        found = find(qr, "study", "STUDY", charset, PatientName="müller*", AccessionNumber="")
        assert sorted(str(ds.AccessionNumber) for _, ds in found) == ["ACC1", "ACC2"]
    found = find(qr, "study", "STUDY", "ISO_IR 192", PatientName=GREEK.upper(),
                 AccessionNumber="")
    assert [str(ds.AccessionNumber) for _, ds in found] == ["ACC5"]


# -- items 4, 5, 7: computed keys, 0xFF01, Retrieve AE Title, time matching -----------------

def _values(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def test_computed_study_keys(qr: QueryRetrieve) -> None:
    found = find(qr, "study", "STUDY", ModalitiesInStudy="MR",
                 NumberOfStudyRelatedSeries="", NumberOfStudyRelatedInstances="")
    assert [(s, str(ds.StudyInstanceUID), _values(ds.ModalitiesInStudy),
             int(ds.NumberOfStudyRelatedSeries), int(ds.NumberOfStudyRelatedInstances))
            for s, ds in found] == [(Status.PENDING, uid(1), ["CT", "MR"], 2, 5),
                                    (Status.PENDING, uid(5), ["MR"], 1, 1)]
    series = find(qr, "study", "SERIES", StudyInstanceUID=uid(1),
                  NumberOfSeriesRelatedInstances="")
    assert [int(ds.NumberOfSeriesRelatedInstances) for _, ds in series] == [3, 2]
    patients = find(qr, "patient", "PATIENT", PatientID="P1",
                    NumberOfPatientRelatedStudies="", NumberOfPatientRelatedInstances="")
    assert [(int(ds.NumberOfPatientRelatedStudies), int(ds.NumberOfPatientRelatedInstances))
            for _, ds in patients] == [(2, 6)]


@pytest.mark.parametrize(("level", "keys"), [
    ("IMAGE", {"StudyInstanceUID": uid(3), "SeriesInstanceUID": uid(3, 4),
               "AcquisitionDate": "20240101"}),
    ("IMAGE", {"StudyInstanceUID": uid(3), "SeriesInstanceUID": uid(3, 4),
               "ImageComments": ""}),
    ("STUDY", {"AccessionNumber": "ACC3", "NumberOfStudyRelatedSeries": "7"}),
    ("STUDY", {"AccessionNumber": "ACC3", "PatientAge": ""}),
    ("STUDY", {"AccessionNumber": "ACC3", "Modality": "CT"}),  # a SERIES key at STUDY
])
def test_keys_not_matched_answer_ff01(qr: QueryRetrieve, level: str,
                                      keys: dict[str, str]) -> None:
    found = find(qr, "study", level, **keys)
    assert found and all(status == Status.PENDING_WARNING for status, _ in found)


def test_sequence_key_answers_ff01(qr: QueryRetrieve) -> None:
    item = Dataset()
    item.CodeValue = "X"
    found = find(qr, "study", "STUDY", AccessionNumber="ACC3", ProcedureCodeSequence=[item])
    assert [(s, len(ds.ProcedureCodeSequence)) for s, ds in found] == [
        (Status.PENDING_WARNING, 0)]


def test_retrieve_ae_title_is_ours(qr: QueryRetrieve) -> None:
    found = find(qr, "study", "STUDY", AccessionNumber="ACC3", RetrieveAETitle="")
    assert [(s, ds.RetrieveAETitle) for s, ds in found] == [(Status.PENDING, "ARCHIVE")]
    named = QueryRetrieve(qr.root, qr.index, ae_title="PACS")
    assert [ds.RetrieveAETitle for _, ds in find(named, "study", "STUDY",
                                                  AccessionNumber="ACC3")] == ["PACS"]


def test_time_matches_by_value(qr: QueryRetrieve) -> None:
    for key in ("120000", "1200", "12:00:00", "1200-1200", "115959-120001"):
        found = find(qr, "study", "STUDY", PatientID="P4", StudyTime=key, AccessionNumber="")
        assert [str(ds.AccessionNumber) for _, ds in found] == ["ACC5"], key
    assert find(qr, "study", "STUDY", PatientID="P4", StudyTime="120001") == []


def test_empty_stored_value_of_a_required_key_matches(qr: QueryRetrieve) -> None:
    """P3's study has no StudyDate and no StudyTime (PS3.4 C.2.2.1.1)."""
    for keys in ({"StudyDate": "20240110"}, {"StudyDate": "20200101-20201231"},
                 {"StudyTime": "083000"}):
        found = find(qr, "study", "STUDY", PatientID="P3", AccessionNumber="", **keys)
        assert [str(ds.AccessionNumber) for _, ds in found] == ["ACC4"], keys
    # an unknown value never matches a wildcard, and non-Required keys match as given
    assert find(qr, "study", "STUDY", PatientID="P3", StudyDescription="Nothing") == []


def test_empty_required_key_matches_a_wildcard(
        qr: QueryRetrieve, storage: Storage, index: Index) -> None:  # noqa: F811
    """PS3.4 C.2.2.1.2: "all matching against the zero length Required Key shall be
    considered a successful match", wildcards included (AccessionNumber and PN are R)."""
    _add(storage, index, uid(8, 1, 1), PatientID="P8", PatientName="",
         StudyInstanceUID=uid(8), SeriesInstanceUID=uid(8, 1), AccessionNumber="")
    found = find(qr, "study", "STUDY", PatientID="P8", AccessionNumber="ACC*")
    assert [str(ds.StudyInstanceUID) for _, ds in found] == [uid(8)]
    found = find(qr, "study", "STUDY", PatientName="Pl*", AccessionNumber="")
    assert sorted(str(ds.StudyInstanceUID) for _, ds in found) == [uid(6), uid(8)]


def _image_times(storage: Storage, index: Index) -> None:  # noqa: F811
    for number, (date, time, when) in enumerate([
            ("20240101", "080000", "20240101080000"), ("20240102", "1200", "20240102120000.5"),
            ("", "", "")], start=1):
        _add(storage, index, uid(9, 1, number), PatientID="P9", StudyInstanceUID=uid(9),
             SeriesInstanceUID=uid(9, 1), AccessionNumber="ACC9", ContentDate=date,
             ContentTime=time, AcquisitionDateTime=when)


@pytest.mark.parametrize(("keys", "expected"), [
    ({"ContentDate": "20240102"}, [2]),
    ({"ContentDate": "-20240101"}, [1]),
    ({"ContentDate": "20240101-20240131"}, [1, 2]),
    ({"ContentTime": "120000"}, [2]),  # TM by value: a stored 1200
    ({"ContentTime": "0700-0900"}, [1]),
    ({"AcquisitionDateTime": "20240102120000.5"}, [2]),
    ({"AcquisitionDateTime": "-20240101"}, [1]),  # a partial bound covers the whole day
    ({"AcquisitionDateTime": "20240102-"}, [2]),
    ({"ContentDate": "", "ContentTime": "", "AcquisitionDateTime": ""}, [1, 2, 3]),
])
def test_image_date_and_time_keys_are_matched(
        qr: QueryRetrieve, storage: Storage, index: Index,  # noqa: F811
        keys: dict[str, str], expected: list[int]) -> None:
    """ContentDate, ContentTime, AcquisitionDateTime are matched from the index (schema
    version 2), and answered 0xFF00 with their stored values, not 0xFF01."""
    _image_times(storage, index)
    found = find(qr, "study", "IMAGE", StudyInstanceUID=uid(9), SeriesInstanceUID=uid(9, 1),
                 **keys)
    assert [(s, str(ds.SOPInstanceUID)) for s, ds in found] == [
        (Status.PENDING, uid(9, 1, n)) for n in expected]
    if "ContentDate" in keys and not keys["ContentDate"]:
        assert [ds.ContentDate or "" for _, ds in found] == ["20240101", "20240102", ""]


def test_layout_is_what_the_tests_assume() -> None:
    assert sum(row[-1] for row in LAYOUT if row[0] == "P1") == 6
