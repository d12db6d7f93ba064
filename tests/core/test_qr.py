"""Q/R information models and the identifier codec (core.qr): pure, no I/O."""

from __future__ import annotations

import pytest
from pydicom.dataset import Dataset

from aiodicom.core.negotiation import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from aiodicom.core.qr import (
    MAX_IDENTIFIER,
    MODELS,
    UNCOMPRESSED_SYNTAXES,
    InvalidIdentifier,
    decode_identifier,
    encode_identifier,
    model_of,
    qr_contexts,
    retrieve_contexts,
)
from aiodicom.errors import DicomError, DimseError

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_models_name_the_sop_classes_of_ps34_c6() -> None:
    assert MODELS["patient"].find == "1.2.840.10008.5.1.4.1.2.1.1"
    assert MODELS["study"].get == "1.2.840.10008.5.1.4.1.2.2.3"
    for name, model in MODELS.items():
        for uid in (model.find, model.move, model.get):
            assert model_of(uid) == name
    assert model_of("1.2.3") == "study"  # unknown: Study Root, the common model


def test_contexts_cover_find_get_move_of_both_models() -> None:
    contexts = qr_contexts()
    assert len(contexts) == 6
    assert all(list(syntaxes) == list(UNCOMPRESSED_SYNTAXES) for _, syntaxes in contexts)
    with_storage, roles = retrieve_contexts([CT])
    assert with_storage[:6] == contexts and with_storage[6][0] == CT
    assert [(r.sop_class_uid, r.scu_role, r.scp_role) for r in roles] == [(CT, False, True)]


@pytest.mark.parametrize("syntax", [IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN,
                                    EXPLICIT_VR_BIG_ENDIAN])
def test_identifier_round_trip_keeps_wildcards_and_ranges(syntax: str) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.PatientName = "Doe*"
    ds.StudyDate = "20260101-20261231"  # a range is no valid DA value: allowed in a query
    ds.StudyInstanceUID = ""
    back = decode_identifier(encode_identifier(ds, syntax), syntax)
    assert back.PatientName == "Doe*" and back.StudyDate == "20260101-20261231"
    assert back.StudyInstanceUID == "" and back.QueryRetrieveLevel == "STUDY"


def test_undecodable_and_oversized_identifiers_are_one_error_type() -> None:
    with pytest.raises(InvalidIdentifier, match="undecodable") as bad:
        decode_identifier(b"\x08\x00\x52\x00\xff\xff\xff\x7f", IMPLICIT_VR_LITTLE_ENDIAN)
    assert isinstance(bad.value, DimseError) and isinstance(bad.value, DicomError)
    assert isinstance(bad.value, ValueError)
    with pytest.raises(InvalidIdentifier, match="larger than"):
        decode_identifier(bytes(MAX_IDENTIFIER + 2), EXPLICIT_VR_LITTLE_ENDIAN)
