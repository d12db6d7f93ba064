"""Network faults between a real client and a real server, through `tests.faultproxy`.

Each test puts a `FaultProxy` between `aiodicom.connect` and an in-process `Server` that
stores to disk, injects one fault (drop, reset, truncate or stall mid data set, a stalled
answer, delays) and checks the outcome: a typed aiodicom error within a bound, no partial
file and an empty ``.incoming``, a server that still answers, and no fd or task left over.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.client import ClientAssociation, connect, storage_contexts_for
from aiodicom.core.dimse import Status
from aiodicom.core.part10 import read_part10_info
from aiodicom.errors import (
    AcseTimeout,
    AssociationAborted,
    ConnectError,
    DicomError,
    DimseTimeout,
    TransportError,
)
from aiodicom.settings import AssociationSettings, Timeouts
from tests.conftest import write_ct
from tests.faultproxy import Direction, Fault, FaultProxy, Plan
from tests.hostile.conftest import Harness, harness, task_count

BOUND = 10.0
"""No client call in these tests may take longer (the faults' own timeouts are ~1 s)."""


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fault-files")
    return {
        "1mb": write_ct(folder / "1mb.dcm", size=1 << 20),
        "5mb": write_ct(folder / "5mb.dcm", size=5 << 20),
    }


def open_fds() -> dict[str, str]:
    """fd -> what it points to; uvloop opens /dev/null once, lazily: not a leak."""
    out: dict[str, str] = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target != "/dev/null":
                out[fd] = target
    return out


@dataclass
class Snapshot:
    """Open fds and tasks at the start of a test, checked again once everything closed."""

    fds: dict[str, str]
    tasks: int

    @classmethod
    def take(cls) -> Snapshot:
        return cls(fds=open_fds(), tasks=task_count())

    def new_fds(self) -> dict[str, str]:
        return {fd: t for fd, t in open_fds().items() if self.fds.get(fd) != t}

    async def check(self, limit: float = 3.0) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while (self.new_fds() or task_count() > self.tasks) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        leaked = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert self.new_fds() == {}, f"fds leaked: {self.new_fds()}"
        assert task_count() <= self.tasks, f"tasks leaked: {leaked}"


@contextlib.asynccontextmanager
async def rig(root: Path, plan: Plan, *, server_timeouts: Timeouts | None = None
              ) -> AsyncIterator[tuple[Harness, FaultProxy]]:
    """A storing server behind a fault proxy; leaks checked after both are closed."""
    snap = Snapshot.take()
    timeouts = server_timeouts or Timeouts(artim=0.5)
    async with harness(root, timeouts=timeouts) as h, FaultProxy(h.host, h.port,
                                                                 plan=plan) as proxy:
        yield h, proxy
    await snap.check()


def client_settings(**timeouts: float) -> AssociationSettings:
    return AssociationSettings(ae_title="FAULTY", timeouts=Timeouts(**timeouts))


async def store_through(proxy: FaultProxy, path: Path, settings: AssociationSettings) -> Status:
    async with connect(proxy.host, proxy.port, contexts=storage_contexts_for([path]),
                       settings=settings) as assoc:
        return await assoc.store(path)


def assert_nothing_stored(h: Harness, path: Path) -> None:
    sop = read_part10_info(path).sop_instance_uid
    assert [p for p in h.stored() if p.stem == sop] == []
    assert h.incoming() == []


@pytest.mark.parametrize("fault", [Fault.drop, Fault.reset, Fault.truncate],
                         ids=["drop", "reset", "truncate"])
def test_client_to_server_cut_mid_dataset(run: Any, tmp_path: Path, files: dict[str, Path],
                                          fault: Any) -> None:
    """The connection is cut 300 KB into a 1 MB data set (mid PDU: the server's PDUs are
    16 KiB): the client gets AssociationAborted, the server keeps nothing and still works."""
    path = files["1mb"]

    async def main() -> tuple[DicomError, list[str]]:
        async with rig(tmp_path, Plan(c2s=fault(after=300_000 + 7))) as (h, proxy):
            with pytest.raises(DicomError) as caught:
                await asyncio.wait_for(store_through(proxy, path, client_settings()), BOUND)
            conn = await proxy.wait_connection(0)
            assert conn.fired.is_set()
            await h.settle()
            assert_nothing_stored(h, path)
            await h.echo_ok()
            return caught.value, [str(r) for r in h.results]

    exc, results = run(main())
    # Measured: a cut connection is an A-P-ABORT for the requestor (PS3.8 §7.4), whether it
    # ended by FIN or RST; never a bare OSError or TimeoutError.
    assert isinstance(exc, AssociationAborted), repr(exc)
    assert str(exc)
    assert results == []  # the handler never reported success (nor a storage failure)


def test_server_to_client_stall_gives_dimse_timeout(run: Any, tmp_path: Path) -> None:
    """The server's answers stop coming after the A-ASSOCIATE-AC: the client's DIMSE timeout
    fires, the association is aborted and the client keeps no task."""

    async def main() -> tuple[float, ClientAssociation | None]:
        loop = asyncio.get_running_loop()
        async with rig(tmp_path, Plan()) as (h, proxy):
            client_tasks = task_count()  # before the proxy has a connection
            held: ClientAssociation | None = None
            started = loop.time()
            with pytest.raises(DimseTimeout, match="no response"):
                async with connect(proxy.host, proxy.port,
                                   settings=client_settings(dimse=1, artim=1)) as assoc:
                    held = assoc
                    conn = await proxy.wait_connection(0)
                    conn.apply(Direction.S2C, Fault.stall())
                    await asyncio.wait_for(assoc.echo(), BOUND)
            elapsed = loop.time() - started
            assert held is not None and not held.is_established
            assert isinstance(held.abort_reason, AssociationAborted)
            await h.settle()  # the A-ABORT went through: the server let go too
            # After its A-ABORT the client waits ARTIM for the server to close (PS3.8 AA-1,
            # Sta13), which the stall hides from it; then it closes, and the proxy ends.
            await asyncio.wait_for(conn.done.wait(), BOUND)
            assert task_count() <= client_tasks
            await h.echo_ok()
        return elapsed, held

    elapsed, _ = run(main())
    assert 0.9 <= elapsed < 5, elapsed


def test_client_to_server_stall_mid_dataset_server_watchdog(
        run: Any, tmp_path: Path, files: dict[str, Path]) -> None:
    """The client's bytes stop 300 KB into the data set but the connection stays open: the
    server's watchdog (`Timeouts.dimse` while a data set arrives) aborts within the bound."""
    path = files["1mb"]

    async def main() -> tuple[DicomError, float]:
        loop = asyncio.get_running_loop()
        server_timeouts = Timeouts(artim=0.5, dimse=0.5)
        async with rig(tmp_path, Plan(c2s=Fault.stall(after=300_001)),
                       server_timeouts=server_timeouts) as (h, proxy):
            started = loop.time()
            with pytest.raises(DicomError) as caught:
                await asyncio.wait_for(store_through(proxy, path, client_settings()), BOUND)
            elapsed = loop.time() - started
            await h.settle()
            assert h.server.stats.aborted >= 1
            assert_nothing_stored(h, path)
            await h.echo_ok()
            return caught.value, elapsed

    exc, elapsed = run(main())
    assert isinstance(exc, AssociationAborted), repr(exc)
    assert elapsed < 5, elapsed


def test_stall_of_associate_ac_gives_acse_timeout(run: Any, tmp_path: Path) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        async with rig(tmp_path, Plan(s2c=Fault.stall())) as (h, proxy):
            started = loop.time()
            with pytest.raises(AcseTimeout, match="A-ASSOCIATE-RQ"):
                await asyncio.wait_for(
                    connect(proxy.host, proxy.port, settings=client_settings(acse=1))
                    .__aenter__(), BOUND)
            elapsed = loop.time() - started
            await h.settle()
            await h.echo_ok()
        return elapsed

    elapsed = run(main())
    assert 0.9 <= elapsed < 5, elapsed


def test_immediate_reset_is_a_connect_error(run: Any, tmp_path: Path) -> None:
    async def main() -> TransportError:
        async with rig(tmp_path, Plan(c2s=Fault.reset())) as (h, proxy):
            with pytest.raises(TransportError) as caught:
                await asyncio.wait_for(
                    connect(proxy.host, proxy.port, settings=client_settings()).__aenter__(),
                    BOUND)
            assert h.server.stats.accepted == 0
            return caught.value

    exc = run(main())
    assert isinstance(exc, ConnectError), repr(exc)
    assert "reset" in str(exc), str(exc)


def test_delays_both_ways_slow_but_correct(run: Any, tmp_path: Path,
                                          files: dict[str, Path]) -> None:
    """5 ms before every chunk in both directions: a 5 MB store and echoes all succeed."""
    path = files["5mb"]
    delayed = Fault.delayed(0.005)

    async def main() -> tuple[list[Status], list[Path]]:
        async with rig(tmp_path, Plan(c2s=delayed, s2c=delayed)) as (h, proxy):
            statuses: list[Status] = []

            async def work() -> None:
                async with connect(proxy.host, proxy.port,
                                   contexts=storage_contexts_for([path]),
                                   settings=client_settings()) as assoc:
                    statuses.append(await assoc.echo())
                    statuses.append(await assoc.store(path))
                    statuses.extend([await assoc.echo() for _ in range(3)])

            await asyncio.wait_for(work(), 30)
            await h.settle()
            assert h.incoming() == []
            return statuses, h.stored()

    statuses, stored = run(main())
    assert statuses == [Status.SUCCESS] * 5
    sop = read_part10_info(path).sop_instance_uid
    assert [p.name for p in stored] == [f"{sop}.dcm"]
    assert stored[0].stat().st_size > 5 << 20
