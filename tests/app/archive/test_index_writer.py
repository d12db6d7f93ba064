"""Index updates in a writer thread (issue 16 item 9): the event loop never waits on SQLite,
nothing is answered before its file is in place, and queries see the stores answered before
them."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aiodicom.aio.client import connect
from aiodicom.app.archive import index_writer
from aiodicom.app.archive.index import Index
from aiodicom.app.archive.index_writer import IndexWriter
from aiodicom.app.archive.storage import Storage, StoredInstance
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.run import build_server
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS
from aiodicom.core.qr import qr_contexts
from aiodicom.settings import AssociationSettings, Timeouts
from tests.conftest import write_ct

from .test_index import index, pg_index_url, populate, storage  # noqa: F401 - fixtures

CT = "1.2.840.10008.5.1.4.1.1.2"


def test_updates_run_in_one_thread_batched_and_settle(
        storage: Storage, index: Index, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setattr(index_writer, "IDLE_EXIT", 0.05)
    stored = populate(storage)
    threads: list[str] = []
    batches: list[int] = []
    real = index.add_many

    def add_many(instances: list[StoredInstance]) -> None:
        threads.append(threading.current_thread().name)
        batches.append(len(instances))
        real(instances)

    monkeypatch.setattr(index, "add_many", add_many)
    writer = IndexWriter(index)
    for each in stored:
        writer.submit(each)
    writer.flush(timeout=10)
    assert index.count() == len(stored) == sum(batches)
    assert set(threads) == {"aiodicom-index-writer"}
    deadline = time.monotonic() + 5
    while writer._thread is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writer._thread is None  # idle: the thread ended; the next submit starts one
    writer.submit(stored[0])
    writer.flush(timeout=10)
    assert len(threads) == len(batches) >= 2


def test_instances_queued_within_the_linger_share_one_transaction(
        storage: Storage, index: Index, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    """Stores answered one at a time reach the writer one by one: those that follow the
    first within LINGER go into its transaction (one commit, one journal clear)."""
    monkeypatch.setattr(index_writer, "LINGER", 0.5)
    stored = populate(storage)[:3]
    batches: list[int] = []
    real = index.add_many

    def add_many(instances: list[StoredInstance]) -> None:
        batches.append(len(instances))
        real(instances)

    monkeypatch.setattr(index, "add_many", add_many)
    writer = IndexWriter(index)
    writer.submit(stored[0])
    deadline = time.monotonic() + 10
    while not writer._queue.empty() and time.monotonic() < deadline:
        time.sleep(0.001)  # the thread has taken the first one and lingers
    assert writer._queue.empty()
    for each in stored[1:]:
        writer.submit(each)
    writer.flush(timeout=10)
    assert batches == [3]
    assert index.count() == 3
    writer.close(timeout=10)


def test_a_failed_update_spoils_only_its_own_instance(
        storage: Storage, index: Index) -> None:  # noqa: F811
    stored = populate(storage)
    bad = dataclasses.replace(stored[0], sop_instance_uid="1.2.3.999",
                              path=storage.root / "gone.dcm",
                              outcome=type(stored[0].outcome).KEPT_EXISTING)
    failures: list[tuple[StoredInstance, BaseException]] = []
    writer = IndexWriter(index)
    block = threading.Event()
    writer._put(_blocker(block))  # queue everything behind one item: a single batch
    for each in (stored[0], bad, *stored[1:]):
        writer.submit(each, lambda s, exc: failures.append((s, exc)))
    block.set()
    writer.flush(timeout=10)
    assert [s.sop_instance_uid for s, _ in failures] == ["1.2.3.999"]
    assert index.count() == len(stored)


def _blocker(event: threading.Event) -> Any:
    class Blocker:  # a settle future whose completion waits for `event`
        def set_running_or_notify_cancel(self) -> bool:
            return event.wait(10)

        def set_result(self, _: None) -> None:
            pass

    return Blocker()


def test_a_held_index_lock_never_stalls_the_loop(tmp_path: Path, run: Any) -> None:
    """Another process holds the index's write lock (as a busy worker would): C-STORE is
    answered (the file is in place), C-ECHO goes on, the loop never stalls; once the lock is
    free the row lands, and a C-FIND sent after the C-STORE success sees it."""
    root = tmp_path / "store"
    options = ServeOptions(port=0, storage=root)
    source = write_ct(tmp_path / "ct.dcm", size=256)

    async def main() -> tuple[Status, list[Status], int, int, list[str]]:
        server, _ = build_server(options)
        late = 0
        probing = True

        async def probe() -> None:
            nonlocal late
            while probing:
                before = time.monotonic()
                await asyncio.sleep(0.005)
                late += time.monotonic() - before > 0.3

        prober = asyncio.create_task(probe())
        holder = sqlite3.connect(root / "index.sqlite", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, until COMMIT
        settings = AssociationSettings(timeouts=Timeouts(dimse=30))
        async with server:
            host, port = await server.listen()
            contexts = [(CT, ["1.2.840.10008.1.2.1"]),
                        (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]), *qr_contexts()]
            async with connect(host, port, contexts=contexts, settings=settings) as assoc:
                stored = await assoc.send_store(source)
                echoes = [await assoc.echo() for _ in range(5)]
                await asyncio.sleep(0.5)  # the writer waits on the lock meanwhile
                rows = holder.execute("SELECT count(*) FROM instance").fetchone()[0]
                holder.execute("COMMIT")
                query = Dataset()
                query.QueryRetrieveLevel = "IMAGE"
                query.StudyInstanceUID = "1.2.3.4.5"
                query.SeriesInstanceUID = "1.2.3.4.5.6"
                query.SOPInstanceUID = ""
                found = [str(ds.SOPInstanceUID) async for ds in assoc.find(query)]
        probing = False
        await prober
        holder.close()
        return stored, echoes, rows, late, found

    stored, echoes, rows_while_locked, late, found = run(main())
    assert stored == Status.SUCCESS
    assert echoes == [Status.SUCCESS] * 5
    assert rows_while_locked == 0  # answered before indexed: the write was still waiting
    assert late == 0
    assert len(found) == 1
