"""C-GET and C-MOVE stream their matches (issue 16 item 9, review): the Number of
Remaining Sub-operations comes from a count, each match is fetched (staged, for an object
store) just before its C-STORE and removed after it, and a C-MOVE whose destination is
down fetches nothing. Staged copies are counted, not timed: at most a couple exist at any
time, however many instances the retrieve names."""

from __future__ import annotations

import asyncio
import shutil
import weakref
from collections.abc import AsyncIterator
from pathlib import Path, PosixPath
from typing import Any

from pydicom.dataset import Dataset

from aiodicom.aio.client import RemoteAE, connect
from aiodicom.aio.qr_service import RetrievePlan
from aiodicom.aio.requests import MoveRequest, StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.app.archive.qr import QueryRetrieve
from aiodicom.core.dimse import CMoveRQ, Status
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    AcceptorPolicy,
    RoleSupport,
)
from aiodicom.core.qr import MODELS, qr_contexts, retrieve_contexts
from tests.app.archive.test_move_loop_stalls import TEMPLATE, archive
from tests.app.archive.test_qr import INFO
from tests.conftest import make_runner

INSTANCES = 60
CT = "1.2.840.10008.5.1.4.1.1.2"
sync = make_runner("asyncio")


class _Staged(PosixPath):
    """A staged copy: removed when the last reference goes (as object_reads does)."""


class Stager:
    """A fetch for QueryRetrieve that copies the stored file to a staging folder and
    counts the copies that exist at once."""

    def __init__(self, root: Path, staging: Path) -> None:
        self.root, self.staging = root, staging
        staging.mkdir()
        self.fetched = self.live = self.most = 0

    def _gone(self, path: str) -> None:
        Path(path).unlink()
        self.live -= 1

    async def __call__(self, key: str) -> Path:
        self.fetched += 1
        target = self.staging / f"{self.fetched}.dcm"
        await asyncio.to_thread(shutil.copyfile, self.root / key, target)
        self.live += 1
        self.most = max(self.most, self.live)
        staged = _Staged(target)
        weakref.finalize(staged, self._gone, str(target))
        return staged

    def on_disk(self) -> int:
        return sum(1 for _ in self.staging.iterdir())


def _policy() -> AcceptorPolicy:
    syntaxes = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
    return AcceptorPolicy(abstract_syntaxes={uid: syntaxes for uid, _ in qr_contexts()},
                          accept_any_abstract_syntax=True,
                          role_selection={CT: RoleSupport(requestor_scp=True)})


def _study() -> Dataset:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = "1.2.3.4.5"
    return query


def _setup(tmp_path: Path) -> tuple[Stager, QueryRetrieve, Any]:
    root = tmp_path / "store"
    index = archive(root, INSTANCES)
    stager = Stager(root, tmp_path / "staging")
    return stager, QueryRetrieve(root, index, fetch=stager), index


def test_move_stages_one_instance_at_a_time(tmp_path: Path) -> None:
    stager, qr, index = _setup(tmp_path)
    seen: list[int] = []  # staged copies on disk while the destination stores each one

    async def main() -> Any:
        async def on_store(request: StoreRequest) -> Status:
            await request.dataset()
            seen.append(stager.on_disk())
            return Status.SUCCESS

        async with Server(admission=AcceptorPolicy(accept_any_abstract_syntax=True),
                          handlers=Handlers(store=on_store)) as dest:
            dest_host, dest_port = await dest.listen()
            async with Server(admission=_policy(), handlers=Handlers(move=qr.move),
                              move_destinations={"DEST": RemoteAE(dest_host, dest_port)},
                              ) as server:
                host, port = await server.listen()
                async with connect(host, port, contexts=qr_contexts()) as assoc:
                    return await assoc.move(_study(), "DEST")

    result = sync(main())
    index.close()
    assert result.status == Status.SUCCESS, result
    assert result.completed == len(seen) == stager.fetched == INSTANCES
    assert stager.most <= 2, f"{stager.most} staged copies at once for {INSTANCES}"
    assert max(seen) <= 2, seen
    assert stager.on_disk() == 0 and stager.live == 0  # each removed once sent


def test_get_stages_one_instance_at_a_time(tmp_path: Path) -> None:
    stager, qr, index = _setup(tmp_path)
    seen: list[int] = []

    async def main() -> Any:
        async def on_store(request: StoreRequest) -> Status:
            await request.dataset()
            seen.append(stager.on_disk())
            return Status.SUCCESS

        contexts, roles = retrieve_contexts([CT])
        async with Server(admission=_policy(), handlers=Handlers(get=qr.get)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=contexts, role_selections=roles) as assoc:
                return await assoc.get(_study(), on_store=on_store)

    result = sync(main())
    index.close()
    assert result.status == Status.SUCCESS, result
    assert result.completed == len(seen) == INSTANCES
    assert stager.most <= 2 and max(seen) <= 2, (stager.most, seen)
    assert stager.on_disk() == 0


def test_move_to_a_down_destination_stages_nothing(tmp_path: Path) -> None:
    stager, qr, index = _setup(tmp_path)

    async def main() -> Any:
        closed = Server(admission=AcceptorPolicy(accept_any_abstract_syntax=True))
        dead_host, dead_port = await closed.listen()
        await closed.close()
        async with Server(admission=_policy(), handlers=Handlers(move=qr.move),
                          move_destinations={"DEST": RemoteAE(dead_host, dead_port)},
                          ) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                return await assoc.move(_study(), "DEST")

    result = sync(main())
    index.close()
    assert result.status == 0xA702 and result.failed == INSTANCES, result
    expected = {f"{TEMPLATE[:-6]}{100000 + n}" for n in range(INSTANCES)}
    assert set(result.failed_sop_instances) == expected  # read from the index
    assert stager.fetched == 0 and stager.on_disk() == 0


def test_the_count_comes_before_any_file(tmp_path: Path) -> None:
    """The handler yields the plan (count and stored SOP classes/transfer syntaxes) first,
    and fetches a file only when the next one is asked for."""
    stager, qr, index = _setup(tmp_path)

    request = MoveRequest(association=INFO, context_id=1, identifier=_study(),
                          command=CMoveRQ(message_id=1, move_destination="DEST",
                                          affected_sop_class_uid=MODELS["study"].move))

    async def main() -> tuple[Any, int, Any, int]:
        items: AsyncIterator[Any] = qr.move(request)
        plan = await anext(items)
        before = stager.fetched
        first = await anext(items)
        await items.aclose()  # type: ignore[attr-defined]
        return plan, before, first, stager.fetched

    plan, before, first, after = sync(main())
    index.close()
    assert isinstance(plan, RetrievePlan) and plan.total == INSTANCES
    assert dict(plan.contexts) == {CT: [EXPLICIT_VR_LITTLE_ENDIAN]}
    assert (before, after) == (0, 1) and isinstance(first, _Staged)
