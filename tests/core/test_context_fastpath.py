"""The presentation-context fast path (issue 18) decodes exactly what the general decoder does.

`_context_rq_common` walks the common shape of item 0x20 in place and returns None for
anything else; the general decoder then decides. So for any bytes: the fast path is None,
or it equals the general result (and leaves the reader where the general decoder would);
and `decode_context_rq` as a whole gives the same value or the same refusal (text, offset,
reason) with the fast path on and off.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiodicom.core import _context_fastpath, _item_codec
from aiodicom.core.buffer import Reader
from aiodicom.errors import InvalidPDU

UIDS = st.sampled_from(
    [b"1.2.840.10008.1.1", b"1.2.840.10008.1.2\0", b"1.2.840.10008.1.2.1", b"1.2..3", b"",
     b"1.2.x", b"0" * 64, b"1" * 65, b"1.2\0\0"]
)


def sub_item(item_type: int, value: bytes) -> bytes:
    return struct.pack(">BxH", item_type, len(value)) + value


@st.composite
def context_items(draw: st.DrawFn) -> bytes:
    cid = draw(st.integers(0, 255))
    reserved = draw(st.binary(min_size=3, max_size=3))
    subs = draw(st.lists(st.tuples(st.sampled_from([0x30, 0x40, 0x40, 0x51, 0x7F, 0x20]), UIDS),
                         max_size=6))
    body = bytes([cid]) + reserved + b"".join(sub_item(t, v) for t, v in subs)
    if draw(st.booleans()):  # damage: cut, or flip a byte
        if body and draw(st.booleans()):
            body = body[: draw(st.integers(0, len(body) - 1))]
        elif body:
            i = draw(st.integers(0, len(body) - 1))
            body = body[:i] + bytes([draw(st.integers(0, 255))]) + body[i + 1 :]
    return body


def outcome(body: bytes, fast: bool) -> object:
    saved = _item_codec.CONTEXT_FAST_PATH
    _item_codec.CONTEXT_FAST_PATH = fast
    try:
        r = Reader(body, base=100)
        return _item_codec.decode_context_rq(r), r.offset
    except InvalidPDU as exc:
        return str(exc), exc.offset, exc.reason
    finally:
        _item_codec.CONTEXT_FAST_PATH = saved


@given(context_items() | st.binary(max_size=40))
def test_fast_path_agrees_with_the_general_decoder(body: bytes) -> None:
    fast = _context_fastpath.context_rq_common(Reader(body, base=100))
    if fast is not None:
        assert (fast, 100 + len(body)) == outcome(body, fast=False)
    assert outcome(body, fast=True) == outcome(body, fast=False)


@pytest.mark.parametrize(
    "body",
    [
        b"",  # no context ID at all
        bytes([2, 0, 0, 0]) + sub_item(0x30, b"1.2") + sub_item(0x40, b"1.2"),  # even ID
        bytes([1, 0, 0, 0]) + sub_item(0x30, b"1.2") + b"\x40\x00",  # short sub-item header
        bytes([1, 0, 0, 0]) + sub_item(0x30, b"") + sub_item(0x40, b"1.2"),  # empty UID
        bytes([1, 0, 0, 0]) + sub_item(0x30, b"1.2")[:-1],  # length past the item
        bytes([1, 0, 0, 0]) + sub_item(0x30, b"1.x") + sub_item(0x40, b"1.2"),  # not a UID
        bytes([1, 0, 0, 0]) + sub_item(0x30, b"1.2") + sub_item(0x30, b"1.2")
        + sub_item(0x40, b"1.2"),  # two abstract syntaxes
        bytes([1, 0, 0, 0]) + sub_item(0x30, b"1.2") + sub_item(0x7F, b"1")
        + sub_item(0x40, b"1.2"),  # unknown sub-item: skipped by the general decoder
        bytes([1, 0, 0, 0]) + sub_item(0x30, b"1.2"),  # no transfer syntax
        bytes([1, 0, 0, 0]) + sub_item(0x40, b"1.2"),  # no abstract syntax
    ],
)
def test_every_unusual_shape_goes_to_the_general_decoder(body: bytes) -> None:
    assert _context_fastpath.context_rq_common(Reader(body)) is None
    assert outcome(body, fast=True) == outcome(body, fast=False)


def test_common_shape_takes_the_fast_path_in_any_order() -> None:
    body = (bytes([3, 9, 9, 9]) + sub_item(0x40, b"1.2.840.10008.1.2\0")
            + sub_item(0x30, b"1.2.840.10008.1.1") + sub_item(0x40, b"1.2.840.10008.1.2.1"))
    pc = _context_fastpath.context_rq_common(Reader(body))
    assert pc is not None
    assert (pc.context_id, pc.abstract_syntax, pc.transfer_syntaxes) == (
        3, "1.2.840.10008.1.1", ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1"))
