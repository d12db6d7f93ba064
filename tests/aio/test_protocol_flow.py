"""DicomProtocol write flow control: drain waits while the transport is paused (the event
is made on the first pause), returns at once otherwise, and fails once the connection is
gone."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aiodicom.aio.protocol import DicomProtocol
from aiodicom.core.upper_layer import UpperLayer
from aiodicom.errors import AssociationAborted


class _Transport:
    def write(self, data: Any) -> None:
        pass

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default


def test_drain_follows_pause_and_resume(run: Any) -> None:
    async def body() -> None:
        protocol = DicomProtocol(UpperLayer(requestor=False), lambda primitive: None)
        protocol.connection_made(_Transport())  # type: ignore[arg-type]
        await asyncio.wait_for(protocol.drain(), 1)  # never paused: no wait
        protocol.resume_writing()  # a resume without a pause changes nothing
        await asyncio.wait_for(protocol.drain(), 1)
        for _ in range(2):  # the first pause makes the event, the second reuses it
            protocol.pause_writing()
            waiter = asyncio.ensure_future(protocol.drain())
            await asyncio.sleep(0.01)
            assert not waiter.done()
            protocol.resume_writing()
            await asyncio.wait_for(waiter, 1)
        protocol.pause_writing()
        waiter = asyncio.ensure_future(protocol.drain())
        await asyncio.sleep(0.01)
        protocol.connection_lost(None)
        with pytest.raises(AssociationAborted):
            await asyncio.wait_for(waiter, 1)

    run(body())


def test_connection_lost_without_a_pause(run: Any) -> None:
    async def body() -> None:
        protocol = DicomProtocol(UpperLayer(requestor=False), lambda primitive: None)
        protocol.connection_made(_Transport())  # type: ignore[arg-type]
        protocol.connection_lost(None)
        with pytest.raises(AssociationAborted):
            await protocol.drain()

    run(body())
