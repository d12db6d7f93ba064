"""DIMSE messages: round trips, mandatory fields, and hostile command sets (PS3.7 §9.3, §10.3)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.dimse import (
    DATASET_ABSENT,
    FIELD_TAGS,
    MESSAGE_TYPES,
    CCancelRQ,
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CMoveRQ,
    CStoreRQ,
    CStoreRSP,
    Message,
    NActionRQ,
    NCreateRQ,
    NSetRQ,
    Priority,
    Status,
    decode_command_set,
    decode_message,
    encode_command_set,
    encode_message,
    message_name,
)
from aiodicom.errors import DimseError
from tests.dimse_strategies import MESSAGE_STRATEGIES, messages

COMMAND_FIELDS = {
    "C-STORE-RQ": 0x0001,
    "C-GET-RQ": 0x0010,
    "C-FIND-RQ": 0x0020,
    "C-MOVE-RQ": 0x0021,
    "C-ECHO-RQ": 0x0030,
    "C-CANCEL-RQ": 0x0FFF,
    "N-EVENT-REPORT-RQ": 0x0100,
    "N-GET-RQ": 0x0110,
    "N-SET-RQ": 0x0120,
    "N-ACTION-RQ": 0x0130,
    "N-CREATE-RQ": 0x0140,
    "N-DELETE-RQ": 0x0150,
}


def test_command_fields_and_names() -> None:
    expected = dict(COMMAND_FIELDS)
    for name, field in COMMAND_FIELDS.items():
        if name != "C-CANCEL-RQ":
            expected[name.replace("-RQ", "-RSP")] = field | 0x8000
    assert {message_name(cls): field for field, cls in MESSAGE_TYPES.items()} == expected
    for field, cls in MESSAGE_TYPES.items():
        assert field == cls.COMMAND_FIELD
    assert set(MESSAGE_STRATEGIES) == set(MESSAGE_TYPES.values())


@pytest.mark.parametrize(
    ("msg", "has_dataset"),
    [
        (CEchoRQ(message_id=1), False),
        (CEchoRSP(message_id_being_responded_to=1), False),
        (
            CStoreRQ(message_id=1, affected_sop_class_uid="1.2", affected_sop_instance_uid="1.3"),
            True,
        ),
        (CStoreRSP(message_id_being_responded_to=1), False),
        (CFindRQ(message_id=1, affected_sop_class_uid="1.2"), True),
        (CMoveRQ(message_id=1, affected_sop_class_uid="1.2", move_destination="X"), True),
        (CCancelRQ(message_id_being_responded_to=1), False),
        (NSetRQ(message_id=1, requested_sop_class_uid="1", requested_sop_instance_uid="2"), True),
        (NCreateRQ(message_id=1, affected_sop_class_uid="1.2"), False),
    ],
)
def test_dataset_defaults(msg: Message, has_dataset: bool) -> None:
    assert msg.has_dataset is has_dataset
    elements = decode_command_set(encode_message(msg))
    assert (elements[0x0800] != DATASET_ABSENT) is has_dataset


def test_response_defaults_and_types() -> None:
    rsp = decode_message(encode_message(CStoreRSP(message_id_being_responded_to=9)))
    assert isinstance(rsp, CStoreRSP)
    assert type(rsp.status) is Status and rsp.status == Status.SUCCESS
    rq = decode_message(
        encode_message(CFindRQ(message_id=1, affected_sop_class_uid="1.2", priority=Priority.LOW))
    )
    assert isinstance(rq, CFindRQ) and rq.priority is Priority.LOW


@settings(max_examples=400, deadline=None)
@given(messages())
def test_round_trip(msg: Message) -> None:
    raw = encode_message(msg)
    decoded = decode_message(raw)
    assert decoded == msg
    assert type(decoded) is type(msg)
    assert encode_message(decoded) == raw


@settings(max_examples=200, deadline=None)
@given(st.data(), st.sampled_from(sorted(MESSAGE_TYPES.values(), key=lambda c: c.__name__)))
def test_missing_mandatory_field_is_refused(data: st.DataObject, cls: type[Any]) -> None:
    msg = data.draw(MESSAGE_STRATEGIES[cls])
    elements = decode_command_set(encode_message(msg))
    for name in sorted(cls._REQUIRED):
        reduced = {k: v for k, v in elements.items() if k != FIELD_TAGS[name]}
        with pytest.raises(DimseError, match="lacks mandatory"):
            decode_message(encode_command_set(reduced))
        with pytest.raises(DimseError, match="requires"):
            encode_message(dataclasses.replace(msg, **{name: None}))


def test_empty_optional_strings_are_absent() -> None:
    elements = decode_command_set(encode_message(CStoreRSP(message_id_being_responded_to=1)))
    raw = encode_command_set(elements)
    # Add an empty AffectedSOPInstanceUID by hand (the encoder refuses to write one).
    raw = raw[:8] + (len(raw) - 12 + 8).to_bytes(4, "little") + raw[12:]
    raw += bytes.fromhex("00000010 00000000".replace(" ", ""))
    msg = decode_message(raw)
    assert isinstance(msg, CStoreRSP) and msg.affected_sop_instance_uid is None


@pytest.mark.parametrize(
    ("elements", "match"),
    [
        ({0x0800: 0x0101}, "no \\(0000,0100\\) CommandField"),
        ({0x0100: 0x0031, 0x0800: 0x0101}, "unknown DIMSE CommandField 0x0031"),
        ({0x0100: 0x8FFF, 0x0800: 0x0101}, "unknown DIMSE CommandField 0x8FFF"),
        ({0x0100: 0x0030, 0x0110: 1, 0x0002: "1.2"}, "C-ECHO-RQ has no \\(0000,0800\\)"),
        ({0x0100: 0x0030, 0x0800: 0x0101, 0x0110: 1}, "AffectedSOPClassUID"),
        ({0x0100: 0x8030, 0x0800: 0x0101, 0x0120: 1}, "Status"),
    ],
)
def test_decode_refuses(elements: dict[int, Any], match: str) -> None:
    with pytest.raises(DimseError, match=match):
        decode_message(encode_command_set(elements))


def test_dataset_type_other_than_0101_means_present() -> None:
    for value in (0x0000, 0x0001, 0x0102, 0xFEFE):
        raw = encode_command_set({0x0100: 0x0030, 0x0800: value, 0x0110: 1, 0x0002: "1.2"})
        assert decode_message(raw).has_dataset


def test_encode_refuses_bad_field_types() -> None:
    with pytest.raises(DimseError, match="0000,0110"):
        encode_message(CEchoRQ(message_id=70000))
    with pytest.raises(DimseError, match="not a UID"):
        encode_message(NActionRQ(message_id=1, requested_sop_class_uid="../etc",
                                 requested_sop_instance_uid="1", action_type_id=1))
    with pytest.raises(DimseError, match="not a DIMSE message"):
        encode_message("C-ECHO")  # type: ignore[arg-type]


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_give_a_message_or_dimse_error(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except DimseError:
        return
    assert type(msg) in MESSAGE_TYPES.values()


@settings(max_examples=400, deadline=None)
@given(messages(), st.data())
def test_mutated_command_sets(msg: Message, data: st.DataObject) -> None:
    """Flip, cut or extend a valid command set: a message or a DimseError, nothing else."""
    raw = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        raw[pos] = data.draw(st.integers(0, 255))
    raw = raw[: data.draw(st.integers(0, len(raw)))] + data.draw(st.binary(max_size=8))
    try:
        decoded = decode_message(raw)
    except DimseError:
        return
    assert type(decoded) in MESSAGE_TYPES.values()
