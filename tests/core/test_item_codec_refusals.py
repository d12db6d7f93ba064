"""A-ASSOCIATE-RQ/AC refusals word exactly what failed, where, and why (text, offset, reason).

The item codec builds these texts only on the failure path (issue 18); the table pins each
one, so a refusal worded lazily reads the same as before. Encoding refusals are pinned too.
"""

from __future__ import annotations

import struct

import pytest

from aiodicom.core.buffer import Writer
from aiodicom.core.items import PresentationContextAC, PresentationContextRQ, PresentationResult
from aiodicom.core.pdu import PDU, AAssociateAC, AAssociateRQ, decode_pdu_bytes, encode_pdu
from aiodicom.core.user_items import (
    AsyncOperationsWindow,
    RoleSelection,
    SOPClassExtendedNegotiation,
    UserInformation,
)
from aiodicom.errors import AbortReason, InvalidPDU

UNEXPECTED = AbortReason.UNEXPECTED_PDU_PARAMETER
INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE


def item(item_type: int, value: bytes) -> bytes:
    return bytes([item_type, 0]) + struct.pack(">H", len(value)) + value


def assoc(items: bytes, *, pdu_type: int = 1, called: bytes = b"SCP", calling: bytes = b"SCU"
          ) -> bytes:
    body = b"\x00\x01\x00\x00" + called.ljust(16, b" ") + calling.ljust(16, b" ") + bytes(32)
    body += items
    return bytes([pdu_type, 0]) + struct.pack(">L", len(body)) + body


def cut(data: bytes, n: int) -> bytes:
    """The first ``n`` bytes of a PDU, its length field saying so."""
    return data[:2] + struct.pack(">L", n - 6) + data[6:n]


APP = item(0x10, b"1.2.840.10008.3.1.1.1")
AS = item(0x30, b"1.2.840.10008.1.1")
TS = item(0x40, b"1.2.840.10008.1.2")
UI = item(0x50, item(0x51, struct.pack(">L", 16384)))
AT = 74  # offset of the first item

CASES: list[tuple[str, bytes, str, int, AbortReason]] = [
    (
        "item reserved byte cut short",
        assoc(APP + b"\x50"),
        "item reserved byte needs 1 bytes but only 0 remain",
        AT + len(APP) + 1,
        INVALID,
    ),
    (
        "item length cut short",
        assoc(APP + b"\x50\x00\x00"),
        "item length needs 2 bytes but only 1 remain",
        AT + len(APP) + 2,
        INVALID,
    ),
    (
        "item longer than what remains",
        assoc(APP + b"\x50\x00\x00\x09ab"),
        "item 0x50 declares 9 bytes but only 2 remain",
        AT + len(APP) + 2,
        INVALID,
    ),
    (
        "sub-item longer than its item",
        assoc(APP + item(0x20, b"\x01\0\0\0\x30\x00\x00\x05ab") + UI),
        "presentation context sub-item 0x30 declares 5 bytes but only 2 remain",
        AT + len(APP) + 10,
        INVALID,
    ),
    (
        "user information sub-item cut short",
        assoc(APP + item(0x20, b"\x01\0\0\0" + AS + TS) + item(0x50, b"\x51\x00")),
        "user information sub-item length needs 2 bytes but only 0 remain",
        AT + len(APP) + 4 + 4 + len(AS) + len(TS) + 4 + 2,
        INVALID,
    ),
    (
        "even context ID",
        assoc(APP + item(0x20, b"\x02\0\0\0" + AS + TS) + UI),
        "presentation context context ID 2 is not odd (1-255)",
        AT + len(APP) + 4,
        INVALID,
    ),
    (
        "context ID cut short",
        assoc(APP + item(0x20, b"") + UI),
        "presentation context context ID needs 1 bytes but only 0 remain",
        AT + len(APP) + 4,
        INVALID,
    ),
    (
        "known item misplaced in a presentation context",
        assoc(APP + item(0x20, b"\x03\0\0\0" + AS + item(0x51, b"") + TS) + UI),
        "item 0x51 may not appear in presentation context 3",
        AT + len(APP) + 8 + len(AS),
        UNEXPECTED,
    ),
    (
        "known item misplaced in an AC's presentation context",
        assoc(APP + item(0x21, b"\x05\0\0\0" + AS + TS) + UI, pdu_type=2),
        "item 0x30 may not appear in presentation context 5",
        AT + len(APP) + 8,
        UNEXPECTED,
    ),
    (
        "known item misplaced in the PDU",
        assoc(APP + item(0x20, b"\x01\0\0\0" + AS + TS) + UI + item(0x40, b"1")),
        "item 0x40 may not appear in A-ASSOCIATE-RQ",
        AT + len(APP) + 8 + len(AS) + len(TS) + len(UI),
        UNEXPECTED,
    ),
    (
        "two abstract syntaxes",
        assoc(APP + item(0x20, b"\x01\0\0\0" + AS + AS + TS) + UI),
        "presentation context 1 has two abstract syntaxes",
        AT + len(APP) + 8 + len(AS),
        UNEXPECTED,
    ),
    (
        "two transfer syntaxes answered",
        assoc(APP + item(0x21, b"\x01\0\0\0" + TS + TS) + UI, pdu_type=2),
        "presentation context 1 answers two transfer syntaxes",
        AT + len(APP) + 8 + len(TS),
        UNEXPECTED,
    ),
    (
        "duplicate context ID",
        assoc(APP + item(0x20, b"\x01\0\0\0" + AS + TS) * 2 + UI),
        "presentation context ID 1 appears twice",
        AT + len(APP) + 4 + 4 + len(AS) + len(TS) + 4,
        INVALID,
    ),
    (
        "two application contexts",
        assoc(APP + APP + item(0x20, b"\x01\0\0\0" + AS + TS) + UI),
        "A-ASSOCIATE-RQ has two 0x10 items",
        AT + len(APP),
        UNEXPECTED,
    ),
    (
        "two user information sub-items of one type",
        assoc(APP + item(0x20, b"\x01\0\0\0" + AS + TS)
              + item(0x50, item(0x51, bytes(4)) * 2)),
        "user information has two 0x51 sub-items",
        AT + len(APP) + 4 + 4 + len(AS) + len(TS) + 4 + 8,
        UNEXPECTED,
    ),
    (
        "abstract syntax not a UID",
        assoc(APP + item(0x20, b"\x01\0\0\0" + item(0x30, b"1.x\0") + TS) + UI),
        "abstract syntax is not a valid UID: b'1.x'",
        AT + len(APP) + 12,
        INVALID,
    ),
    (
        "called AE title (whole fixed part)",
        assoc(APP, called=b"A\\B"),
        "called AE title b'A\\\\B             ' has bytes outside ISO 646 G0 (or a backslash); "
        "the peer must send printable ASCII",
        10,
        INVALID,
    ),
    (
        "calling AE title (whole fixed part)",
        assoc(APP, calling=b"   "),
        "calling AE title '                ' is not a valid AE title: it is empty or all spaces; "
        "give 1-16 characters",
        26,
        INVALID,
    ),
    (
        "calling AE title (fixed part cut short after it)",
        cut(assoc(b"", calling=b"\tX"), 6 + 40),
        "calling AE title b'\\tX              ' has bytes outside ISO 646 G0 (or a backslash); "
        "the peer must send printable ASCII",
        26,
        INVALID,
    ),
    (
        "fixed part cut short in its reserved bytes",
        cut(assoc(b""), 6 + 40),
        "reserved bytes needs 32 bytes but only 4 remain",
        42,
        INVALID,
    ),
    (
        "fixed part cut short in the called AE title",
        cut(assoc(b""), 12),
        "called AE title needs 16 bytes but only 2 remain",
        10,
        INVALID,
    ),
    (
        "implementation version name",
        assoc(APP + item(0x20, b"\x01\0\0\0" + AS + TS)
              + item(0x50, item(0x55, b"BAD\x7f"))),
        "implementation version name b'BAD\\x7f' is not 1-16 ISO 646 characters",
        AT + len(APP) + 4 + 4 + len(AS) + len(TS) + 8,
        INVALID,
    ),
]


@pytest.mark.parametrize(
    ("data", "text", "offset", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_refusal_text_offset_and_reason(
    data: bytes, text: str, offset: int, reason: AbortReason
) -> None:
    with pytest.raises(InvalidPDU) as info:
        decode_pdu_bytes(data)
    assert (info.value.what, info.value.offset, info.value.reason) == (text, offset, reason)
    assert str(info.value) == f"invalid PDU at offset {offset}: {text}"


def test_misplaced_unknown_items_are_still_skipped() -> None:
    """An unknown item in a presentation context is skipped (its refusal text never built)."""
    data = assoc(APP + item(0x20, b"\x01\0\0\0" + item(0x7E, b"x") + AS + TS) + UI)
    value = decode_pdu_bytes(data)
    assert isinstance(value, AAssociateRQ)
    assert value.presentation_contexts[0].abstract_syntax == "1.2.840.10008.1.1"


def _rq(**kw: object) -> AAssociateRQ:
    fields: dict[str, object] = {
        "called_ae_title": "SCP",
        "calling_ae_title": "SCU",
        "presentation_contexts": (
            PresentationContextRQ(
                context_id=1, abstract_syntax="1.2", transfer_syntaxes=("1.2.840.10008.1.2",)
            ),
        ),
        "user_information": UserInformation(maximum_length=16384),
    }
    fields.update(kw)
    return AAssociateRQ(**fields)  # type: ignore[arg-type]


ENCODE_REFUSALS: list[tuple[PDU, str]] = [
    (
        _rq(presentation_contexts=(PresentationContextRQ(
            context_id=1, abstract_syntax="1.2",
            transfer_syntaxes=tuple(f"1.2.840.{i}" for i in range(5000))),)),
        "item of 78901 bytes does not fit a 16-bit length",
    ),
    (
        _rq(presentation_contexts=(PresentationContextRQ(
            context_id=1, abstract_syntax="x", transfer_syntaxes=("1",)),)),
        "abstract syntax 'x' is not a UID (1-64 digits and dots)",
    ),
    (
        _rq(user_information=UserInformation(extended_negotiations=(
            SOPClassExtendedNegotiation(sop_class_uid="1.2", application_information=b"x" * 70000),
        ))),
        "item of 70005 bytes does not fit a 16-bit length",
    ),
    (
        _rq(user_information=UserInformation(role_selections=tuple(
            RoleSelection(sop_class_uid=f"1.2.3.{i}", scu_role=True, scp_role=False)
            for i in range(5000)
        ))),
        "item of 88890 bytes does not fit a 16-bit length",
    ),
    (
        _rq(user_information=UserInformation(role_selections=(
            RoleSelection(sop_class_uid="1..x", scu_role=True, scp_role=False),))),
        "role selection SOP class UID '1..x' is not a UID (1-64 digits and dots)",
    ),
    (
        _rq(user_information=UserInformation(async_operations_window=AsyncOperationsWindow(
            max_operations_invoked=1, max_operations_performed=-1))),
        "maximum operations performed -1 does not fit 16 bits",
    ),
    (
        _rq(user_information=UserInformation(maximum_length=1 << 32)),
        "maximum length 4294967296 does not fit 32 bits",
    ),
    (
        _rq(user_information=UserInformation(implementation_version_name="TAB\t")),
        "implementation version name 'TAB\\t' is not 1-16 ISO 646 characters",
    ),
    (
        _rq(application_context="1.x"),
        "application context name '1.x' is not a UID (1-64 digits and dots)",
    ),
    (
        AAssociateAC(
            called_ae_title="SCP",
            calling_ae_title="SCU",
            presentation_contexts=(PresentationContextAC(
                context_id=1, result=PresentationResult.ACCEPTANCE, transfer_syntax=None),),
            user_information=UserInformation(),
        ),
        "accepted presentation context 1 needs a transfer syntax",
    ),
    (
        AAssociateAC(
            called_ae_title="SCP",
            calling_ae_title="SCU",
            presentation_contexts=(PresentationContextAC(
                context_id=1, result=9, transfer_syntax=None),),  # type: ignore[arg-type]
            user_information=UserInformation(),
        ),
        "9 is not a valid PresentationResult",
    ),
]


@pytest.mark.parametrize(("value", "text"), ENCODE_REFUSALS)
def test_encode_refusal_text(value: PDU, text: str) -> None:
    with pytest.raises(ValueError) as info:
        encode_pdu(value)
    assert str(info.value) == text


def test_ac_context_result_given_as_int_encodes() -> None:
    value = AAssociateAC(
        called_ae_title="SCP",
        calling_ae_title="SCU",
        presentation_contexts=(
            PresentationContextAC(context_id=3, result=3, transfer_syntax=None),  # type: ignore[arg-type]
        ),
        user_information=UserInformation(),
    )
    back = decode_pdu_bytes(encode_pdu(value))
    assert isinstance(back, AAssociateAC)
    assert back.presentation_contexts[0].result is PresentationResult.ABSTRACT_SYNTAX_NOT_SUPPORTED


def test_writer_u32_is_big_endian() -> None:
    """`Writer.u32` (no caller in the item codec since it packs whole headers)."""
    w = Writer()
    w.u32(0x01020304)
    assert w.getvalue() == b"\x01\x02\x03\x04"
