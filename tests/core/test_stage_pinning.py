"""Hostile review of 4ea8a58: small P-DATA-TFs handed up as views of the staging area.

A peer controls how its bytes are cut into reads. Each tiny P-DATA-TF sent on its own
arrives in its own read, hence in its own staging area; a consumer that keeps the PDV value
(the assembler's pending command fragments, `aio.incoming.IncomingData`'s queue while a
handler is behind, which counts only the PDV bytes) must not pin a whole staging area per
few bytes the peer sent.
"""

from __future__ import annotations

import struct
import tracemalloc

from aiodicom.core.buffer import ReceiveBuffer
from aiodicom.core.pdu import decode_pdu


def _pdata(data: bytes, control: int = 0x00, context_id: int = 1) -> bytes:
    return struct.pack(">BxLLBB", 0x04, len(data) + 6, len(data) + 2, context_id,
                       control) + data


def _read(rx: ReceiveBuffer, data: bytes) -> None:
    """One transport read: the bytes land where `get_buffer` says."""
    target = rx.get_buffer()
    target[: len(data)] = data
    rx.buffer_updated(len(data))


def test_kept_small_pdv_values_do_not_pin_a_staging_area_each() -> None:
    rx = ReceiveBuffer(1 << 20, 4096)
    n = 500
    kept = []
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            _read(rx, _pdata(b"\x00\x01"))
            raw = rx.next_pdu()
            assert raw is not None
            kept.append(decode_pdu(raw.pdu_type, raw.body).pdvs[0].data)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert all(bytes(view) == b"\x00\x01" for view in kept)
    # 14 bytes sent per value; before 4ea8a58 each held ~0.3 KiB (view + exact copy)
    assert held / n < 1024, f"{held / n:.0f} bytes held per 14-byte PDU kept"


def test_the_share_threshold_is_an_eighth_of_the_staging_area() -> None:
    rx = ReceiveBuffer(1 << 20, 4096)
    small, big = _pdata(bytes(504)), _pdata(bytes(506))  # bodies of 510 and 512 bytes
    _read(rx, small + big)
    first, second = rx
    assert len(first.body.obj) == 510  # copied out
    assert second.body.obj is not first.body.obj and len(second.body.obj) == 4096  # shared
