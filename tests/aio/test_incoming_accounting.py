"""Hostile review: `IncomingData` pauses reading by what its queued fragments hold, not
only by their PDV bytes. A peer sending empty (or tiny) data-set PDVs while the handler is
behind (an upload, a slow disk) must not grow the queue without a pause."""

from __future__ import annotations

import asyncio
from typing import Any

from aiodicom.aio.incoming import IncomingData


class _Protocol:
    def __init__(self) -> None:
        self.paused = False

    def pause_reading(self, holder: object) -> None:
        self.paused = True

    def resume_reading(self, holder: object) -> None:
        self.paused = False


def _incoming(protocol: _Protocol, high_water: int) -> IncomingData:
    async def make() -> IncomingData:
        return IncomingData(protocol, high_water)  # type: ignore[arg-type]
    return asyncio.run(make())


def test_empty_fragments_pause_reading() -> None:
    protocol = _Protocol()
    incoming = _incoming(protocol, 4 << 20)
    pushed = 0
    while not protocol.paused and pushed < 1_000_000:
        incoming.push(memoryview(bytearray(0)), False)  # what a 12-byte PDU becomes
        pushed += 1
    assert protocol.paused, "a million empty fragments queued, reading never paused"
    assert pushed <= 64 * 1024, pushed


def test_small_fragments_pinning_a_staging_area_count_what_they_pin() -> None:
    protocol = _Protocol()
    incoming = _incoming(protocol, 4 << 20)
    stage = bytearray(4096)  # eight 512-byte P-DATA-TFs, each a view of one staging area
    views: list[Any] = []
    while not protocol.paused and len(views) < 100_000:
        view = memoryview(bytearray(4096))[6:512]  # a new stage each: one PDU per read
        views.append(view)
        incoming.push(view, False)
    assert protocol.paused
    assert len(views) * len(stage) <= 8 << 20, len(views)  # held <= 2x the high water
