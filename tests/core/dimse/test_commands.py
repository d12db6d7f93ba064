"""The command-set codec: Implicit VR Little Endian group 0000 (PS3.7 §6.3.1, Annex E)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom.datadict import dictionary_VR

from aiodicom.core.dimse import (
    COMMAND_ELEMENTS,
    MAX_COMMAND_SET_LENGTH,
    VR,
    decode_command_set,
    encode_command_set,
)
from aiodicom.errors import DimseError


def _element(tag: int, value: bytes, group: int = 0) -> bytes:
    return struct.pack("<HHL", group, tag, len(value)) + value


def _with_group_length(body: bytes) -> bytes:
    return _element(0x0000, struct.pack("<L", len(body))) + body


# C-ECHO-RQ, message ID 7: group length 56, (0000,0002) "1.2.840.10008.1.1\0", CommandField
# 0x0030, MessageID 7, CommandDataSetType 0x0101.
ECHO_RQ = bytes.fromhex(
    "00000000" "04000000" "38000000"
    "00000200" "12000000" "312e322e3834302e31303030382e312e3100"
    "00000001" "02000000" "3000"
    "00001001" "02000000" "0700"
    "00000008" "02000000" "0101"
)  # fmt: skip


def test_encode_matches_vector() -> None:
    elements = {0x0800: 0x0101, 0x0110: 7, 0x0100: 0x0030, 0x0002: "1.2.840.10008.1.1"}
    assert encode_command_set(elements) == ECHO_RQ


def test_decode_vector() -> None:
    assert decode_command_set(ECHO_RQ) == {
        0x0002: "1.2.840.10008.1.1",
        0x0100: 0x0030,
        0x0110: 7,
        0x0800: 0x0101,
    }


def test_padding_and_order() -> None:
    raw = encode_command_set({0x1030: "ABC", 0x0002: "1.23", 0x0902: "odd", 0x0901: (0x00100010,)})
    tags = []
    pos = 0
    while pos < len(raw):
        _, tag, length = struct.unpack_from("<HHL", raw, pos)
        tags.append(tag)
        value = raw[pos + 8 : pos + 8 + length]
        assert length % 2 == 0
        if tag == 0x0002:
            assert value == b"1.23"
        if tag == 0x1030:
            assert value == b"ABC "
        if tag == 0x0902:
            assert value == b"odd "
        if tag == 0x0901:
            assert value == b"\x10\x00\x10\x00"
        pos += 8 + length
    assert tags == sorted(tags) and tags[0] == 0x0000
    assert encode_command_set({0x0002: "1.2.3"})[12 + 8 :] == b"1.2.3\0"


def test_table_agrees_with_pydicom_dictionary() -> None:
    for tag, (_keyword, vr) in COMMAND_ELEMENTS.items():
        assert dictionary_VR(tag) == vr.value


@pytest.mark.parametrize(
    ("elements", "match"),
    [
        ({0x0110: 0x10000}, "0000,0110"),
        ({0x0110: -1}, "0000,0110"),
        ({0x0110: "1"}, "0000,0110"),
        ({0x0110: True}, "0000,0110"),
        ({0x0002: 5}, "must be a str"),
        ({0x0002: "1.2.a"}, "not a UID"),
        ({0x0002: ""}, "not a UID"),
        ({0x0002: "1" * 65}, "not a UID"),
        ({0x0600: "X" * 17}, "1-16"),
        ({0x0600: "   "}, "1-16"),
        ({0x0600: "é"}, "ASCII"),
        ({0x0902: "tab\there"}, "non-printable"),
        ({0x0902: "two\\values"}, "non-printable"),
        ({0x1030: "A\\B"}, "non-printable"),
        ({0x0901: ()}, "non-empty"),
        ({0x0901: (1 << 32,)}, "32-bit tag"),
        ({0x0010: "x"}, "not a command element"),
    ],
)
def test_encode_refuses_bad_values(elements: dict[int, object], match: str) -> None:
    with pytest.raises(DimseError, match=match):
        encode_command_set(elements)  # type: ignore[arg-type]


@pytest.mark.parametrize("advertised", [0, 3, 99, 0xFFFFFFFF])
def test_group_length_that_disagrees_is_advice(advertised: int) -> None:
    """(0000,0000) is derived from the framing; DCMTK and pynetdicom answer a wrong one."""
    body = _element(0x0100, b"\x30\0") + _element(0x0110, b"\x07\0")
    data = _element(0x0000, struct.pack("<L", advertised)) + body
    assert decode_command_set(data) == {0x0100: 0x30, 0x0110: 7}


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "too short"),
        (_element(0x0000, b"\0\0"), "too short"),
        (_element(0x0100, b"\x30\x00") + b"\0" * 4, "must start with"),
        (_with_group_length(b"\0\0\0\x01"), "truncated element header"),
        (_with_group_length(_element(0x0100, b"\x30\0", group=8)), "not in group 0000"),
        (_with_group_length(b"\0\0\0\x01\xff\xff\xff\xff\x30\x00"), "claims 4294967295"),
        (_with_group_length(_element(0x0100, b"\x30\0") * 2), "more than once"),
        (_with_group_length(_element(0x0000, b"\0\0\0\0")), "more than once"),
        (_with_group_length(_element(0x0100, b"\x30\0\0\0")), "expected 2"),
        (_with_group_length(_element(0x0000 + 0x0000, b"")), "more than once"),
        (_with_group_length(_element(0x0901, b"\0\0\0")), "multiple of 4"),
        (_with_group_length(_element(0x0002, b"1.2/../3")), "not a valid UID"),
        (_with_group_length(_element(0x0002, b"1" * 66)), "not a valid UID"),
        (_with_group_length(_element(0x0600, b"A" * 18)), "not a valid AE"),
        (_with_group_length(_element(0x0600, b"A\x01")), "not a valid AE"),
    ],
)
def test_decode_refuses_malformed(data: bytes, match: str) -> None:
    with pytest.raises(DimseError, match=match):
        decode_command_set(data)


def test_decode_is_lenient_where_harmless() -> None:
    body = (
        _element(0x0800, b"\x01\x01")
        + _element(0x0100, b"\x30\x00")  # out of order: tolerated
        + _element(0x0010, b"RETIRED ")  # retired CommandRecognitionCode: skipped
        + _element(0x0002, b" 1.2.3 ")  # space padding around a UID
        + _element(0x0902, b"bad \xff\x00by\\e")  # non-ASCII comment: kept printable
        + _element(0x0600, b" DEST  ")
    )
    assert decode_command_set(_with_group_length(body)) == {
        0x0800: 0x0101,
        0x0100: 0x0030,
        0x0002: "1.2.3",
        0x0902: "bad ??by?e",
        0x0600: "DEST",
    }


def test_decode_refuses_over_limit() -> None:
    big = _with_group_length(_element(0x0902, b"x" * MAX_COMMAND_SET_LENGTH))
    with pytest.raises(DimseError, match="over the limit"):
        decode_command_set(big)
    assert decode_command_set(big, max_length=len(big))[0x0902] == "x" * MAX_COMMAND_SET_LENGTH


def test_decode_accepts_views() -> None:
    padded = b"junk" + ECHO_RQ + b"junk"
    view = memoryview(padded)[4:-4]
    assert decode_command_set(view) == decode_command_set(bytearray(ECHO_RQ))


_VALUES = {
    VR.US: st.integers(0, 0xFFFF),
    VR.UL: st.integers(0, 0xFFFFFFFF),
    VR.UI: st.from_regex(r"[0-9]{1,5}(\.[0-9]{1,5}){0,9}", fullmatch=True),
    VR.AE: st.from_regex(r"[A-Z0-9_]{1,16}", fullmatch=True),
    VR.LO: st.from_regex(r"[a-z0-9]([a-z0-9 ]{0,30}[a-z0-9])?", fullmatch=True),
    VR.AT: st.lists(st.integers(0, 0xFFFFFFFF), min_size=1, max_size=5).map(tuple),
}


@st.composite
def _element_sets(draw: st.DrawFn) -> dict[int, object]:
    tags = draw(st.sets(st.sampled_from(sorted(COMMAND_ELEMENTS.keys() - {0}))))
    return {tag: draw(_VALUES[COMMAND_ELEMENTS[tag][1]]) for tag in tags}


@settings(max_examples=300, deadline=None)
@given(_element_sets())
def test_round_trip(elements: dict[int, object]) -> None:
    raw = encode_command_set(elements)  # type: ignore[arg-type]
    assert len(raw) % 2 == 0
    assert decode_command_set(raw) == elements


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_any_bytes_decode_or_dimse_error(data: bytes) -> None:
    try:
        decode_command_set(data)
    except DimseError:
        pass


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=120))
def test_any_body_behind_a_valid_group_length(body: bytes) -> None:
    try:
        elements = decode_command_set(_with_group_length(body))
    except DimseError:
        return
    assert set(elements) <= set(COMMAND_ELEMENTS)


@pytest.mark.parametrize("uid", [b"..", b".", b"1..2", b".1.2", b"1.2.", b"1.2/3", b"1\\2"])
def test_uids_unsafe_as_paths_are_refused(uid: bytes) -> None:
    with pytest.raises(DimseError, match="not a valid UID"):
        decode_command_set(_with_group_length(_element(0x1000, uid + b"\0" * (len(uid) % 2))))
    with pytest.raises(DimseError, match="not a UID"):
        encode_command_set({0x1000: uid.decode()})


def test_uid_with_leading_zero_components_is_tolerated() -> None:
    raw = _with_group_length(_element(0x1000, b"1.02.003"))
    assert decode_command_set(raw) == {0x1000: "1.02.003"}
