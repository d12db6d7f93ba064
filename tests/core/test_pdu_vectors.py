"""Binary vectors in tests/vectors: captured from DCMTK, encoded by pynetdicom, or hand-built.

Each ``<name>.bin`` has a ``<name>.txt`` saying where it comes from, with an annotated hex
listing. Its ``reencode:`` line says what a round trip must give: ``exact`` (the same bytes),
``reserved <offsets>`` (the same bytes except reserved bytes the peer did not zero), or
``reordered`` (the same value; we re-encode user-information sub-items in ascending order).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from aiodicom.core.buffer import ReceiveBuffer
from aiodicom.core.items import (
    APPLICATION_CONTEXT_NAME,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationResult,
)
from aiodicom.core.pdu import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    decode_pdu,
    decode_pdu_bytes,
    encode_pdu,
)
from aiodicom.core.user_items import (
    AsyncOperationsWindow,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserIdentityType,
    UserInformation,
)

VECTORS = Path(__file__).resolve().parent.parent / "vectors"
NAMES = sorted(p.stem for p in VECTORS.glob("*.bin"))

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
DCMTK_UID = "1.2.276.0.7230010.3.0.3.6.7"
PYNETDICOM_UID = "1.2.826.0.1.3680043.9.3811.3.0.4"

C_ECHO_RQ = (
    b"\x00\x00\x00\x00\x04\x00\x00\x00\x38\x00\x00\x00"
    b"\x00\x00\x02\x00\x12\x00\x00\x001.2.840.10008.1.1\x00"
    b"\x00\x00\x00\x01\x02\x00\x00\x00\x30\x00"
    b"\x00\x00\x10\x01\x02\x00\x00\x00\x01\x00"
    b"\x00\x00\x00\x08\x02\x00\x00\x00\x01\x01"
)


def _meta(name: str) -> dict[str, str]:
    text = (VECTORS / f"{name}.txt").read_text(encoding="utf-8")
    meta: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        meta[key.strip()] = value.strip()
    return meta


def _dcmtk_ui() -> UserInformation:
    return UserInformation(
        maximum_length=16384,
        implementation_class_uid=DCMTK_UID,
        implementation_version_name="OFFIS_DCMTK_367",
    )


def _pynetdicom_ui(*, is_rq: bool) -> UserInformation:
    return UserInformation(
        maximum_length=32768 if is_rq else 65536,
        implementation_class_uid=PYNETDICOM_UID,
        implementation_version_name="PYNETDICOM_304",
        async_operations_window=AsyncOperationsWindow(
            max_operations_invoked=5, max_operations_performed=3
        ),
        role_selections=(
            RoleSelection(sop_class_uid=CT_STORAGE, scu_role=True, scp_role=True),
            RoleSelection(sop_class_uid="1.2.840.10008.5.1.4.1.1.4", scu_role=False, scp_role=True),
        ),
        extended_negotiations=(
            SOPClassExtendedNegotiation(
                sop_class_uid="1.2.840.10008.5.1.4.1.2.1.1", application_information=b"\1\1\0"
            ),
        ),
        common_extended_negotiations=(
            (
                SOPClassCommonExtendedNegotiation(
                    sop_class_uid="1.2.840.10008.5.1.4.1.1.88.22",
                    service_class_uid="1.2.840.10008.4.2",
                    related_general_sop_classes=(
                        "1.2.840.10008.5.1.4.1.1.88.11",
                        "1.2.840.10008.5.1.4.1.1.88.33",
                    ),
                ),
            )
            if is_rq
            else ()
        ),
        user_identity_rq=(
            UserIdentityRQ(
                identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
                positive_response_requested=True,
                primary_field=b"pat",
                secondary_field=b"s3cr3t",
            )
            if is_rq
            else None
        ),
        user_identity_ac=None if is_rq else UserIdentityAC(server_response=b"ok-token"),
    )


def _pynetdicom_rq() -> AAssociateRQ:
    return AAssociateRQ(
        called_ae_title="ANY-SCP",
        calling_ae_title="PYNETDICOM",
        presentation_contexts=(
            PresentationContextRQ(
                context_id=1,
                abstract_syntax=VERIFICATION,
                transfer_syntaxes=(IMPLICIT_LE, EXPLICIT_LE),
            ),
            PresentationContextRQ(
                context_id=3, abstract_syntax=CT_STORAGE, transfer_syntaxes=(EXPLICIT_LE,)
            ),
        ),
        user_information=_pynetdicom_ui(is_rq=True),
    )


def _pynetdicom_ac() -> AAssociateAC:
    return AAssociateAC(
        called_ae_title="ANY-SCP",
        calling_ae_title="PYNETDICOM",
        presentation_contexts=(
            PresentationContextAC(
                context_id=1, result=PresentationResult.ACCEPTANCE, transfer_syntax=IMPLICIT_LE
            ),
            PresentationContextAC(
                context_id=3,
                result=PresentationResult.TRANSFER_SYNTAXES_NOT_SUPPORTED,
                transfer_syntax=EXPLICIT_LE,
            ),
        ),
        user_information=_pynetdicom_ui(is_rq=False),
    )


def _check_c_echo_rq(value: PDU) -> None:
    assert isinstance(value, PDataTF)
    (pdv,) = value.pdvs
    assert (pdv.context_id, pdv.is_command, pdv.is_last) == (1, True, True)
    assert bytes(pdv.data) == C_ECHO_RQ


def _check_c_echo_rsp(value: PDU) -> None:
    assert isinstance(value, PDataTF)
    (pdv,) = value.pdvs
    assert (pdv.context_id, pdv.is_command, pdv.is_last) == (1, True, True)
    data = bytes(pdv.data)
    assert len(data) == 78
    assert b"\x00\x00\x00\x01\x02\x00\x00\x00\x30\x80" in data  # CommandField 0x8030
    assert data.endswith(b"\x00\x00\x00\x09\x02\x00\x00\x00\x00\x00")  # Status 0x0000


def _check_two_pdvs(value: PDU) -> None:
    assert isinstance(value, PDataTF)
    assert [(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in value.pdvs] == [
        (3, False, False, b"ABCD"),
        (3, False, True, b"EF"),
    ]


def _equals(expected: PDU) -> Callable[[PDU], None]:
    def check(value: PDU) -> None:
        assert value == expected

    return check


CHECKS: dict[str, Callable[[PDU], None]] = {
    "dcmtk_echoscu_a_associate_rq": _equals(
        AAssociateRQ(
            called_ae_title="STORESCP",
            calling_ae_title="ECHOSCU",
            presentation_contexts=(
                PresentationContextRQ(
                    context_id=1, abstract_syntax=VERIFICATION, transfer_syntaxes=(IMPLICIT_LE,)
                ),
            ),
            user_information=_dcmtk_ui(),
            application_context=APPLICATION_CONTEXT_NAME,
            protocol_version=1,
        )
    ),
    "dcmtk_storescp_a_associate_ac": _equals(
        AAssociateAC(
            called_ae_title="STORESCP",
            calling_ae_title="ECHOSCU",
            presentation_contexts=(
                PresentationContextAC(
                    context_id=1, result=PresentationResult.ACCEPTANCE, transfer_syntax=IMPLICIT_LE
                ),
            ),
            user_information=_dcmtk_ui(),
        )
    ),
    "dcmtk_storescp_a_associate_ac_rejected_context": _equals(
        AAssociateAC(
            called_ae_title="STORESCP",
            calling_ae_title="ECHOSCU",
            presentation_contexts=(
                PresentationContextAC(
                    context_id=1, result=PresentationResult.ACCEPTANCE, transfer_syntax=IMPLICIT_LE
                ),
                PresentationContextAC(
                    context_id=3,
                    result=PresentationResult.ABSTRACT_SYNTAX_NOT_SUPPORTED,
                    transfer_syntax=IMPLICIT_LE,
                ),
            ),
            user_information=_dcmtk_ui(),
        )
    ),
    "dcmtk_echoscu_p_data_c_echo_rq": _check_c_echo_rq,
    "dcmtk_storescp_p_data_c_echo_rsp": _check_c_echo_rsp,
    "dcmtk_echoscu_a_release_rq": _equals(AReleaseRQ()),
    "dcmtk_storescp_a_release_rp": _equals(AReleaseRP()),
    "dcmtk_echoscu_a_abort": _equals(AAbort(source=0, reason=0)),
    "dcmtk_storescp_a_associate_rj": _equals(AAssociateRJ(result=1, source=1, reason=1)),
    "pynetdicom_a_associate_rq_all_sub_items": _equals(_pynetdicom_rq()),
    "pynetdicom_a_associate_rq_all_sub_items_ascending": _equals(_pynetdicom_rq()),
    "pynetdicom_a_associate_ac_all_sub_items": _equals(_pynetdicom_ac()),
    "pynetdicom_a_associate_ac_all_sub_items_ascending": _equals(_pynetdicom_ac()),
    "spec_p_data_two_pdvs": _check_two_pdvs,
    "spec_a_abort_provider": _equals(AAbort(source=2, reason=6)),
    "spec_a_associate_rj_protocol_version": _equals(AAssociateRJ(result=2, source=2, reason=2)),
}


KINDS: dict[str, type] = {
    "A-ASSOCIATE-RQ": AAssociateRQ,
    "A-ASSOCIATE-AC": AAssociateAC,
    "A-ASSOCIATE-RJ": AAssociateRJ,
    "P-DATA-TF": PDataTF,
    "A-RELEASE-RQ": AReleaseRQ,
    "A-RELEASE-RP": AReleaseRP,
    "A-ABORT": AAbort,
}


def test_every_vector_is_annotated_and_checked() -> None:
    assert NAMES, "no vectors found"
    assert sorted(CHECKS) == NAMES
    for name in NAMES:
        meta = _meta(name)
        data = (VECTORS / f"{name}.bin").read_bytes()
        assert int(meta["length"]) == len(data), name
        assert meta["reencode"].split()[0] in {"exact", "reserved", "reordered"}, name


@pytest.mark.parametrize("name", NAMES)
def test_vector_decodes_to_its_fields(name: str) -> None:
    data = (VECTORS / f"{name}.bin").read_bytes()
    value = decode_pdu_bytes(data)
    CHECKS[name](value)
    assert isinstance(value, KINDS[_meta(name)["pdu"]])


@pytest.mark.parametrize("name", NAMES)
def test_vector_reencodes(name: str) -> None:
    data = (VECTORS / f"{name}.bin").read_bytes()
    mode, *args = _meta(name)["reencode"].split()
    value = decode_pdu_bytes(data)
    again = encode_pdu(value)
    if mode == "exact":
        assert again == data
    elif mode == "reserved":
        offsets = {int(a, 0) for a in args}
        assert len(again) == len(data)
        assert {i for i, (a, b) in enumerate(zip(again, data, strict=True)) if a != b} == offsets
        assert all(again[i] == 0 for i in offsets)
    else:
        assert mode == "reordered"
        assert len(again) == len(data) and again != data
        assert sorted(again) == sorted(data)
    assert decode_pdu_bytes(again) == value


@pytest.mark.parametrize("name", NAMES)
def test_vector_through_receive_buffer_byte_by_byte(name: str) -> None:
    data = (VECTORS / f"{name}.bin").read_bytes()
    buf = ReceiveBuffer(max_body=1 << 16, staging_size=16)
    for i in range(len(data)):
        buf.feed(data[i : i + 1])
    raw = buf.next_pdu()
    assert raw is not None and buf.next_pdu() is None
    assert decode_pdu(raw.pdu_type, raw.body) == decode_pdu_bytes(data)
