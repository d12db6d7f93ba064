"""What arrives on an association, with flow control: data sets and responses.

`IncomingData` is one data set arriving as memoryview fragments; `_Responses` the responses
to one request. Each holds the transport's reading paused (its own hold, never another's)
while its consumer is behind, so memory stays bounded by a few PDUs whatever the peer
sends; and each tells its association when its consumer waits for input, so a hold never
blocks input somebody else needs.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from io import BytesIO
from typing import Protocol

from aiodicom.aio.protocol import DicomProtocol
from aiodicom.core.dimse import Message
from aiodicom.errors import AssociationAborted, DimseError, fresh_error

__all__ = ["RESPONSE_QUEUE_LIMIT", "IncomingData", "InputOwner"]
RESPONSE_QUEUE_LIMIT = 16
"""Responses queued for one request before the transport stops reading."""

_Response = tuple[Message, "IncomingData | None"]

_FRAGMENT_COST = 256
"""The least a queued fragment is counted against `IncomingData.high_water` (its view and
event objects): a peer's empty data-set PDVs cannot queue without bound."""


class InputOwner(Protocol):
    """The association whose input this is (`aiodicom.aio.association.Association`)."""

    @property
    def protocol(self) -> DicomProtocol | None: ...

    @property
    def waiting_for_input(self) -> bool: ...

    def input_wait_begins(self) -> None: ...

    def input_wait_ends(self) -> None: ...


class IncomingData:
    """A data set arriving as memoryview fragments, consumed by one reader.

    Fragments are queued as they arrive; past `high_water` queued bytes (what each holds:
    the buffer it is a view of, at least `_FRAGMENT_COST`) the transport stops reading
    until the consumer catches up, so memory stays bounded by a few PDUs.
    """

    __slots__ = (
        "_bytes",
        "_done",
        "_error",
        "_frags",
        "_owner",
        "_protocol",
        "_waiter",
        "high_water",
        "total",
    )

    def __init__(self, protocol: DicomProtocol, high_water: int,
                 owner: InputOwner | None = None) -> None:
        self._protocol = protocol
        self._owner = owner
        self._frags: list[memoryview] = []
        self._bytes = 0
        self._done = False
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.high_water = high_water
        self.total = 0

    @property
    def complete(self) -> bool:
        return self._done

    def push(self, data: memoryview, last: bool) -> None:
        self._frags.append(data)
        # what the fragment holds, not its length: the buffer it is a view of (a staging
        # area, a PDU body), and at least its objects, so empty fragments count too
        obj = data.obj
        self._bytes += max(len(obj) if isinstance(obj, bytearray) else len(data),
                           _FRAGMENT_COST)
        self.total += len(data)
        if last:
            self._done = True
        if self._bytes > self.high_water:
            self._protocol.pause_reading(self)
        self._wake()

    def fail(self, exc: BaseException) -> None:
        if not self._done:
            self._error = exc
            self._done = True
            self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def chunks(self) -> AsyncIterator[list[memoryview]]:
        """Batches of fragments in arrival order; ends when the last one is in."""
        while True:
            if self._frags:
                batch, self._frags, self._bytes = self._frags, [], 0
                self._protocol.resume_reading(self)
                yield batch
                continue
            if self._error is not None:
                raise fresh_error(self._error)
            if self._done:
                return
            self._waiter = asyncio.get_running_loop().create_future()
            if self._owner is not None:
                self._owner.input_wait_begins()
            try:
                await self._waiter
            finally:
                self._waiter = None
                if self._owner is not None:
                    self._owner.input_wait_ends()

    async def __aiter__(self) -> AsyncIterator[memoryview]:
        async for batch in self.chunks():
            for view in batch:
                yield view

    async def discard(self) -> None:
        async for _ in self.chunks():
            pass

    async def read_bounded(self, limit: int) -> bytes:
        """The whole data set as bytes, for what is small by nature (an identifier, an
        N-ACTION's references); past ``limit`` bytes the rest is read and dropped and
        `DimseError` is raised, so a peer's claim never becomes our allocation."""
        buf = BytesIO()
        async for batch in self.chunks():
            for view in batch:
                if buf.tell() + len(view) > limit:
                    await self.discard()
                    raise DimseError(f"data set larger than {limit} bytes")
                buf.write(view)
        return buf.getvalue()


class _Responses:
    """The responses to one request, in arrival order, consumed by its requester.

    Past `limit` queued responses the transport stops reading until the requester takes
    some: memory stays bounded whatever number of pending C-FIND responses a peer sends.
    The pause is held only while nobody else on the association waits for input: a
    requester that sends another request (an echo, a C-FIND per study) while it iterates,
    or that leaves an iteration unfinished, must still get its answers, which sit on the
    wire behind the queued responses.
    """

    __slots__ = ("_items", "_owner", "_waiter", "limit")

    def __init__(self, owner: InputOwner, limit: int) -> None:
        self._items: deque[_Response | AssociationAborted] = deque()
        self._owner = owner
        self._waiter: asyncio.Future[None] | None = None
        self.limit = limit

    def put(self, item: _Response | AssociationAborted) -> None:
        self._items.append(item)
        protocol = self._owner.protocol
        if len(self._items) > self.limit and protocol is not None \
                and not self._owner.waiting_for_input:
            protocol.pause_reading(self)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def get(self) -> _Response | AssociationAborted:
        while not self._items:
            self._waiter = asyncio.get_running_loop().create_future()
            self._owner.input_wait_begins()
            try:
                await self._waiter
            finally:
                self._waiter = None
                self._owner.input_wait_ends()
        item = self._items.popleft()
        if len(self._items) <= self.limit:
            self.release_hold()
        return item

    def release_hold(self) -> None:
        protocol = self._owner.protocol
        if protocol is not None:
            protocol.resume_reading(self)

    def close(self) -> None:
        """The requester is done: drop what is left and let the transport read again."""
        self.release_hold()
        self._items.clear()
