"""PDU codec: round trips, hostile input (only InvalidPDU, with offset and A-ABORT reason)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiodicom.core.buffer import ReceiveBuffer
from aiodicom.core.items import PresentationContextAC, PresentationContextRQ, PresentationResult
from aiodicom.core.pdu import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationDataValue,
    decode_pdu,
    decode_pdu_bytes,
    encode_pdata_header,
    encode_pdata_pdv_header,
    encode_pdu,
    encode_pdv_header,
)
from aiodicom.core.user_items import (
    UserIdentityAC,
    UserIdentityRQ,
    UserIdentityType,
    UserInformation,
)
from aiodicom.errors import AbortReason, InvalidPDU
from tests import strategies as S

FAST = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

UNRECOGNIZED_PDU = AbortReason.UNRECOGNIZED_PDU
UNRECOGNIZED = AbortReason.UNRECOGNIZED_PDU_PARAMETER
UNEXPECTED = AbortReason.UNEXPECTED_PDU_PARAMETER
INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE


# -- building blocks for hand-made PDUs -------------------------------------------------------


def item(item_type: int, value: bytes, reserved: int = 0) -> bytes:
    return bytes([item_type, reserved]) + struct.pack(">H", len(value)) + value


def pdu(pdu_type: int, body: bytes) -> bytes:
    return bytes([pdu_type, 0]) + struct.pack(">L", len(body)) + body


def ae(title: bytes) -> bytes:
    return title.ljust(16, b" ")


APP = item(0x10, b"1.2.840.10008.3.1.1.1")
VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_LE = b"1.2.840.10008.1.2"
PC_RQ = item(0x20, b"\x01\0\0\0" + item(0x30, VERIFICATION) + item(0x40, IMPLICIT_LE))
PC_AC = item(0x21, b"\x01\0\0\0" + item(0x40, b"1.2.840.10008.1.2"))
UI = item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3.4"))
FIXED_LEN = 68
ITEMS_AT = 6 + FIXED_LEN  # first variable item of an A-ASSOCIATE-RQ/AC


def assoc(
    items: bytes, *, pdu_type: int = 1, called: bytes = b"SCP", calling: bytes = b"SCU"
) -> bytes:
    fixed = b"\x00\x01\x00\x00" + ae(called) + ae(calling) + bytes(32)
    return pdu(pdu_type, fixed + items)


def rq(items: bytes | None = None, **kw: bytes) -> bytes:
    return assoc(APP + PC_RQ + UI if items is None else items, pdu_type=1, **kw)


def ac(items: bytes | None = None, **kw: bytes) -> bytes:
    return assoc(APP + PC_AC + UI if items is None else items, pdu_type=2, **kw)


def ui_rq(*subs: bytes) -> bytes:
    return rq(APP + PC_RQ + item(0x50, b"".join(subs)))


def ui_ac(*subs: bytes) -> bytes:
    return ac(APP + PC_AC + item(0x50, b"".join(subs)))


def pdv(cid: int, control: int, data: bytes, length: int | None = None) -> bytes:
    n = len(data) + 2 if length is None else length
    return struct.pack(">LBB", n, cid, control) + data


def invalid(data: bytes) -> InvalidPDU:
    with pytest.raises(InvalidPDU) as info:
        decode_pdu_bytes(data)
    return info.value


# -- round trips ----------------------------------------------------------------------------

KINDS = {
    "A-ASSOCIATE-RQ": S.a_associate_rq(),
    "A-ASSOCIATE-AC": S.a_associate_ac(),
    "A-ASSOCIATE-RJ": S.a_associate_rj(),
    "P-DATA-TF": S.p_data_tf(),
    "A-RELEASE-RQ": S.a_release_rq(),
    "A-RELEASE-RP": S.a_release_rp(),
    "A-ABORT": S.a_abort(),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_decode_encode_round_trip(kind: str) -> None:
    @FAST
    @given(KINDS[kind])
    def check(value: PDU) -> None:
        data = encode_pdu(value)
        assert decode_pdu_bytes(data) == value
        # The RawPDU path (type + body) gives the same value.
        assert decode_pdu(data[0], memoryview(data)[6:]) == value
        assert struct.unpack_from(">L", data, 2)[0] == len(data) - 6

    check()


@FAST
@given(S.pdus())
def test_encoding_is_canonical(value: PDU) -> None:
    data = encode_pdu(value)
    assert encode_pdu(decode_pdu_bytes(data)) == data


def test_user_information_sub_items_go_out_in_ascending_order() -> None:
    ui = UserInformation(
        maximum_length=0,
        implementation_class_uid="1.2.3",
        implementation_version_name="V1",
        async_operations_window=S.AsyncOperationsWindow(
            max_operations_invoked=2, max_operations_performed=3
        ),
        role_selections=(S.RoleSelection(sop_class_uid="1.2", scu_role=True, scp_role=False),),
        extended_negotiations=(
            S.SOPClassExtendedNegotiation(sop_class_uid="1.3", application_information=b"\1"),
        ),
        common_extended_negotiations=(
            S.SOPClassCommonExtendedNegotiation(
                sop_class_uid="1.4", service_class_uid="1.5", related_general_sop_classes=("1.6",)
            ),
        ),
        user_identity_rq=UserIdentityRQ(
            identity_type=UserIdentityType.USERNAME,
            positive_response_requested=True,
            primary_field=b"bob",
        ),
    )
    value = AAssociateRQ(
        called_ae_title="A",
        calling_ae_title="B",
        presentation_contexts=(
            PresentationContextRQ(context_id=1, abstract_syntax="1.2", transfer_syntaxes=("1.2",)),
        ),
        user_information=ui,
    )
    data = encode_pdu(value)
    start = data.index(b"\x50\x00")
    types = []
    pos = start + 4
    while pos < len(data):
        types.append(data[pos])
        pos += 4 + struct.unpack_from(">H", data, pos + 2)[0]
    assert types == [0x51, 0x52, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58]
    assert decode_pdu_bytes(data) == value


# -- any bytes give a PDU or InvalidPDU -------------------------------------------------------


def _decode_or_invalid(data: bytes) -> PDU | None:
    try:
        return decode_pdu_bytes(data)
    except InvalidPDU as exc:
        assert isinstance(exc.reason, AbortReason)
        assert 0 <= exc.offset <= max(len(data), 6)
        return None


def _reencodes(value: PDU) -> None:
    """A decoded PDU re-encodes (or refuses with ValueError) and decodes to itself."""
    try:
        data = encode_pdu(value)
    except ValueError:
        return
    assert decode_pdu_bytes(data) == value


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_give_a_pdu_or_invalid_pdu(data: bytes) -> None:
    value = _decode_or_invalid(data)
    if value is not None:
        _reencodes(value)


@FAST
@given(st.integers(0, 255), st.binary(max_size=300))
def test_random_bodies_of_any_type(pdu_type: int, body: bytes) -> None:
    try:
        value = decode_pdu(pdu_type, memoryview(body))
    except InvalidPDU as exc:
        if pdu_type not in range(1, 8):
            assert exc.reason == UNRECOGNIZED_PDU
        return
    _reencodes(value)


@st.composite
def mutated_pdus(draw: st.DrawFn) -> bytes:
    data = bytearray(encode_pdu(draw(S.pdus())))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "length"]))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.sampled_from([0, 1, 2, 0x10, 0x20, 0x21, 0x40, 0x50, 0xFF]))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 4))]
        elif op == "length" and len(data) >= pos + 2:
            value = draw(st.sampled_from([0, 1, 2, 3, 0x7FFF, 0xFFFF]))
            struct.pack_into(">H", data, pos, value)
    if draw(st.booleans()) and len(data) >= 6:  # keep the header consistent with the body
        struct.pack_into(">L", data, 2, len(data) - 6)
    return bytes(data)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_pdus())
def test_mutated_pdus_give_a_pdu_or_invalid_pdu(data: bytes) -> None:
    value = _decode_or_invalid(data)
    if value is not None:
        _reencodes(value)


# -- framing and fixed-size PDUs -------------------------------------------------------------


@pytest.mark.parametrize("pdu_type", [0, 8, 0x09, 0x41, 0xFF])
def test_unrecognized_pdu_type(pdu_type: int) -> None:
    err = invalid(pdu(pdu_type, bytes(4)))
    assert (err.reason, err.offset) == (UNRECOGNIZED_PDU, 0)


def test_header_length_must_match() -> None:
    err = invalid(pdu(5, bytes(4)) + b"\0")
    assert (err.reason, err.offset) == (INVALID, 2)
    err = invalid(b"\x05\x00\x00\x00\x00")
    assert err.offset == 0


@pytest.mark.parametrize("pdu_type", [3, 5, 6, 7])
@pytest.mark.parametrize("length", [0, 3, 5, 68])
def test_fixed_pdus_need_length_4(pdu_type: int, length: int) -> None:
    err = invalid(pdu(pdu_type, bytes(length)))
    assert (err.reason, err.offset) == (INVALID, 2)


def test_fixed_pdus_ignore_reserved_bytes() -> None:
    assert decode_pdu_bytes(pdu(5, b"\xff\xff\xff\xff")) == AReleaseRQ()
    assert decode_pdu_bytes(pdu(6, b"\x01\x02\x03\x04")) == AReleaseRP()
    assert decode_pdu_bytes(pdu(7, b"\xaa\xbb\x02\x06")) == AAbort(source=2, reason=6)
    assert decode_pdu_bytes(pdu(3, b"\xee\x02\x03\x02")) == AAssociateRJ(
        result=2, source=3, reason=2
    )


# -- P-DATA-TF -------------------------------------------------------------------------------


def test_pdata_values_are_views_of_the_body() -> None:
    body = bytearray(pdv(1, 3, b"command") + pdv(3, 0, b"dataset!"))
    value = decode_pdu(4, memoryview(body))
    assert isinstance(value, PDataTF)
    first, second = value.pdvs
    assert (first.context_id, first.is_command, first.is_last) == (1, True, True)
    assert (second.context_id, second.is_command, second.is_last) == (3, False, False)
    assert isinstance(second.data, memoryview) and second.data.obj is body
    body[-1:] = b"?"  # same storage: no copy was made
    assert bytes(second.data) == b"dataset?"


def test_pdata_from_receive_buffer_is_not_copied() -> None:
    buf = ReceiveBuffer(max_body=1 << 20, staging_size=64)
    payload = bytes(range(256)) * 8
    buf.feed(encode_pdu(PDataTF(pdvs=(PresentationDataValue(
        context_id=5, is_command=False, is_last=True, data=payload),))))
    raw = buf.next_pdu()
    assert raw is not None
    value = decode_pdu(raw.pdu_type, raw.body)
    assert isinstance(value, PDataTF)
    data = value.pdvs[0].data
    assert isinstance(data, memoryview) and data.obj is raw.body.obj and data == payload


@pytest.mark.parametrize(
    ("body", "offset", "reason"),
    [
        (b"", 2, UNEXPECTED),  # no PDV at all
        (pdv(1, 3, b"", length=0), 6, INVALID),
        (pdv(1, 3, b"", length=1) + b"\0", 6, INVALID),
        (pdv(1, 3, b"abc", length=6), 6, INVALID),  # longer than what remains
        (pdv(1, 3, b"abc", length=0x7FFFFFFF), 6, INVALID),
        (pdv(1, 3, b"abc", length=0x80000000), 6, INVALID),
        (pdv(1, 3, b"abc", length=0xFFFFFFFF), 6, INVALID),
        (pdv(1, 3, b"abc", length=0xFFFFFFFE), 6, INVALID),
        (pdv(1, 3, b"ab") + pdv(1, 3, b"", length=0xFFFFFFFF), 6 + 8, INVALID),
        (pdv(1, 3, b"ab") + b"\0\0\0", 14, INVALID),  # trailing bytes too short for a PDV
        (pdv(1, 3, b"ab") + b"\0\0\0\2\1", 14, INVALID),  # PDV value past the end
        (pdv(2, 3, b"ab"), 10, INVALID),  # even context ID
        (pdv(0, 3, b"ab"), 10, INVALID),
    ],
)
def test_pdata_rejects(body: bytes, offset: int, reason: AbortReason) -> None:
    err = invalid(pdu(4, body))
    assert (err.offset, err.reason) == (offset, reason)


@pytest.mark.parametrize("control", [0x04, 0x80, 0xFC, 0xFF, 0x7E])
def test_pdata_reserved_control_bits_are_not_tested(control: int) -> None:
    """PS3.8 Annex E.2: bits 2-7 are reserved and the receiver does not test them."""
    value = decode_pdu_bytes(pdu(4, pdv(1, control, b"ab")))
    assert isinstance(value, PDataTF)
    (one,) = value.pdvs
    assert (one.is_command, one.is_last) == (bool(control & 1), bool(control & 2))
    assert bytes(one.data) == b"ab"


def test_pdata_empty_value_and_several_pdvs() -> None:
    value = decode_pdu_bytes(pdu(4, pdv(1, 2, b"") + pdv(1, 1, b"x")))
    assert isinstance(value, PDataTF)
    assert [bytes(p.data) for p in value.pdvs] == [b"", b"x"]
    assert [(p.is_command, p.is_last) for p in value.pdvs] == [(False, True), (True, False)]


@FAST
@given(S.pdvs(max_data=300), st.lists(S.pdvs(), min_size=0, max_size=3))
def test_header_helpers_match_encode_pdu(
    first: PresentationDataValue, more: list[PresentationDataValue]
) -> None:
    values = [first, *more]
    parts: list[bytes] = []
    for p in values:
        data = bytes(p.data)
        parts += [encode_pdv_header(len(data), p.context_id, p.is_command, p.is_last), data]
    body = b"".join(parts)
    whole = encode_pdata_header(len(body)) + body
    assert whole == encode_pdu(PDataTF(pdvs=tuple(values)))
    data = bytes(first.data)
    single = encode_pdata_pdv_header(len(data), first.context_id, first.is_command, first.is_last)
    assert single + data == encode_pdu(PDataTF(pdvs=(first,)))
    assert single == encode_pdata_header(len(data) + 6) + encode_pdv_header(
        len(data), first.context_id, first.is_command, first.is_last
    )


def test_pdv_header_layout() -> None:
    # item length counts the context ID and control header: value length + 2
    assert encode_pdv_header(10, 7, True, False) == b"\x00\x00\x00\x0c\x07\x01"
    assert encode_pdv_header(0, 1, False, True) == b"\x00\x00\x00\x02\x01\x02"
    assert encode_pdata_header(16) == b"\x04\x00\x00\x00\x00\x10"
    assert encode_pdata_pdv_header(4, 3, True, True) == bytes.fromhex("04000000000a 00000006 03 03")


@pytest.mark.parametrize(
    "call",
    [
        lambda: encode_pdv_header(1, 2, True, True),
        lambda: encode_pdv_header(1, 0, True, True),
        lambda: encode_pdv_header(1, 257, True, True),
        lambda: encode_pdv_header(-1, 1, True, True),
        lambda: encode_pdv_header(0xFFFFFFFE, 1, True, True),
        lambda: encode_pdata_header(5),
        lambda: encode_pdata_header(1 << 32),
        lambda: encode_pdata_pdv_header(1, 4, True, True),
        lambda: encode_pdata_pdv_header(0xFFFFFFFA, 1, True, True),
        lambda: encode_pdu(PDataTF(pdvs=())),
    ],
)
def test_header_helpers_refuse_bad_values(call: object) -> None:
    assert callable(call)
    with pytest.raises(ValueError):
        call()


# -- A-ASSOCIATE-RQ / AC: fixed part ---------------------------------------------------------


def test_minimal_rq_and_ac() -> None:
    value = decode_pdu_bytes(rq(called=b"  CALLED AE", calling=b"CALLING   "))
    assert isinstance(value, AAssociateRQ)
    assert (value.called_ae_title, value.calling_ae_title) == ("CALLED AE", "CALLING")
    assert value.presentation_contexts == (
        PresentationContextRQ(
            context_id=1,
            abstract_syntax="1.2.840.10008.1.1",
            transfer_syntaxes=("1.2.840.10008.1.2",),
        ),
    )
    assert value.user_information == UserInformation(
        maximum_length=16384, implementation_class_uid="1.2.3.4"
    )
    value2 = decode_pdu_bytes(ac())
    assert isinstance(value2, AAssociateAC)
    assert value2.presentation_contexts == (
        PresentationContextAC(
            context_id=1, result=PresentationResult.ACCEPTANCE, transfer_syntax="1.2.840.10008.1.2"
        ),
    )


@pytest.mark.parametrize("pdu_type", [1, 2])
@pytest.mark.parametrize("length", [0, 1, 4, 36, 67])
def test_associate_shorter_than_fixed_part(pdu_type: int, length: int) -> None:
    err = invalid(pdu(pdu_type, (b"\x00\x01\x00\x00" + ae(b"A") * 2 + bytes(32))[:length]))
    assert err.reason == INVALID
    assert 6 <= err.offset <= 6 + length


@pytest.mark.parametrize(
    ("called", "calling", "offset"),
    [
        (b" " * 16, b"SCU", 10),  # all spaces (pynetdicom #646)
        (b"SCP", b" " * 16, 26),
        (b"BAD\\AE", b"SCU", 10),  # backslash
        (b"SCP", b"TAB\tAE", 26),  # control character
        (b"NUL\0", b"SCU", 10),
        (b"\xe9T\xe9", b"SCU", 10),  # outside ISO 646
        (b"\x7f", b"SCU", 10),
    ],
)
def test_rq_ae_titles_are_checked(called: bytes, calling: bytes, offset: int) -> None:
    err = invalid(rq(called=called, calling=calling))
    assert (err.offset, err.reason) == (offset, INVALID)


def test_ac_ae_titles_are_not_checked() -> None:
    value = decode_pdu_bytes(ac(called=b" " * 16, calling=b"\xe9\\X\0\0"))
    assert isinstance(value, AAssociateAC)
    assert value.called_ae_title == ""
    assert value.calling_ae_title == "\xe9\\X"


def test_protocol_version_is_reported_not_checked() -> None:
    # PS3.8 §9.3.2: a receiver tests only bit 0; a peer without it gets RJ (2, 2), not A-ABORT.
    data = bytearray(rq())
    data[6:8] = b"\x00\x03"
    value = decode_pdu_bytes(bytes(data))
    assert isinstance(value, AAssociateRQ) and value.protocol_version == 3
    data[6:8] = b"\x00\x02"
    value = decode_pdu_bytes(bytes(data))
    assert isinstance(value, AAssociateRQ) and value.protocol_version == 2


def test_reserved_fields_are_not_checked() -> None:
    data = bytearray(rq())
    data[1] = 0xFF
    data[8:10] = b"\xff\xff"
    data[42:74] = b"\xee" * 32
    data[ITEMS_AT + 1] = 0xFF  # the application context item's reserved byte
    assert decode_pdu_bytes(bytes(data)) == decode_pdu_bytes(rq())


# -- A-ASSOCIATE-RQ / AC: items ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("items", "reason"),
    [
        (PC_RQ + UI, UNEXPECTED),  # no application context
        (APP + PC_RQ, UNEXPECTED),  # no user information
        (APP + UI, UNEXPECTED),  # no presentation context
        (APP + APP + PC_RQ + UI, UNEXPECTED),
        (APP + PC_RQ + UI + UI, UNEXPECTED),
        (APP + PC_RQ + PC_AC + UI, UNEXPECTED),  # an AC item in an RQ
        (APP + PC_RQ + item(0x30, b"1.2") + UI, UNEXPECTED),
        (APP + PC_RQ + item(0x51, bytes(4)) + UI, UNEXPECTED),
        (APP + PC_RQ + UI + b"\x10", INVALID),  # a truncated item header
        (APP + PC_RQ + UI + b"\x10\x00\x00\x05abc", INVALID),  # item longer than the PDU
    ],
)
def test_rq_items(items: bytes, reason: AbortReason) -> None:
    err = invalid(rq(items))
    assert err.reason == reason
    assert ITEMS_AT <= err.offset <= 6 + FIXED_LEN + len(items)


def test_items_in_any_order() -> None:
    assert decode_pdu_bytes(rq(UI + PC_RQ + APP)) == decode_pdu_bytes(rq())
    assert decode_pdu_bytes(ac(UI + PC_AC + APP)) == decode_pdu_bytes(ac())


def test_error_offsets_count_from_the_pdu_start() -> None:
    err = invalid(rq(APP + PC_RQ + item(0x51, bytes(4)) + UI))
    assert err.offset == ITEMS_AT + len(APP) + len(PC_RQ)
    assert "0x51" in err.what and f"offset {err.offset}" in str(err)


@pytest.mark.parametrize("unknown", [item(0x99, b""), item(0x00, b"xyz"), item(0xFF, b"\0" * 9)])
@pytest.mark.parametrize("where", ["before", "middle", "after"])
def test_unrecognized_items_are_skipped(unknown: bytes, where: str) -> None:
    """PS3.8 §9.3.1: items of unrecognized types are ignored and skipped, RQ and AC."""
    rq_items = {
        "before": unknown + APP + PC_RQ + UI,
        "middle": APP + PC_RQ + unknown + UI,
        "after": APP + PC_RQ + UI + unknown,
    }[where]
    assert decode_pdu_bytes(rq(rq_items)) == decode_pdu_bytes(rq())
    ac_items = rq_items.replace(PC_RQ, PC_AC)
    assert decode_pdu_bytes(ac(ac_items)) == decode_pdu_bytes(ac())
    # the known sub-items around it still decode, and re-encode canonically without it
    assert encode_pdu(decode_pdu_bytes(rq(rq_items))) == rq()


def test_unrecognized_sub_items_in_a_presentation_context_are_skipped() -> None:
    pc = item(0x20, b"\x01\0\0\0" + item(0x41, b"?") + item(0x30, b"1.2") + item(0x40, b"1.2")
              + item(0x7F, b""))
    value = decode_pdu_bytes(rq(APP + pc + UI))
    assert isinstance(value, AAssociateRQ)
    (ctx,) = value.presentation_contexts
    assert (ctx.abstract_syntax, ctx.transfer_syntaxes) == ("1.2", ("1.2",))
    pc_ac = item(0x21, b"\x01\0\0\0" + item(0x77, b"") + item(0x40, b"1.2") + item(0x42, b"x"))
    answer = decode_pdu_bytes(ac(APP + pc_ac + UI))
    assert isinstance(answer, AAssociateAC)
    assert answer.presentation_contexts[0].transfer_syntax == "1.2"


def test_ac_may_have_no_presentation_context() -> None:
    value = decode_pdu_bytes(ac(APP + UI))
    assert isinstance(value, AAssociateAC) and value.presentation_contexts == ()


def test_ac_rejects_rq_items() -> None:
    assert invalid(ac(APP + PC_RQ + UI)).reason == UNEXPECTED


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", INVALID),  # zero-length UID (pynetdicom #342)
        (b"\0", INVALID),
        (b"1.2.3a", INVALID),
        (b"1.2 ", INVALID),
        (b"1" * 65, INVALID),
        (b"1.2\0\0", INVALID),  # only one NUL pad
    ],
)
def test_bad_uids(value: bytes, reason: AbortReason) -> None:
    err = invalid(rq(item(0x10, value) + PC_RQ + UI))
    assert (err.reason, err.offset) == (reason, ITEMS_AT + 4)
    pc = item(0x20, b"\x01\0\0\0" + item(0x30, b"1.2") + item(0x40, value))
    assert invalid(rq(APP + pc + UI)).reason == reason


def test_uid_nul_pad_is_stripped() -> None:
    pc = item(0x20, b"\x01\0\0\0" + item(0x30, b"1.2.3\0") + item(0x40, b"1.2.840.10008.1.2\0"))
    value = decode_pdu_bytes(rq(item(0x10, b"1.2.840.10008.3.1.1.1\0") + pc + UI))
    assert isinstance(value, AAssociateRQ)
    assert value.application_context == "1.2.840.10008.3.1.1.1"
    assert value.presentation_contexts[0].abstract_syntax == "1.2.3"
    assert value.presentation_contexts[0].transfer_syntaxes == ("1.2.840.10008.1.2",)
    assert decode_pdu_bytes(rq(item(0x10, b"1" * 64 + b"\0") + pc + UI)) is not None


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", INVALID),  # shorter than its fixed fields
        (b"\x01\0\0", INVALID),
        (b"\x02\0\0\0" + item(0x30, b"1.2") + item(0x40, b"1.2"), INVALID),  # even ID
        (b"\x00\0\0\0" + item(0x30, b"1.2") + item(0x40, b"1.2"), INVALID),
        (b"\x01\0\0\0" + item(0x40, b"1.2"), UNEXPECTED),  # no abstract syntax
        (b"\x01\0\0\0" + item(0x30, b"1.2"), UNEXPECTED),  # no transfer syntax
        (b"\x01\0\0\0" + item(0x30, b"1.2") * 2 + item(0x40, b"1.2"), UNEXPECTED),
        (b"\x01\0\0\0" + item(0x30, b"1.2") + item(0x40, b"1.2") + item(0x50, b""), UNEXPECTED),
        (b"\x01\0\0\0" + item(0x30, b"1.2") + b"\x40\x00\x00\x09", INVALID),  # sub-item overflows
        (b"\x01\0\0\0" + item(0x30, b"1.2") + b"\x40\x00\xff\xff", INVALID),
    ],
)
def test_presentation_context_rq_rejects(content: bytes, reason: AbortReason) -> None:
    assert invalid(rq(APP + item(0x20, content) + UI)).reason == reason


def test_duplicate_context_ids() -> None:
    err = invalid(rq(APP + PC_RQ + PC_RQ + UI))
    assert (err.reason, err.offset) == (INVALID, ITEMS_AT + len(APP) + len(PC_RQ) + 4)
    assert invalid(ac(APP + PC_AC + PC_AC + UI)).reason == INVALID


def test_context_item_longer_than_the_pdu() -> None:
    # item length near 2^16 claims more than the PDU holds
    err = invalid(rq(APP + b"\x20\x00\xff\xff" + PC_RQ[4:] + UI))
    assert (err.reason, err.offset) == (INVALID, ITEMS_AT + len(APP) + 2)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"\x03\0\x03\0" + item(0x40, b""), None),  # empty (pynetdicom #342)
        (b"\x03\0\x04\0", None),  # absent (fo-dicom #543)
        (b"\x03\0\x01\0" + item(0x40, b"not a uid"), None),  # not tested
        (b"\x03\0\x02\0" + item(0x40, b"1.2.840.10008.1.2"), "1.2.840.10008.1.2"),  # DCMTK
    ],
)
def test_rejected_context_transfer_syntax(content: bytes, expected: str | None) -> None:
    value = decode_pdu_bytes(ac(APP + item(0x21, content) + UI))
    assert isinstance(value, AAssociateAC)
    (pc,) = value.presentation_contexts
    assert pc.context_id == 3 and pc.result != PresentationResult.ACCEPTANCE
    assert pc.transfer_syntax == expected


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"\x01\0\0\0", UNEXPECTED),  # accepted without transfer syntax
        (b"\x01\0\0\0" + item(0x40, b""), INVALID),  # accepted with an empty one
        (b"\x01\0\0\0" + item(0x40, b"1.2") * 2, UNEXPECTED),
        (b"\x01\0\x05\0" + item(0x40, b"1.2"), INVALID),  # result 5
        (b"\x01\0\xff\0" + item(0x40, b"1.2"), INVALID),
        (b"\x01\0\0\0" + item(0x30, b"1.2"), UNEXPECTED),
        (b"\x01\0\0", INVALID),
        (b"\x04\0\0\0" + item(0x40, b"1.2"), INVALID),
    ],
)
def test_presentation_context_ac_rejects(content: bytes, reason: AbortReason) -> None:
    assert invalid(ac(APP + item(0x21, content) + UI)).reason == reason


# -- user information sub-items ------------------------------------------------------------


def _ui(data: bytes) -> UserInformation:
    value = decode_pdu_bytes(data)
    assert isinstance(value, AAssociateRQ | AAssociateAC)
    return value.user_information


def test_empty_user_information_is_tolerated() -> None:
    assert _ui(ui_rq()) == UserInformation()


def test_unknown_sub_items_are_skipped() -> None:
    ui = _ui(ui_rq(item(0x5A, b"future"), item(0x51, b"\0\0\x10\0"), item(0xFF, b"")))
    assert ui == UserInformation(maximum_length=4096)


def test_other_directions_sub_items_are_skipped() -> None:
    ident_rq = item(0x58, b"\x01\x01\x00\x03bob\x00\x00")
    ident_ac = item(0x59, b"\x00\x02ok")
    common = item(0x57, b"\x00\x031.2\x00\x031.3\x00\x00")
    assert _ui(ui_rq(ident_ac)) == UserInformation()
    assert _ui(ui_ac(ident_rq, common)) == UserInformation()
    assert _ui(ui_ac(ident_ac)).user_identity_ac == UserIdentityAC(server_response=b"ok")
    assert _ui(ui_rq(ident_rq)).user_identity_rq == UserIdentityRQ(
        identity_type=UserIdentityType.USERNAME,
        positive_response_requested=True,
        primary_field=b"bob",
    )


def test_unknown_user_identity_type_is_ignored() -> None:
    assert _ui(ui_rq(item(0x58, b"\x09\x00\x00\x01x\x00\x00"))).user_identity_rq is None


def test_common_extended_negotiation_version_byte_is_not_reserved_zero() -> None:
    sub = item(0x57, b"\x00\x031.2\x00\x031.3\x00\x0a\x00\x031.4\x00\x031.5")
    (common,) = _ui(ui_rq(sub)).common_extended_negotiations
    assert (common.sop_class_uid, common.service_class_uid) == ("1.2", "1.3")
    assert common.related_general_sop_classes == ("1.4", "1.5")
    data = encode_pdu(decode_pdu_bytes(ui_rq(sub)))
    assert sub in data


def test_sub_item_values() -> None:
    ui = _ui(
        ui_rq(
            item(0x51, b"\0\0\0\0"),
            item(0x52, b"1.2.3\0"),
            item(0x53, b"\x00\x05\x00\x00"),
            item(0x54, b"\x00\x031.2\x01\x00"),
            item(0x54, b"\x00\x031.3\x00\x01"),
            item(0x55, b"MY_VERSION 1.0"),
            item(0x56, b"\x00\x031.2\x01\x02\x03"),
            item(0x56, b"\x00\x031.4"),
            item(0x58, b"\x02\x00\x00\x03bob\x00\x06secret"),
        )
    )
    assert ui.maximum_length == 0
    assert ui.implementation_class_uid == "1.2.3"
    assert ui.async_operations_window == S.AsyncOperationsWindow(
        max_operations_invoked=5, max_operations_performed=0
    )
    assert [(r.sop_class_uid, r.scu_role, r.scp_role) for r in ui.role_selections] == [
        ("1.2", True, False),
        ("1.3", False, True),
    ]
    assert ui.implementation_version_name == "MY_VERSION 1.0"
    assert [(e.sop_class_uid, e.application_information) for e in ui.extended_negotiations] == [
        ("1.2", b"\1\2\3"),
        ("1.4", b""),
    ]
    assert ui.user_identity_rq == UserIdentityRQ(
        identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
        positive_response_requested=False,
        primary_field=b"bob",
        secondary_field=b"secret",
    )


@pytest.mark.parametrize(
    ("sub", "reason"),
    [
        (item(0x51, b"\0\0\x40"), INVALID),  # shorter than its field
        (item(0x51, b"\0\0\x40\0\0"), INVALID),  # longer than its field
        (item(0x51, bytes(4)) + item(0x51, bytes(4)), UNEXPECTED),  # twice
        (item(0x52, b""), INVALID),
        (item(0x52, b"1.2") + item(0x52, b"1.2"), UNEXPECTED),
        (item(0x53, b"\0\1\0"), INVALID),
        (item(0x54, b"\x00\x031.2\x01"), INVALID),  # no SCP role byte
        (item(0x54, b"\x00\x091.2\x01\x00"), INVALID),  # UID length past the item
        (item(0x54, b"\xff\xff1.2\x01\x00"), INVALID),
        (item(0x54, b"\x00\x031.2\x02\x00"), INVALID),  # role not 0/1
        (item(0x54, b"\x00\x031.2\x01\x00\x00"), INVALID),  # trailing byte
        (item(0x54, b"\x00"), INVALID),
        (item(0x55, b""), INVALID),
        (item(0x55, b"A" * 17), INVALID),
        (item(0x55, b"\x01BAD"), INVALID),
        (item(0x55, b"\xe9"), INVALID),
        (item(0x56, b"\x00\x101.2"), INVALID),
        (item(0x56, b"\x00"), INVALID),
        (item(0x57, b"\x00\x031.2\x00\x031.3\x00\x06\x00\x031.4"), INVALID),  # related overflows
        (item(0x57, b"\x00\x031.2\x00\x031.3\x00\x06\x00\x041.4"), INVALID),  # inner overflows
        (item(0x57, b"\x00\x031.2\x00\x031.3\x00\x01\x00"), INVALID),
        (item(0x57, b"\x00\x031.2\x00\x031.3"), INVALID),  # no related length
        (item(0x57, b"\x00\x031.2\x00\x031.3\x00\x00\x00"), INVALID),  # trailing byte
        (item(0x57, b"\x00\x031.2\x00\x001.3\x00\x00"), INVALID),  # empty service class UID
        (item(0x58, b"\x01\x00\xff\xffbob\x00\x00"), INVALID),  # primary overflows
        (item(0x58, b"\x01\x00\x00\x03bob\x00\x09ab"), INVALID),  # secondary overflows
        (item(0x58, b"\x01\x00\x00\x03bob"), INVALID),  # no secondary length
        (item(0x58, b"\x01\x02\x00\x03bob\x00\x00"), INVALID),  # flag not 0/1
        (item(0x58, b"\x01"), INVALID),
        (item(0x58, b"\x01\x00\x00\x01b\x00\x00") * 2, UNEXPECTED),
        (item(0x51, bytes(4))[:3], INVALID),  # truncated sub-item header
        (b"\x51\x00\x00\x08\0\0\0\0", INVALID),  # sub-item longer than the item
    ],
)
def test_user_information_rejects(sub: bytes, reason: AbortReason) -> None:
    err = invalid(ui_rq(sub))
    assert err.reason == reason
    start = ITEMS_AT + len(APP) + len(PC_RQ) + 4
    assert start <= err.offset <= start + len(sub)


def test_user_identity_ac_rejects() -> None:
    assert invalid(ui_ac(item(0x59, b"\x00\x05ab"))).reason == INVALID
    assert invalid(ui_ac(item(0x59, b"\x00"))).reason == INVALID
    assert invalid(ui_ac(item(0x59, b"\x00\x00\x00"))).reason == INVALID
    assert _ui(ui_ac(item(0x59, b"\x00\x00"))).user_identity_ac == UserIdentityAC(
        server_response=b""
    )


# -- encoding validates our own values --------------------------------------------------------

_PC = PresentationContextRQ(context_id=1, abstract_syntax="1.2", transfer_syntaxes=("1.2",))


def _rq(**kw: object) -> AAssociateRQ:
    fields: dict[str, object] = {
        "called_ae_title": "SCP",
        "calling_ae_title": "SCU",
        "presentation_contexts": (_PC,),
        "user_information": UserInformation(),
    }
    fields.update(kw)
    return AAssociateRQ(**fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        _rq(called_ae_title=""),
        _rq(called_ae_title="   "),
        _rq(called_ae_title="A" * 17),
        _rq(calling_ae_title="BAD\\AE"),
        _rq(calling_ae_title="CAFÉ"),
        _rq(calling_ae_title="€"),
        _rq(calling_ae_title="TAB\t"),
        _rq(presentation_contexts=()),
        _rq(presentation_contexts=(_PC, _PC)),
        _rq(
            presentation_contexts=(
                PresentationContextRQ(context_id=2, abstract_syntax="1", transfer_syntaxes=("1",)),
            )
        ),
        _rq(
            presentation_contexts=(
                PresentationContextRQ(context_id=1, abstract_syntax="1.2", transfer_syntaxes=()),
            )
        ),
        _rq(
            presentation_contexts=(
                PresentationContextRQ(context_id=1, abstract_syntax="x", transfer_syntaxes=("1",)),
            )
        ),
        _rq(application_context=""),
        _rq(application_context="1." * 40),
        _rq(application_context="١.٢"),  # non-ASCII digits
        _rq(protocol_version=0x10000),
        _rq(user_information=UserInformation(maximum_length=1 << 32)),
        _rq(user_information=UserInformation(maximum_length=-1)),
        _rq(user_information=UserInformation(implementation_version_name="")),
        _rq(user_information=UserInformation(implementation_version_name="X" * 17)),
        _rq(user_information=UserInformation(implementation_version_name="é")),
        _rq(user_information=UserInformation(implementation_class_uid="abc")),
        _rq(user_information=UserInformation(user_identity_ac=UserIdentityAC(server_response=b""))),
        _rq(
            user_information=UserInformation(
                user_identity_rq=UserIdentityRQ(
                    identity_type=UserIdentityType.SAML,
                    positive_response_requested=False,
                    primary_field=b"x" * 0x10000,
                )
            )
        ),
        _rq(
            user_information=UserInformation(
                async_operations_window=S.AsyncOperationsWindow(
                    max_operations_invoked=0x10000, max_operations_performed=0
                )
            )
        ),
        AAssociateAC(
            called_ae_title="A",
            calling_ae_title="B",
            presentation_contexts=(
                PresentationContextAC(
                    context_id=1, result=PresentationResult.ACCEPTANCE, transfer_syntax=None
                ),
            ),
            user_information=UserInformation(),
        ),
        AAssociateAC(
            called_ae_title="A",
            calling_ae_title="B",
            presentation_contexts=(),
            user_information=UserInformation(
                user_identity_rq=UserIdentityRQ(
                    identity_type=UserIdentityType.USERNAME,
                    positive_response_requested=False,
                    primary_field=b"x",
                )
            ),
        ),
        AAssociateRJ(result=256, source=1, reason=1),
        AAbort(source=-1, reason=0),
    ],
)
def test_encode_refuses_bad_values(value: PDU) -> None:
    with pytest.raises(ValueError):
        encode_pdu(value)


def test_encode_pads_ae_titles_and_sends_empty_transfer_syntax_for_none() -> None:
    value = AAssociateAC(
        called_ae_title="MY AE",
        calling_ae_title="X",
        presentation_contexts=(
            PresentationContextAC(
                context_id=5, result=PresentationResult.USER_REJECTION, transfer_syntax=None
            ),
        ),
        user_information=UserInformation(maximum_length=0),
    )
    data = encode_pdu(value)
    assert data[10:42] == b"MY AE".ljust(16) + b"X".ljust(16)
    assert item(0x21, b"\x05\x00\x01\x00" + item(0x40, b"")) in data
    assert decode_pdu_bytes(data) == value


def test_fixed_pdus_encode() -> None:
    assert encode_pdu(AReleaseRQ()) == bytes.fromhex("05000000000400000000")
    assert encode_pdu(AReleaseRP()) == bytes.fromhex("06000000000400000000")
    assert encode_pdu(AAbort(source=2, reason=6)) == bytes.fromhex("07000000000400000206")
    assert encode_pdu(AAssociateRJ(result=1, source=3, reason=2)) == bytes.fromhex(
        "03000000000400010302"
    )
    with pytest.raises(TypeError):
        encode_pdu("not a PDU")  # type: ignore[arg-type]
