"""The asynchronous operations window of the invoker (PS3.7 D.3.3.3).

An association may have at most the negotiated number of requests it invoked outstanding
(1 without an Asynchronous Operations Window sub-item). A request takes a place before its
command goes out and gives it back with its final response; a request that finds the
window full waits, first come first served.

A task that already holds a place never waits: a request made inside a C-FIND loop (or
beside a C-FIND left open) would otherwise wait for a place only its own task can free.
Such a nested request goes out beyond the window, as it always did; a peer that performs
one operation at a time answers it after the C-FIND, as ours does. Requests from other
tasks (``asyncio.gather`` of stores) are the ones the window orders.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["OperationsWindow"]

log = logging.getLogger("aiodicom.association")


class OperationsWindow:
    """At most ``size`` places held at once, except by a task that already holds one."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"an operations window holds at least 1 place, not {size}")
        self.size = size
        self.outstanding = 0
        self.peak = 0
        """The most places held at once (nested requests included)."""
        self._holders: dict[asyncio.Task[object] | None, int] = {}
        self._waiters: deque[asyncio.Future[None]] = deque()

    @asynccontextmanager
    async def place(self) -> AsyncIterator[None]:
        """Hold a place for the duration of one request (command out to final response)."""
        task = asyncio.current_task()
        full = self.outstanding >= self.size or self._waiters
        if full and not self._holders.get(task):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # `_wake` hands us a place, already counted
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.outstanding -= 1  # handed over as we were cancelled: pass it on
                    self._wake()
                elif waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        else:
            if full:
                log.debug("a request nested in another of the same task goes beyond the "
                          "operations window of %d", self.size)
            self.outstanding += 1
        self.peak = max(self.peak, self.outstanding)
        self._holders[task] = self._holders.get(task, 0) + 1
        try:
            yield
        finally:
            held = self._holders[task] - 1
            if held:
                self._holders[task] = held
            else:
                del self._holders[task]
            self.outstanding -= 1
            self._wake()

    def _wake(self) -> None:
        """Hand free places to the waiters, first come first served."""
        while self._waiters and self.outstanding < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.outstanding += 1
                waiter.set_result(None)
