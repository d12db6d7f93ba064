"""core/buffer.py: the Reader cursor, the Writer, and ReceiveBuffer framing and its limits."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiodicom.core.buffer import RawPDU, Reader, ReceiveBuffer, Writer
from aiodicom.core.pdu import PDU, decode_pdu, encode_pdu
from aiodicom.errors import AbortReason, InvalidPDU
from tests.strategies import pdus

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- Reader ---------------------------------------------------------------------------------


def test_reader_reads_big_endian_fields_and_tracks_offsets() -> None:
    r = Reader(b"\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c", base=6)
    assert (r.offset, r.remaining) == (6, 12)
    assert r.u8() == 1
    assert r.u16() == 0x0203
    assert r.u32() == 0x04050607
    r.skip(1)
    assert r.offset == 6 + 8
    view = r.take(2)
    assert isinstance(view, memoryview) and bytes(view) == b"\x09\x0a"
    assert bytes(r.rest()) == b"\x0b\x0c"
    assert r.at_end() and r.remaining == 0


def test_reader_views_share_storage() -> None:
    data = bytearray(b"abcdef")
    r = Reader(data)
    view = r.take(3)
    data[0] = ord("z")
    assert bytes(view) == b"zbc"


def test_reader_sub_keeps_absolute_offsets_and_bounds() -> None:
    r = Reader(b"\x00\x00\x00\x02ab!", base=6)
    r.skip(2)
    sub = r.sub(4, "item")
    assert sub.offset == 8 and sub.remaining == 4
    assert sub.u16() == 2
    with pytest.raises(InvalidPDU) as info:
        sub.take(3, "value")  # only 2 left in the sub-reader, though the parent has more
    assert info.value.offset == 10
    assert r.remaining == 1


@pytest.mark.parametrize(
    ("call", "offset"),
    [
        (lambda r: r.u8(), 3),
        (lambda r: r.u16(), 3),
        (lambda r: r.u32(), 3),
        (lambda r: r.skip(1), 3),
        (lambda r: r.take(1), 3),
        (lambda r: r.take(-1), 3),
        (lambda r: r.sub(0xFFFFFFFF), 3),
    ],
)
def test_reader_underrun_raises_invalid_pdu(call: object, offset: int) -> None:
    r = Reader(b"abc", base=0)
    r.skip(3)
    assert callable(call)
    with pytest.raises(InvalidPDU) as info:
        call(r)
    assert info.value.offset == offset
    assert info.value.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE


def test_reader_partial_field_underrun_names_what() -> None:
    r = Reader(b"\x01\x02\x03", base=6)
    with pytest.raises(InvalidPDU) as info:
        r.u32("PDV item length")
    assert "PDV item length" in info.value.what and info.value.offset == 6
    assert r.offset == 6  # nothing consumed


def test_reader_casts_non_byte_views() -> None:
    r = Reader(memoryview(struct.pack("<2H", 1, 2)).cast("H"))
    assert r.remaining == 4


# -- Writer -----------------------------------------------------------------------------------


def test_writer_back_patches_lengths() -> None:
    w = Writer()
    w.u8(1)
    outer = w.reserve_u32()
    w.u16(0xABCD)
    inner = w.reserve_u16()
    w.write(b"xyz")
    w.zeros(2)
    w.patch_u16(inner)
    w.patch_u32(outer)
    assert w.getvalue() == b"\x01\x00\x00\x00\x09\xab\xcd\x00\x05xyz\x00\x00"


def test_writer_refuses_an_item_over_64k() -> None:
    w = Writer()
    pos = w.reserve_u16()
    w.write(bytes(0x10000))
    with pytest.raises(ValueError):
        w.patch_u16(pos)
    w2 = Writer()
    pos = w2.reserve_u16()
    w2.write(bytes(0xFFFF))
    w2.patch_u16(pos)
    assert w2.getvalue()[:2] == b"\xff\xff"


# -- ReceiveBuffer ----------------------------------------------------------------------------


def _drain(buf: ReceiveBuffer) -> list[tuple[int, bytes]]:
    return [(raw.pdu_type, bytes(raw.body)) for raw in buf]


def test_receive_buffer_rejects_a_tiny_limit() -> None:
    with pytest.raises(ValueError):
        ReceiveBuffer(max_body=3)


def test_receive_buffer_yields_whole_pdus_only() -> None:
    release = encode_pdu(decode_pdu(5, memoryview(bytes(4))))
    buf = ReceiveBuffer(max_body=1024)
    buf.feed(release[:5])
    assert buf.next_pdu() is None and buf.has_partial() and buf.buffered == 5
    buf.feed(release[5:] + release[:2])
    raw = buf.next_pdu()
    assert isinstance(raw, RawPDU) and raw.pdu_type == 5 and bytes(raw.body) == bytes(4)
    assert buf.next_pdu() is None and buf.buffered == 2
    buf.feed(release[2:])
    assert _drain(buf) == [(5, bytes(4))]
    assert not buf.has_partial() and buf.buffered == 0


def test_receive_buffer_zero_length_body() -> None:
    buf = ReceiveBuffer(max_body=16)
    buf.feed(b"\x05\x00\x00\x00\x00\x00")
    assert _drain(buf) == [(5, b"")]


def test_receive_buffer_large_pdu_grows_and_is_written_in_place() -> None:
    body = bytes(range(256)) * 100  # 25,600 bytes, much more than the staging area
    stream = b"\x04\x00" + struct.pack(">L", len(body)) + body
    buf = ReceiveBuffer(max_body=1 << 20, staging_size=64)
    pos = 0
    while pos < len(stream):
        target = buf.get_buffer()
        assert len(target) > 0
        n = min(len(target), len(stream) - pos, 1000)
        target[:n] = stream[pos : pos + n]
        buf.buffer_updated(n)
        pos += n
    ((pdu_type, got),) = _drain(buf)
    assert pdu_type == 4 and got == body


def test_receive_buffer_accepts_exactly_the_limit() -> None:
    buf = ReceiveBuffer(max_body=10)
    buf.feed(b"\x04\x00\x00\x00\x00\x0a" + bytes(10))
    assert _drain(buf) == [(4, bytes(10))]
    with pytest.raises(InvalidPDU):
        buf.feed(b"\x04\x00\x00\x00\x00\x0b")


def test_receive_buffer_refuses_a_claim_over_the_limit() -> None:
    buf = ReceiveBuffer(max_body=100)
    first = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    with pytest.raises(InvalidPDU) as info:
        buf.feed(first + b"\x04\x00\xff\xff\xff\xff")
    assert info.value.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    assert "4294967295" in info.value.what
    assert _drain(buf) == [(5, bytes(4))]  # what came before is still delivered


def test_receive_buffer_refused_claim_offset_points_at_its_length_field() -> None:
    buf = ReceiveBuffer(max_body=100)
    first = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    with pytest.raises(InvalidPDU) as info:
        buf.feed(first + b"\x04\x00\xff\xff\xff\xff")
    assert info.value.offset == len(first) + 2  # the length field, counted in the stream


@pytest.mark.parametrize("claim", [0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, (1 << 20) + 1])
def test_receive_buffer_allocates_nothing_for_a_refused_claim(claim: int) -> None:
    buf = ReceiveBuffer(max_body=1 << 20)
    header = b"\x04\x00" + struct.pack(">L", claim)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        with pytest.raises(InvalidPDU):
            buf.feed(header)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - before < 64 * 1024


def test_receive_buffer_a_slow_large_claim_costs_only_what_arrived() -> None:
    # "declared large, send slowly" (pynetdicom #1086): storage follows the bytes, not the claim
    buf = ReceiveBuffer(max_body=64 << 20)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        buf.feed(b"\x04\x00" + struct.pack(">L", 64 << 20) + bytes(100))
        for _ in range(10):
            buf.feed(bytes(100))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert buf.next_pdu() is None and buf.buffered == 1100
    assert peak - before < 256 * 1024


def _stream(values: list[PDU]) -> bytes:
    return b"".join(encode_pdu(v) for v in values)


def _feed_at(data: bytes, cuts: list[int], staging: int = 4096) -> list[tuple[int, bytes]]:
    buf = ReceiveBuffer(max_body=1 << 20, staging_size=staging)
    out: list[tuple[int, bytes]] = []
    prev = 0
    for cut in [*sorted(cuts), len(data)]:
        buf.feed(data[prev:cut])
        out += _drain(buf)
        prev = cut
    assert not buf.has_partial()
    return out


@FAST
@given(
    st.lists(pdus(), min_size=1, max_size=5),
    st.lists(st.integers(0, 4000), max_size=12),
    st.sampled_from([6, 16, 64, 4096]),
)
def test_chunk_invariance(values: list[PDU], cuts: list[int], staging: int) -> None:
    data = _stream(values)
    cuts = [c % (len(data) + 1) for c in cuts]
    whole = _feed_at(data, [], staging)
    assert [decode_pdu(t, memoryview(b)) for t, b in whole] == values
    assert _feed_at(data, cuts, staging) == whole
    assert _feed_at(data, list(range(1, len(data))), staging) == whole  # byte by byte


@FAST
@given(st.lists(pdus(), min_size=1, max_size=4), st.lists(st.integers(1, 300), max_size=20))
def test_chunk_invariance_through_get_buffer(values: list[PDU], sizes: list[int]) -> None:
    """The BufferedProtocol path: the transport fills get_buffer() views of any size."""
    data = _stream(values)
    buf = ReceiveBuffer(max_body=1 << 20, staging_size=32)
    pos, i = 0, 0
    while pos < len(data):
        target = buf.get_buffer()
        want = sizes[i % len(sizes)] if sizes else len(data)
        n = min(len(target), len(data) - pos, want)
        target[:n] = data[pos : pos + n]
        buf.buffer_updated(n)
        pos += n
        i += 1
    assert [decode_pdu(raw.pdu_type, raw.body) for raw in buf] == values


@FAST
@given(
    st.lists(pdus(), min_size=1, max_size=6),
    st.lists(st.integers(1, 5000), min_size=1, max_size=20),
    st.sampled_from([6, 16, 64, 4096]),
)
def test_views_handed_up_stay_intact_while_more_arrives(
    values: list[PDU], sizes: list[int], staging: int
) -> None:
    """A P-DATA-TF that arrived whole in the staging area goes up as a view of it: keep every
    view (no copy) until the whole stream is in, and each must still hold its own bytes."""
    data = _stream(values)
    buf = ReceiveBuffer(max_body=1 << 20, staging_size=staging)
    kept: list[RawPDU] = []
    pos, i = 0, 0
    while pos < len(data):
        target = buf.get_buffer()
        n = min(len(target), len(data) - pos, sizes[i % len(sizes)])
        target[:n] = data[pos : pos + n]
        buf.buffer_updated(n)
        kept.extend(buf)
        pos += n
        i += 1
    assert [encode_pdu(decode_pdu(raw.pdu_type, raw.body)) for raw in kept] == [
        encode_pdu(v) for v in values
    ]


def test_pdata_views_share_the_staging_area_other_pdus_are_copied() -> None:
    pdata = b"\x04\x00\x00\x00\x00\x08\x00\x00\x00\x04\x01\x03\xab\xcd"
    release = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
    buf = ReceiveBuffer(max_body=1024, staging_size=64)  # an 8-byte body is 1/8 of it
    buf.feed(pdata + release + pdata + pdata[:3])  # ends in a partial header
    first, second, third = buf
    assert first.body.obj is third.body.obj  # both views of the one staging area
    assert second.body.obj is not first.body.obj and len(second.body.obj) == 4  # a copy
    buf.feed(pdata[3:])  # the partial header moved to a new stage: the views are untouched
    (fourth,) = buf
    assert fourth.body.obj is not first.body.obj
    assert [bytes(r.body) for r in (first, third, fourth)] == [pdata[6:]] * 3
    assert bytes(second.body) == bytes(4)


def test_a_refused_claim_after_a_pdata_view_never_reuses_its_stage() -> None:
    pdata = b"\x04\x00\x00\x00\x00\x08\x00\x00\x00\x04\x01\x03\xab\xcd"
    buf = ReceiveBuffer(max_body=100, staging_size=64)  # an 8-byte body is 1/8 of it
    with pytest.raises(InvalidPDU):
        buf.feed(pdata + b"\x04\x00\xff\xff\xff\xff")
    (raw,) = buf
    buf.feed(b"\x05\x00\x00\x00\x00\x04" + b"\xee" * 4)
    assert bytes(raw.body) == pdata[6:]
    assert [bytes(r.body) for r in buf] == [b"\xee" * 4]


@pytest.mark.parametrize(
    ("length", "first", "whole"),
    [
        (131_066, 4096, True),  # storescu's 128 KiB PDU after a 4 KiB first read
        (64 * 4090, 4096, True),  # exactly 64 times what arrived
        (64 * 4090 + 1, 4096, False),  # more: 16x what arrived, then growth
        (1 << 20, 4096, False),
        (131_066, 100, False),  # a slow start: storage follows the bytes
    ],
)
def test_body_storage_whole_only_when_enough_of_it_arrived(
    length: int, first: int, whole: bool
) -> None:
    buf = ReceiveBuffer(max_body=1 << 20)
    stream = b"\x04\x00" + struct.pack(">L", length) + bytes(range(256)) * (length // 256 + 1)
    target = buf.get_buffer()
    target[:first] = stream[:first]
    buf.buffer_updated(first)
    have = first - 6
    room = len(buf.get_buffer())
    if whole:
        assert room == length - have
    else:
        assert room == min(length, max(4096, have * 16)) - have
    pos = first
    while pos < length + 6:  # the rest, through growth if any: the same bytes come out
        target = buf.get_buffer()
        n = min(len(target), length + 6 - pos)
        target[:n] = stream[pos : pos + n]
        buf.buffer_updated(n)
        pos += n
    (raw,) = buf
    assert raw.pdu_type == 4 and raw.body == stream[6 : 6 + length]
