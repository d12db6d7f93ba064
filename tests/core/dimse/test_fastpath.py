"""The fixed-layout fast path agrees with the general command-set decoder on every input.

`decode_common` may decline (None) anything; whatever it does decode, the general decoder
must decode to the same message (same type, same fields, same value types). And the four
common messages as every encoder writes them must take the fast path.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.dimse import (
    CEchoRQ,
    CEchoRSP,
    CFindRQ,
    CStoreRQ,
    CStoreRSP,
    Priority,
    Status,
    decode_message,
    encode_message,
)
from aiodicom.core.dimse._fastpath import decode_common
from aiodicom.core.dimse.messages import _decode_general
from aiodicom.errors import DimseError
from tests.dimse_strategies import MESSAGE_STRATEGIES, messages

COMMON = (CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP)
UID = "1.2.840.10008.5.1.4.1.1.2"


def _same(fast: Any, general: Any) -> None:
    assert type(fast) is type(general)
    assert fast == general
    assert repr(fast) == repr(general)  # Status/Priority vs plain int shows here
    for name in fast.__slots__:
        assert type(getattr(fast, name)) is type(getattr(general, name)), name


def check(data: bytes) -> Any:
    """The property: the fast path declines or agrees; decode_message = the general one."""
    fast = decode_common(data)
    try:
        general = _decode_general(data)
    except DimseError as exc:
        assert fast is None, f"fast path decoded what the general one refuses: {exc}"
        with pytest.raises(DimseError, match="^" + _escape(str(exc)) + "$"):
            decode_message(data)
        return None
    if fast is not None:
        _same(fast, general)
    _same(decode_message(data), general)
    return fast


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def _element(tag: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, tag, len(value)) + value


def _command(*elements: bytes, group_length: bytes | None = None) -> bytes:
    body = b"".join(elements)
    head = group_length if group_length is not None else _element(0, struct.pack("<L", len(body)))
    return head + body


def _us(tag: int, value: int) -> bytes:
    return _element(tag, struct.pack("<H", value))


def _ui(tag: int, uid: str) -> bytes:
    raw = uid.encode()
    return _element(tag, raw + b"\0" * (len(raw) % 2))


@settings(max_examples=400, deadline=None)
@given(st.one_of(*(MESSAGE_STRATEGIES[cls] for cls in COMMON)))
def test_common_messages_take_the_fast_path(msg: Any) -> None:
    fast = check(encode_message(msg))
    rare = ("move_originator_ae_title", "move_originator_message_id", "error_comment",
            "error_id", "offending_element")  # elements the fast path leaves to the other
    if all(getattr(msg, name, None) is None for name in rare):
        assert fast is not None


@settings(max_examples=300, deadline=None)
@given(messages())
def test_every_message_type_agrees(msg: Any) -> None:
    check(encode_message(msg))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=160))
def test_random_bytes_agree(data: bytes) -> None:
    check(data)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A common message's bytes with a few bytes overwritten, cut, or inserted."""
    msg = draw(st.one_of(*(MESSAGE_STRATEGIES[cls] for cls in COMMON)))
    data = bytearray(encode_message(msg))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["set", "cut", "insert", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 8))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=12))
        else:
            del data[at:]
    return bytes(data)


@settings(max_examples=1000, deadline=None)
@given(mutated())
def test_mutated_common_messages_agree(data: bytes) -> None:
    check(data)


_TAGS = st.sampled_from([0x0002, 0x0100, 0x0110, 0x0120, 0x0700, 0x0800, 0x0900, 0x1000,
                         0x0003, 0x0600, 0x0902, 0x1030, 0x1031, 0x0001, 0x5010])
_VALUES = st.one_of(
    st.integers(0, 0xFFFF).map(lambda v: struct.pack("<H", v)),
    st.sampled_from([0x0030, 0x8030, 0x0001, 0x8001, 0x0020, 0x0101, 0x0000, 0x0002,
                     0x0003]).map(lambda v: struct.pack("<H", v)),
    st.sampled_from([UID, "1.2", "", "1..2", "01.2", "1.2.a", "9" * 65]).map(
        lambda u: u.encode() + b"\0" * (len(u) % 2)),
    st.binary(max_size=6),
)


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.tuples(_TAGS, _VALUES), max_size=9), st.booleans())
def test_built_element_lists_agree(elements: list[tuple[int, bytes]], ordered: bool) -> None:
    if ordered:
        elements = sorted(elements, key=lambda e: e[0])
    check(_command(*(_element(tag, value) for tag, value in elements)))


def test_each_layout_decodes_fast() -> None:
    echo = _command(_ui(2, "1.2.840.10008.1.1"), _us(0x100, 0x30), _us(0x110, 7),
                    _us(0x800, 0x101))
    assert check(echo) == CEchoRQ(message_id=7)
    echo_with_data = _command(_ui(2, "1.2.840.10008.1.1"), _us(0x100, 0x30), _us(0x110, 7),
                              _us(0x800, 1))
    assert check(echo_with_data) == CEchoRQ(message_id=7, has_dataset=True)
    store = _command(_ui(2, UID), _us(0x100, 1), _us(0x110, 9), _us(0x700, 2), _us(0x800, 1),
                     _ui(0x1000, "1.2.3.4"))
    fast = check(store)
    assert fast == CStoreRQ(message_id=9, affected_sop_class_uid=UID,
                            affected_sop_instance_uid="1.2.3.4", priority=Priority.LOW)
    odd_priority = _command(_ui(2, UID), _us(0x100, 1), _us(0x110, 9), _us(0x700, 7),
                            _us(0x800, 1), _ui(0x1000, "1.2.3.4"))
    assert check(odd_priority).priority == 7
    rsp = _command(_us(0x100, 0x8030), _us(0x120, 3), _us(0x800, 0x101), _us(0x900, 0))
    assert check(rsp) == CEchoRSP(message_id_being_responded_to=3)
    store_rsp = _command(_ui(2, UID), _us(0x100, 0x8001), _us(0x120, 3), _us(0x800, 0x101),
                         _us(0x900, 0xA700), _ui(0x1000, "1.2.3"))
    assert check(store_rsp) == CStoreRSP(message_id_being_responded_to=3,
                                         status=Status(0xA700), affected_sop_class_uid=UID,
                                         affected_sop_instance_uid="1.2.3")
    bare_store_rsp = _command(_us(0x100, 0x8001), _us(0x120, 3), _us(0x800, 0x101),
                              _us(0x900, 0), _ui(0x1000, ""))
    assert check(bare_store_rsp) == CStoreRSP(message_id_being_responded_to=3)
    # Input as a bytearray and as a non-byte memoryview takes the same path.
    assert decode_common(bytearray(echo)) == CEchoRQ(message_id=7)
    assert decode_common(memoryview(echo).cast("H")) is None
    assert decode_message(memoryview(echo).cast("H")) == CEchoRQ(message_id=7)


def test_declines_what_it_does_not_read() -> None:
    """Each way out of the fast path: the general decoder then decides."""
    echo = [_ui(2, "1.2.840.10008.1.1"), _us(0x100, 0x30), _us(0x110, 7), _us(0x800, 0x101)]
    declined = [
        b"",  # too short
        _command(*echo, group_length=_element(0, b"\0\0")),  # group length not UL/4
        _command(*echo)[:-1],  # a truncated value
        _command(*echo) + b"\0\0\0",  # a truncated element header
        _command(*echo) + b"\0" * (64 * 1024),  # over the command set limit
        _command(echo[1], echo[0], *echo[2:]),  # out of order
        _command(*echo[:2], _us(0x100, 0x30), *echo[2:]),  # repeated
        _command(*echo, struct.pack("<HHL", 8, 0x10, 0)),  # outside group 0000
        _command(*echo[:2], _element(0x110, b"\x07\0\0\0"), echo[3]),  # US of length 4
        _command(*echo, _element(0x1030, b"AE")),  # an element it does not read
        _command(*echo, _ui(0x1000, "1.2")),  # C-ECHO-RQ with an instance UID
        _command(_ui(2, ""), *echo[1:]),  # C-ECHO-RQ with an empty SOP class
        _command(*echo[1:]),  # C-ECHO-RQ without a SOP class
        _command(_ui(2, "1..2"), *echo[1:]),  # a malformed UID
        _command(*echo[:3]),  # no CommandDataSetType
        _command(_ui(2, UID), _us(0x100, 1), _us(0x110, 9), _us(0x800, 1),
                 _ui(0x1000, "1.2")),  # C-STORE-RQ without a priority
        _command(_ui(2, UID), _us(0x100, 1), _us(0x110, 9), _us(0x700, 0), _us(0x800, 1)),
        _command(_us(0x100, 0x8030), _us(0x120, 3), _us(0x800, 0x101)),  # no status
        _command(_us(0x100, 0x8030), _us(0x120, 3), _us(0x800, 0x101), _us(0x900, 0),
                 _ui(0x1000, "1.2")),  # C-ECHO-RSP with an instance UID
        _command(_us(0x100, 0x8020), _us(0x120, 3), _us(0x800, 0x101), _us(0x900, 0)),
        encode_message(CFindRQ(message_id=1, affected_sop_class_uid=UID)),
    ]
    for data in declined:
        assert decode_common(data) is None, data.hex()
        check(data)
