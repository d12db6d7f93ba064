"""The asynchronous operations window on the invoker side (PS3.7 D.3.3.3).

The server counts requests outstanding as they arrive (the request filter runs when a
request is dispatched, before its handler and before the server's own performed window) and
as its handlers finish; the peak is what our client had outstanding at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aiodicom.aio._window import OperationsWindow
from aiodicom.aio.admission import Admission
from aiodicom.aio.client import connect, open_association, storage_contexts_for
from aiodicom.aio.requests import EchoRequest, FindRequest, Handlers, StoreRequest
from aiodicom.aio.server import Server
from aiodicom.core.dimse import Message, Status
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)
from aiodicom.core.qr import qr_contexts
from aiodicom.errors import ConfigurationError
from tests.conftest import write_ct

SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


class Counter:
    """Requests outstanding at the server: +1 when one arrives, -1 when its handler ends."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0
        self.arrived = 0

    def arrive(self, info: Any, msg: Message) -> Status | None:
        self.now += 1
        self.arrived += 1
        self.peak = max(self.peak, self.now)
        return None

    async def work(self) -> None:
        await asyncio.sleep(0.02)  # long enough for any request sent meanwhile to arrive
        self.now -= 1

    def server(self, *, performed: int = 8) -> Server:
        async def on_store(request: StoreRequest) -> Status:
            async for _view in request.fragments():
                pass
            await self.work()
            return Status.SUCCESS

        async def on_echo(request: EchoRequest) -> Status:
            await self.work()
            return Status.SUCCESS

        async def on_find(request: FindRequest) -> AsyncIterator[Any]:
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.StudyInstanceUID = "1.2.3"
            yield ds
            await self.work()

        policy = AcceptorPolicy(abstract_syntaxes={uid: SYNTAXES for uid, _ in qr_contexts()},
                                accept_any_abstract_syntax=True,
                                max_operations_performed=performed)
        return Server(admission=Admission(policy=policy, request_filter=self.arrive),
                      handlers=Handlers(store=on_store, echo=on_echo, find=on_find))


def _files(tmp_path: Path, n: int) -> list[Path]:
    return [write_ct(tmp_path / f"{i}.dcm", size=2048) for i in range(n)]


async def _store_all(counter: Counter, files: list[Path], *, performed: int = 8,
                     **kw: Any) -> tuple[list[Status], int]:
    async with counter.server(performed=performed) as server:
        host, port = await server.listen()
        async with connect(host, port, contexts=storage_contexts_for(files), **kw) as assoc:
            assert assoc.negotiated is not None
            statuses = await asyncio.gather(*(assoc.store(p) for p in files))
            return statuses, assoc.negotiated.max_operations_invoked


def test_default_window_of_one_never_overlaps(run: Any, tmp_path: Path) -> None:
    counter = Counter()
    statuses, window = run(_store_all(counter, _files(tmp_path, 5)))
    assert window == 1
    assert statuses == [Status.SUCCESS] * 5
    assert counter.arrived == 5 and counter.peak == 1


def test_negotiated_window_bounds_outstanding_stores(run: Any, tmp_path: Path) -> None:
    counter = Counter()
    statuses, window = run(_store_all(counter, _files(tmp_path, 5), max_operations_invoked=4))
    assert window == 4
    assert statuses == [Status.SUCCESS] * 5
    assert 1 < counter.peak <= 4


def test_the_acceptor_narrows_the_window(run: Any, tmp_path: Path) -> None:
    """We propose 16, the server performs at most 2: we invoke at most 2."""
    counter = Counter()
    statuses, window = run(_store_all(counter, _files(tmp_path, 6), performed=2,
                                      max_operations_invoked=16))
    assert window == 2
    assert statuses == [Status.SUCCESS] * 6
    assert counter.peak == 2


def test_echo_find_and_store_share_the_window(run: Any, tmp_path: Path) -> None:
    files = _files(tmp_path, 3)
    counter = Counter()

    async def main() -> list[Any]:
        async with counter.server() as server:
            host, port = await server.listen()
            contexts = [*storage_contexts_for(files), *qr_contexts()]
            async with connect(host, port, contexts=contexts) as assoc:

                async def find() -> int:
                    async with assoc.find(_study()) as matches:
                        return len([m async for m in matches])

                return await asyncio.gather(
                    *(assoc.store(p) for p in files), *(assoc.echo() for _ in range(3)),
                    find(), find())

    results = run(main())
    assert results == [Status.SUCCESS] * 6 + [1, 1]
    assert counter.arrived == 8 and counter.peak == 1


def test_a_find_closed_early_cancels_inside_its_own_place(run: Any) -> None:
    """C-CANCEL-RQ is not an operation: with a window of 1 the C-FIND that holds the one
    place can still cancel itself, and the next request goes out after its final response."""
    async def main() -> tuple[Status | None, Status]:
        gate = asyncio.Event()

        async def on_find(request: FindRequest) -> AsyncIterator[Any]:
            for n in range(100):
                ds = _study()
                ds.StudyInstanceUID = f"1.2.3.{n}"
                yield ds
                if n == 1:
                    await gate.wait()

        policy = AcceptorPolicy(abstract_syntaxes={uid: SYNTAXES for uid, _ in qr_contexts()},
                                accept_any_abstract_syntax=True)
        async with Server(admission=policy, handlers=Handlers(find=on_find)) as server:
            host, port = await server.listen()
            contexts = [*qr_contexts(), (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])]
            async with connect(host, port, contexts=contexts) as assoc:
                query = assoc.find(_study())
                async for _ds in query:
                    gate.set()
                    break
                await asyncio.wait_for(query.aclose(), 10)
                return query.status, await asyncio.wait_for(assoc.echo(), 10)

    status, echo = run(main())
    assert status == Status.CANCEL
    assert echo == Status.SUCCESS


def _study() -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    return ds


@pytest.mark.parametrize("bad", [0, -1, 65536])
def test_a_window_out_of_range_is_refused(run: Any, bad: int) -> None:
    async def main() -> None:
        await open_association("127.0.0.1", 1, max_operations_invoked=bad)

    with pytest.raises(ConfigurationError, match="max_operations_invoked"):
        run(main())


# -- OperationsWindow on its own ----------------------------------------------------------


def test_window_is_first_come_first_served_and_bounded() -> None:
    async def main() -> tuple[list[int], int]:
        window = OperationsWindow(2)
        order: list[int] = []
        gates = [asyncio.Event() for _ in range(5)]

        async def one(n: int) -> None:
            async with window.place():
                order.append(n)
                await gates[n].wait()

        tasks = [asyncio.create_task(one(n)) for n in range(5)]
        for _ in range(3):
            await asyncio.sleep(0)
        assert order == [0, 1] and window.outstanding == 2
        for n in (1, 0, 2, 3, 4):
            gates[n].set()
        await asyncio.gather(*tasks)
        assert window.outstanding == 0
        return order, window.peak

    order, peak = asyncio.run(main())
    assert order == [0, 1, 2, 3, 4] and peak == 2


def test_a_cancelled_waiter_gives_its_place_on() -> None:
    async def main() -> list[str]:
        window = OperationsWindow(1)
        seen: list[str] = []

        async def later(name: str) -> None:
            async with window.place():
                seen.append(name)

        held = window.place()
        await held.__aenter__()
        b = asyncio.create_task(later("cancelled while waiting"))
        c = asyncio.create_task(later("handed over, then cancelled"))
        d = asyncio.create_task(later("last"))
        await asyncio.sleep(0)
        b.cancel()
        await held.__aexit__(None, None, None)  # hands the place to c (b is gone) ...
        c.cancel()  # ... which is cancelled before it runs: d must get it
        await asyncio.gather(b, c, return_exceptions=True)
        await asyncio.wait_for(d, 5)
        assert window.outstanding == 0 and b.cancelled() and c.cancelled()
        return seen

    assert asyncio.run(main()) == ["last"]


def test_a_task_holding_a_place_never_waits_for_itself() -> None:
    async def main() -> tuple[int, int]:
        window = OperationsWindow(1)
        async with window.place(), window.place():  # e.g. an echo inside a C-FIND loop
            nested = window.outstanding
        return nested, window.outstanding

    assert asyncio.run(main()) == (2, 0)


def test_a_window_has_a_place() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        OperationsWindow(0)
