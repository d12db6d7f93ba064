"""Malformed PDUs on a live server: each ends its connection with the A-ABORT PS3.8 asks
for (source 2, service provider, and the reason of Table 9-26), and a legitimate client's
C-ECHO still works right after, on both event loops."""

from __future__ import annotations

import asyncio
import struct
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from aiodicom.core.pdu import AAssociateRJ
from aiodicom.errors import AbortReason
from tests.hostile.conftest import (
    aborts,
    harness,
    pdata,
    rq_bytes,
)

UNRECOGNIZED = AbortReason.UNRECOGNIZED_PDU
UNEXPECTED = AbortReason.UNEXPECTED_PDU
UNRECOGNIZED_PARAM = AbortReason.UNRECOGNIZED_PDU_PARAMETER
UNEXPECTED_PARAM = AbortReason.UNEXPECTED_PDU_PARAMETER
INVALID = AbortReason.INVALID_PDU_PARAMETER_VALUE


def _rq_item_offset(raw: bytes, item_type: int) -> int:
    """Offset of the first item of ``item_type`` in an encoded A-ASSOCIATE-RQ."""
    pos = 6 + 68
    while pos < len(raw):
        if raw[pos] == item_type:
            return pos
        pos += 4 + struct.unpack_from(">H", raw, pos + 2)[0]
    raise AssertionError(f"no item 0x{item_type:02X}")


def _patch(raw: bytes, offset: int, value: bytes) -> bytes:
    return raw[:offset] + value + raw[offset + len(value):]


def _rq_context_id(cid: int, *, which: int = 0) -> bytes:
    raw = rq_bytes()
    pos = _rq_item_offset(raw, 0x20)
    for _ in range(which):
        pos += 4 + struct.unpack_from(">H", raw, pos + 2)[0]
    return _patch(raw, pos + 4, bytes([cid]))


def _rq_item_length(item_type: int, length: int) -> bytes:
    raw = rq_bytes()
    return _patch(raw, _rq_item_offset(raw, item_type) + 2, struct.pack(">H", length))


def _rq_user_sub_item_length(sub_type: int, length: int) -> bytes:
    raw = rq_bytes()
    pos = _rq_item_offset(raw, 0x50) + 4
    while raw[pos] != sub_type:
        pos += 4 + struct.unpack_from(">H", raw, pos + 2)[0]
    return _patch(raw, pos + 2, struct.pack(">H", length))


def _rq_called_ae(title: bytes) -> bytes:
    return _patch(rq_bytes(), 6 + 4, title.ljust(16, b" "))


def _pdv_claiming(pdv_length: int) -> bytes:
    """A P-DATA-TF whose PDV item length is ``pdv_length`` but only 8 value bytes follow."""
    value = b"\x00" * 8
    return struct.pack(">BxLLBB", 4, len(value) + 6, pdv_length, 3, 3) + value


def _header(pdu_type: int, length: int, body: bytes = b"") -> bytes:
    return struct.pack(">BxL", pdu_type, length) + body


# (id, payload, send it after an association?, acceptable (source, reason) answers)
ATTACKS: list[tuple[str, bytes, bool, set[tuple[int, int]]]] = [
    ("unrecognized-pdu-type", _header(0x09, 4, b"\0" * 4), False, {(2, UNRECOGNIZED)}),
    ("unrecognized-pdu-type-sta6", _header(0x55, 4, b"\0" * 4), True, {(2, UNRECOGNIZED)}),
    ("pdata-before-association", pdata(1, 3, b"\0" * 8), False, {(2, UNEXPECTED)}),
    ("release-rq-before-association", _header(5, 4, b"\0" * 4), False, {(2, UNEXPECTED)}),
    ("length-0xFFFFFFFF", _header(1, 0xFFFFFFFF), False, {(2, INVALID)}),
    ("length-0xFFFFFFFF-sta6", _header(4, 0xFFFFFFFF), True, {(2, INVALID)}),
    ("length-2^31", _header(4, 1 << 31), True, {(2, INVALID)}),
    ("length-2^31-1", _header(4, (1 << 31) - 1), True, {(2, INVALID)}),
    ("length-2^32-2", _header(1, 0xFFFFFFFE), False, {(2, INVALID)}),
    ("pdv-longer-than-pdu", _pdv_claiming(100), True, {(2, INVALID)}),
    ("pdv-length-2^32-1", _pdv_claiming(0xFFFFFFFF), True, {(2, INVALID)}),
    ("pdv-length-2^31", _pdv_claiming(1 << 31), True, {(2, INVALID)}),
    ("pdv-length-1", _pdv_claiming(1) , True, {(2, INVALID)}),
    ("pdv-length-0", _pdv_claiming(0), True, {(2, INVALID)}),
    ("pdata-without-pdv", _header(4, 0), True, {(2, UNEXPECTED_PARAM), (2, INVALID)}),
    ("abort-pdu-length-0", _header(7, 0), True, {(2, INVALID)}),
    ("release-rq-length-0", _header(5, 0), True, {(2, INVALID)}),
    ("rq-context-item-length-2", _rq_item_length(0x20, 2), False,
     {(2, INVALID), (2, UNRECOGNIZED_PARAM), (2, UNEXPECTED_PARAM)}),
    ("rq-context-item-length-0", _rq_item_length(0x20, 0), False,
     {(2, INVALID), (2, UNRECOGNIZED_PARAM), (2, UNEXPECTED_PARAM)}),
    ("rq-app-context-length-0xFFFF", _rq_item_length(0x10, 0xFFFF), False,
     {(2, INVALID), (2, UNRECOGNIZED_PARAM), (2, UNEXPECTED_PARAM)}),
    ("rq-user-info-length-1", _rq_item_length(0x50, 1), False,
     {(2, INVALID), (2, UNRECOGNIZED_PARAM), (2, UNEXPECTED_PARAM)}),
    ("rq-max-length-sub-item-0", _rq_user_sub_item_length(0x51, 0), False,
     {(2, INVALID), (2, UNRECOGNIZED_PARAM), (2, UNEXPECTED_PARAM)}),
    ("rq-max-length-sub-item-0xFFFF", _rq_user_sub_item_length(0x51, 0xFFFF), False,
     {(2, INVALID), (2, UNRECOGNIZED_PARAM), (2, UNEXPECTED_PARAM)}),
    ("rq-truncated-fixed-part", _header(1, 20, rq_bytes()[6:26]), False, {(2, INVALID)}),
    ("rq-context-id-even", _rq_context_id(2), False, {(2, INVALID)}),
    ("rq-context-id-zero", _rq_context_id(0), False, {(2, INVALID)}),
    ("rq-context-id-duplicate", _rq_context_id(1, which=1), False, {(2, INVALID)}),
    ("rq-called-ae-all-spaces", _rq_called_ae(b" " * 16), False, {(2, INVALID)}),
    ("rq-called-ae-nul-bytes", _rq_called_ae(b"\0" * 16), False, {(2, INVALID)}),
    ("pdv-context-id-even", pdata(2, 3, b"\0" * 8), True, {(2, INVALID)}),
    ("http-get", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", False,
     {(2, UNRECOGNIZED), (2, INVALID)}),
    ("tls-client-hello", bytes.fromhex(
        "16030100c4010000c00303") + bytes(32) + b"\x00\x00\x02\x13\x01\x01\x00", False,
     {(2, UNRECOGNIZED), (2, INVALID)}),
]


@pytest.mark.parametrize(
    ("payload", "associate", "expected"),
    [pytest.param(p, a, e, id=name) for name, p, a, e in ATTACKS],
)
def test_malformed_pdu_aborts(
    run: Any, tmp_path: Path, payload: bytes, associate: bool, expected: set[tuple[int, int]]
) -> None:
    async def main() -> list[tuple[int, int]]:
        async with harness(tmp_path) as h:
            pdus = await h.attack(payload, associate=associate)
            assert not any(isinstance(p, AAssociateRJ) for p in pdus), pdus
            await h.echo_ok()
            await h.settle()
            return aborts(pdus)

    got = run(main())
    if expected:
        assert len(got) == 1 and got[0] in expected, got
    else:
        assert got == []


def test_association_rq_reaches_negotiation_after_fixes(run: Any, tmp_path: Path) -> None:
    """Control: the unmodified RQ the attacks start from is accepted."""

    async def main() -> None:
        async with harness(tmp_path) as h:
            reader, writer = await h.associate()
            writer.close()
            await h.echo_ok()

    run(main())


async def _allocation_for(h: Any, header: bytes, trickle: bytes) -> int:
    """Peak traced bytes while the server handles ``header`` then ``trickle`` (slowly)."""
    reader, writer = await h.associate()
    writer.transport.pause_reading()  # our own reads would allocate 256 KiB: not the server
    await asyncio.sleep(0.05)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        writer.write(header)
        for i in range(0, len(trickle), 100):
            writer.write(trickle[i:i + 100])
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
        writer.close()
    return peak


def test_claimed_lengths_allocate_nothing(tmp_path: Path) -> None:
    """A 4 GiB claim is refused from the header; a large claim under the cap, trickled,
    grows storage only as bytes arrive. Default loop only: tracemalloc sees Python heap."""

    async def main() -> tuple[int, int]:
        async with harness(tmp_path) as h:
            huge = await _allocation_for(h, _header(4, 0xFFFFFFFF), b"")
            # Claim the whole receive cap (64 KiB here), send 2 KB of it slowly.
            cap = 64 * 1024
            slow = await _allocation_for(h, _header(4, cap), b"\0" * 2000)
            await h.echo_ok()
            return huge, slow

    huge, slow = asyncio.run(main())
    # Measured ~6 KB for each (log record, PDU objects); a body allocated up front for the
    # claim would be 64 KiB, and 4 GiB would fail outright.
    assert huge < 32_000, huge
    assert slow < 32_000, slow
