"""Per-request response queues are bounded: a peer cannot pile responses in memory."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from pydicom.dataset import Dataset

from aiodicom.aio import incoming
from aiodicom.aio.client import connect
from aiodicom.aio.incoming import RESPONSE_QUEUE_LIMIT, _Responses
from aiodicom.aio.requests import FindRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.core.dimse import CEchoRSP, Status
from aiodicom.core.negotiation import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)
from aiodicom.core.qr import qr_contexts
from aiodicom.settings import AssociationSettings, Timeouts


class _Reading:
    """Stands in for a DicomProtocol: records who holds reading paused."""

    def __init__(self) -> None:
        self.holders: set[object] = set()

    @property
    def paused(self) -> bool:
        return bool(self.holders)

    def pause_reading(self, holder: object) -> None:
        self.holders.add(holder)

    def resume_reading(self, holder: object) -> None:
        self.holders.discard(holder)


class _Owner:
    """Stands in for an Association: its protocol and whether anyone awaits input."""

    def __init__(self) -> None:
        self.protocol = _Reading()
        self.waiting_for_input = False

    def input_wait_begins(self) -> None:
        pass

    def input_wait_ends(self) -> None:
        pass


def _rsp(n: int) -> tuple[Any, None]:
    return CEchoRSP(message_id_being_responded_to=n, affected_sop_class_uid="1.2",
                    status=Status.SUCCESS), None


def test_queue_pauses_reading_past_its_limit_and_resumes_when_drained() -> None:
    async def main() -> None:
        owner = _Owner()
        reading = owner.protocol
        queue = _Responses(owner, limit=3)  # type: ignore[arg-type]
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


def test_queue_never_pauses_while_someone_awaits_input() -> None:
    """A requester that sends an echo while it iterates a C-FIND needs the echo's answer,
    which sits on the wire behind the queued matches: no pause then."""
    owner = _Owner()
    queue = _Responses(owner, limit=1)  # type: ignore[arg-type]
    owner.waiting_for_input = True
    for n in range(5):
        queue.put(_rsp(n))
    assert not owner.protocol.paused


def test_one_consumer_catching_up_does_not_unpause_another() -> None:
    reading = _Reading()
    first, second = object(), object()
    reading.pause_reading(first)
    reading.pause_reading(second)
    reading.resume_reading(first)
    assert reading.paused


def test_get_waits_for_a_response() -> None:
    async def main() -> int:
        queue = _Responses(_Owner(), limit=1)  # type: ignore[arg-type]
        waiter = asyncio.ensure_future(queue.get())
        await asyncio.sleep(0)
        assert not waiter.done()
        queue.put(_rsp(7))
        msg, _ = await waiter  # type: ignore[misc]
        return int(msg.message_id_being_responded_to)

    assert asyncio.run(main()) == 7


def _find_server(total: int, size: int = 0) -> Server:
    async def on_find(request: FindRequest) -> AsyncIterator[Any]:
        for n in range(total):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = f"1.2.3.{n}"
            if size:
                ds.StudyComments = "x" * size  # LT: up to 10,240 characters
            yield ds

    policy = AcceptorPolicy(accept_any_abstract_syntax=True)
    return Server(admission=policy, handlers=Handlers(find=on_find))


def _query() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = ""
    return query


_CONTEXTS = [*qr_contexts(), (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])]


def test_a_request_inside_a_find_loop_is_answered(run: Any) -> None:
    """40 matches (more than the queue's bound) and an echo per match: the echo's answer
    comes behind queued matches and must still arrive (a nested C-FIND per study alike)."""

    async def main() -> tuple[int, list[Status]]:
        statuses: list[Status] = []
        async with _find_server(40) as server:
            host, port = await server.listen()
            settings = AssociationSettings(timeouts=Timeouts(dimse=10.0))
            async with connect(host, port, contexts=_CONTEXTS, settings=settings) as assoc:
                seen = 0
                async for _ in assoc.find(_query()):
                    seen += 1
                    await asyncio.sleep(0.005)  # let the whole answer arrive first
                    statuses.append(await assoc.echo())
                return seen, statuses

    seen, statuses = run(main())
    assert seen == 40 and statuses == [Status.SUCCESS] * 40


def test_an_abandoned_find_does_not_stall_the_association(run: Any) -> None:
    """One match taken, the iteration left open (no aclose): later requests and the
    release still get their answers."""

    async def main() -> Status:
        async with _find_server(200) as server:
            host, port = await server.listen()
            settings = AssociationSettings(timeouts=Timeouts(dimse=10.0, acse=10.0))
            async with connect(host, port, contexts=_CONTEXTS, settings=settings) as assoc:
                query = assoc.find(_query())
                await query.__anext__()
                await asyncio.sleep(0.05)
                status = await assoc.echo()
                await assoc.release()
                await query.aclose()
                return status

    assert run(main()) == Status.SUCCESS


def test_slow_find_consumer_holds_a_bounded_number_of_responses(run: Any) -> None:
    """3,000 small pending C-FIND responses against a consumer that reads each identifier
    and sleeps: the queue never holds more than the bound plus what one read brings, not
    the whole result set (reading each identifier must not unpause the queue's hold)."""
    total = 3000
    high = [0]
    original = _Responses.put

    def put(self: _Responses, item: Any) -> None:
        original(self, item)
        high[0] = max(high[0], len(self._items))

    async def main() -> int:
        async with _find_server(total, size=100) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                count = 0
                async for _ in assoc.find(_query()):
                    count += 1
                    if count < 300:
                        await asyncio.sleep(0.001)
                return count

    incoming._Responses.put = put  # type: ignore[method-assign]
    try:
        assert run(main()) == total
    finally:
        incoming._Responses.put = original  # type: ignore[method-assign]
    assert RESPONSE_QUEUE_LIMIT < high[0] < 200, high[0]
