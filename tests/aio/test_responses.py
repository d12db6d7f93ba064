"""Per-request response queues are bounded: a peer cannot pile responses in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydicom.dataset import Dataset

from aiodicom.aio import association
from aiodicom.aio.association import RESPONSE_QUEUE_LIMIT, _Responses
from aiodicom.aio.client import connect
from aiodicom.aio.requests import FindRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.core.dimse import CEchoRSP, Status
from aiodicom.core.negotiation import AcceptorPolicy
from aiodicom.core.qr import qr_contexts


class _Reading:
    """Stands in for a DicomProtocol: records pause/resume."""

    def __init__(self) -> None:
        self.paused = False
        self.calls: list[str] = []

    def pause_reading(self) -> None:
        self.paused = True
        self.calls.append("pause")

    def resume_reading(self) -> None:
        self.paused = False
        self.calls.append("resume")


def _rsp(n: int) -> tuple[Any, None]:
    return CEchoRSP(message_id_being_responded_to=n, affected_sop_class_uid="1.2",
                    status=Status.SUCCESS), None


def test_queue_pauses_reading_past_its_limit_and_resumes_when_drained() -> None:
    async def main() -> None:
        reading = _Reading()
        queue = _Responses(reading, limit=3)  # type: ignore[arg-type]
        for n in range(3):
            queue.put(_rsp(n))
        assert not reading.paused
        queue.put(_rsp(3))
        assert reading.paused  # 4 queued > limit: the transport stops reading
        queue.put(_rsp(4))
        assert (await queue.get())[0].message_id_being_responded_to == 0
        assert reading.paused  # still 4 queued
        await queue.get()
        assert not reading.paused  # back to the limit
        queue.put(_rsp(5))
        queue.put(_rsp(6))
        assert reading.paused
        queue.close()  # the requester gave up: nothing held, reading resumes
        assert not reading.paused

    asyncio.run(main())


def test_get_waits_for_a_response() -> None:
    async def main() -> int:
        queue = _Responses(None, limit=1)
        waiter = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        assert not waiter.done()
        queue.put(_rsp(7))
        msg, _ = await waiter  # type: ignore[misc]
        return int(msg.message_id_being_responded_to)

    assert asyncio.run(main()) == 7


def test_slow_find_consumer_holds_a_bounded_number_of_responses(run: Any) -> None:
    """500 pending C-FIND responses of ~4 KiB each (2 MB) against a consumer that takes
    one per loop turn: the queue never holds more than what one read brings past the
    limit, not the whole result set."""
    total = 500
    high = [0]
    original = _Responses.put

    def put(self: _Responses, item: Any) -> None:
        original(self, item)
        high[0] = max(high[0], len(self._items))

    async def on_find(request: FindRequest) -> AsyncIterator[Any]:
        for n in range(total):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = f"1.2.3.{n}"
            ds.StudyComments = "x" * 4000  # LT: up to 10,240 characters
            yield ds

    async def main() -> int:
        policy = AcceptorPolicy(accept_any_abstract_syntax=True)
        async with Server(admission=policy, handlers=Handlers(find=on_find)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                query = Dataset()
                query.QueryRetrieveLevel = "STUDY"
                query.StudyInstanceUID = ""
                count = 0
                async for _ in assoc.find(query):
                    count += 1
                    await asyncio.sleep(0.001 if count < 50 else 0)
                return count

    association._Responses.put = put  # type: ignore[method-assign]
    try:
        assert run(main()) == total
    finally:
        association._Responses.put = original  # type: ignore[method-assign]
    # One read is at most a few hundred KiB (~70 responses of 4 KiB) beyond the limit.
    assert RESPONSE_QUEUE_LIMIT < high[0] < 150, high[0]
