"""C-FIND, C-GET and C-MOVE between our client and an in-process Server with handlers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aiodicom.aio.client import RemoteAE, connect
from aiodicom.aio.qr_service import RetrievePlan
from aiodicom.aio.requests import FindRequest, GetRequest, MoveRequest, StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    AcceptorPolicy,
    RoleSupport,
)
from aiodicom.core.qr import MODELS, qr_contexts, retrieve_contexts
from aiodicom.errors import NoPresentationContext
from tests.conftest import write_ct

CT = "1.2.840.10008.5.1.4.1.1.2"
SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)


def _policy() -> AcceptorPolicy:
    return AcceptorPolicy(
        abstract_syntaxes={uid: SYNTAXES for uid, _ in qr_contexts()},
        accept_any_abstract_syntax=True,
        role_selection={CT: RoleSupport(requestor_scp=True)},
    )


def _query(**keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    for key, value in keys.items():
        setattr(ds, key, value)
    return ds


def _match(n: int) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = f"1.2.3.{n}"
    ds.PatientName = f"Doe^{n}"
    return ds


def test_find_yields_pendings_then_success(run: Any) -> None:
    seen: list[FindRequest] = []

    async def on_find(request: FindRequest) -> AsyncIterator[Any]:
        seen.append(request)
        for n in range(3):
            yield _match(n)
        yield Status.PENDING, _match(3)

    async def main() -> tuple[list[str], Status | None]:
        async with Server(admission=_policy(), handlers=Handlers(find=on_find)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                query = assoc.find(_query(PatientName="Doe*", StudyInstanceUID=""))
                uids = [str(ds.StudyInstanceUID) async for ds in query]
                return uids, query.status

    uids, status = run(main())
    assert uids == ["1.2.3.0", "1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert status == Status.SUCCESS
    assert seen[0].model == "study" and seen[0].level == "STUDY"
    assert str(seen[0].identifier.PatientName) == "Doe*"


def test_find_patient_root_and_failure_status(run: Any) -> None:
    async def on_find(request: FindRequest) -> AsyncIterator[Any]:
        assert request.model == "patient"
        yield _match(1)
        yield Status(0xA700), None

    async def main() -> tuple[int, Status | None]:
        async with Server(admission=_policy(), handlers=Handlers(find=on_find)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                query = assoc.find(_query(), model="patient")
                found = [ds async for ds in query]
                return len(found), query.status

    assert run(main()) == (1, Status(0xA700))


def test_find_cancel_stops_the_handler(run: Any) -> None:
    async def main() -> tuple[list[str], Status | None, bool, Status]:
        stopped: list[bool] = []
        never = asyncio.Event()

        async def on_find(request: FindRequest) -> AsyncIterator[Any]:
            try:
                yield _match(0)
                await never.wait()  # only C-CANCEL ends this
                yield _match(1)
            finally:
                stopped.append(True)

        contexts = [*qr_contexts(), ("1.2.840.10008.1.1", [IMPLICIT_VR_LITTLE_ENDIAN])]
        async with Server(admission=_policy(), handlers=Handlers(find=on_find)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=contexts) as assoc:
                async with assoc.find(_query()) as query:
                    got = [str((await query.__anext__()).StudyInstanceUID)]
                echo = await assoc.echo()  # the association still works after the cancel
                return got, query.status, bool(stopped), echo

    got, status, stopped, echo = run(main())
    assert got == ["1.2.3.0"]
    assert status == Status.CANCEL
    assert stopped
    assert echo == Status.SUCCESS


def test_find_handler_exception_is_a_failure_status(run: Any, caplog: Any) -> None:
    async def on_find(request: FindRequest) -> AsyncIterator[Any]:
        yield _match(0)
        raise RuntimeError("index on fire")

    async def main() -> tuple[int, Status | None]:
        async with Server(admission=_policy(), handlers=Handlers(find=on_find)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                query = assoc.find(_query())
                n = len([ds async for ds in query])
                return n, query.status

    n, status = run(main())
    assert n == 1
    assert status is not None and status == 0xC000
    assert "index on fire" in caplog.text


def test_find_without_handler_is_refused(run: Any) -> None:
    async def main() -> Status | None:
        async with Server(admission=_policy()) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                query = assoc.find(_query())
                assert [ds async for ds in query] == []
                return query.status

    assert run(main()) == Status.SOP_CLASS_NOT_SUPPORTED


def test_find_needs_a_context(run: Any) -> None:
    async def main() -> None:
        async with Server(admission=_policy()) as server:
            host, port = await server.listen()
            async with connect(host, port) as assoc:
                async for _ in assoc.find(_query()):
                    pass

    try:
        run(main())
    except NoPresentationContext as exc:
        assert MODELS["study"].find in str(exc) or "Study Root" in str(exc)
    else:
        raise AssertionError("find without a Q/R context must fail")


def _files(tmp_path: Path, n: int) -> list[Path]:
    return [write_ct(tmp_path / f"ct{i}.dcm", size=2048 + 2 * i) for i in range(n)]


def test_get_sends_suboperations_on_the_same_association(run: Any, tmp_path: Path) -> None:
    files = _files(tmp_path, 3)
    requests: list[GetRequest] = []

    async def on_get(request: GetRequest) -> AsyncIterator[Any]:
        requests.append(request)
        for path in files[:2]:
            yield path
        import pydicom

        yield pydicom.dcmread(files[2])  # a Dataset works too

    async def main() -> tuple[Any, list[str]]:
        received: list[str] = []

        async def on_store(request: StoreRequest) -> Status:
            ds = await request.dataset()
            received.append(str(ds.SOPInstanceUID))
            return Status.SUCCESS

        contexts, roles = retrieve_contexts([CT])
        async with Server(admission=_policy(), handlers=Handlers(get=on_get)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=contexts, role_selections=roles) as assoc:
                result = await assoc.get(_query(StudyInstanceUID="1.2.3.4.5"), on_store=on_store)
        return result, received

    result, received = run(main())
    assert result.status == Status.SUCCESS
    assert (result.completed, result.failed, result.warning) == (3, 0, 0)
    import pydicom

    assert received == [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    assert requests[0].level == "STUDY"


def test_get_counts_failures(run: Any, tmp_path: Path) -> None:
    files = _files(tmp_path, 3)

    async def on_get(request: GetRequest) -> AsyncIterator[Any]:
        for path in files:
            yield path
        yield tmp_path / "missing.dcm"

    async def main() -> Any:
        calls = 0

        async def on_store(request: StoreRequest) -> Status:
            nonlocal calls
            calls += 1
            return Status(0xA700) if calls == 2 else Status.SUCCESS

        contexts, roles = retrieve_contexts([CT])
        async with Server(admission=_policy(), handlers=Handlers(get=on_get)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=contexts, role_selections=roles) as assoc:
                return await assoc.get(_query(), on_store=on_store)

    result = run(main())
    assert result.status == 0xB000
    assert (result.completed, result.failed, result.warning) == (2, 2, 0)
    assert len(result.failed_sop_instances) == 1  # the missing file has no UID to report


def test_get_without_scp_role_fails_every_suboperation(run: Any, tmp_path: Path) -> None:
    files = _files(tmp_path, 2)

    async def on_get(request: GetRequest) -> AsyncIterator[Any]:
        for path in files:
            yield path

    async def main() -> Any:
        async with Server(admission=_policy(), handlers=Handlers(get=on_get)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                return await assoc.get(_query())

    result = run(main())
    assert result.status == 0xA702
    assert result.failed == 2 and result.completed == 0


def _storage_server(received: list[StoreRequest]) -> Server:
    async def on_store(request: StoreRequest) -> Status:
        await request.dataset()
        received.append(request)
        return Status.SUCCESS

    return Server(
        admission=AcceptorPolicy(accept_any_abstract_syntax=True),
        handlers=Handlers(store=on_store),
    )


def test_move_stores_on_the_destination(run: Any, tmp_path: Path) -> None:
    files = _files(tmp_path, 2)

    async def on_move(request: MoveRequest) -> AsyncIterator[Any]:
        assert request.destination == "DEST"
        for path in files:
            yield path

    async def main() -> tuple[Any, list[StoreRequest]]:
        received: list[StoreRequest] = []
        async with _storage_server(received) as dest:
            dest_host, dest_port = await dest.listen()
            async with Server(
                admission=_policy(),
                handlers=Handlers(move=on_move),
                move_destinations={"DEST": RemoteAE(dest_host, dest_port)},
            ) as server:
                host, port = await server.listen()
                async with connect(host, port, contexts=qr_contexts()) as assoc:
                    result = await assoc.move(_query(), "DEST")
        return result, received

    result, received = run(main())
    assert result.status == Status.SUCCESS and result.completed == 2
    assert len(received) == 2
    command = received[0].command
    assert command.move_originator_ae_title == "AIODICOM"
    assert command.move_originator_message_id is not None
    assert received[0].association.called_ae_title == "DEST"


def test_move_to_unknown_destination(run: Any) -> None:
    called: list[bool] = []

    async def on_move(request: MoveRequest) -> AsyncIterator[Any]:
        called.append(True)
        yield Status.SUCCESS

    async def main() -> Any:
        async with Server(admission=_policy(), handlers=Handlers(move=on_move)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                return await assoc.move(_query(), "NOWHERE")

    result = run(main())
    assert result.status == Status.MOVE_DESTINATION_UNKNOWN == 0xA801
    assert not called


def test_move_destination_down(run: Any, tmp_path: Path) -> None:
    files = _files(tmp_path, 2)

    async def on_move(request: MoveRequest) -> AsyncIterator[Any]:
        for path in files:
            yield path

    async def main() -> Any:
        closed = Server(admission=AcceptorPolicy(accept_any_abstract_syntax=True))
        dead_host, dead_port = await closed.listen()
        await closed.close()
        async with Server(
            admission=_policy(),
            handlers=Handlers(move=on_move),
            move_destinations={"DEST": RemoteAE(dead_host, dead_port)},
        ) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                return await assoc.move(_query(), "DEST")

    result = run(main())
    assert result.status == 0xA702 and result.failed == 2


def test_concurrent_gets_each_reach_their_own_handler(run: Any, tmp_path: Path) -> None:
    """A C-STORE sub-operation does not say which C-GET it serves: two C-GETs started
    together on one association must still deliver each instance to its own caller's
    handler (they run one at a time), never to the other's."""
    studies = {
        "1.2.3.1": [write_ct(tmp_path / f"a{i}.dcm", study_uid="1.2.3.1") for i in range(3)],
        "1.2.3.2": [write_ct(tmp_path / f"b{i}.dcm", study_uid="1.2.3.2") for i in range(3)],
    }

    async def on_get(request: GetRequest) -> AsyncIterator[Any]:
        for path in studies[str(request.identifier.StudyInstanceUID)]:
            await asyncio.sleep(0)
            yield path

    async def main() -> dict[str, list[str]]:
        got: dict[str, list[str]] = {uid: [] for uid in studies}

        def handler_for(uid: str) -> Any:
            async def on_store(request: StoreRequest) -> Status:
                ds = await request.dataset()
                got[uid].append(str(ds.StudyInstanceUID))
                return Status.SUCCESS
            return on_store

        contexts, roles = retrieve_contexts([CT])
        async with Server(admission=_policy(), handlers=Handlers(get=on_get)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=contexts, role_selections=roles) as assoc:
                results = await asyncio.gather(*(
                    assoc.get(_query(StudyInstanceUID=uid), on_store=handler_for(uid))
                    for uid in studies))
        assert all(r.status == Status.SUCCESS and r.completed == 3 for r in results)
        return got

    got = run(main())
    assert got == {uid: [uid] * 3 for uid in studies}


def test_a_cancelled_get_never_feeds_the_next_gets_handler(run: Any, tmp_path: Path) -> None:
    """A caller gives up on a C-GET (wait_for times out): its C-GET is cancelled on the wire,
    and the sub-operations still in flight are refused, not handed to the next C-GET's
    handler (they would deliver another study's instances to the wrong caller)."""
    studies = {uid: [write_ct(tmp_path / f"{uid}-{i}.dcm", study_uid=uid) for i in range(6)]
               for uid in ("1.2.3.1", "1.2.3.2")}

    async def on_get(request: GetRequest) -> AsyncIterator[Any]:
        for path in studies[str(request.identifier.StudyInstanceUID)]:
            yield path

    async def main() -> tuple[list[str], Any]:
        got_b: list[str] = []

        async def slow_a(request: StoreRequest) -> Status:
            await request.dataset()
            await asyncio.sleep(0.1)
            return Status.SUCCESS

        async def on_store_b(request: StoreRequest) -> Status:
            got_b.append(str((await request.dataset()).StudyInstanceUID))
            return Status.SUCCESS

        contexts, roles = retrieve_contexts([CT])
        async with Server(admission=_policy(), handlers=Handlers(get=on_get)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=contexts, role_selections=roles) as assoc:
                try:
                    await asyncio.wait_for(
                        assoc.get(_query(StudyInstanceUID="1.2.3.1"), on_store=slow_a), 0.25)
                except TimeoutError:
                    pass
                result = await assoc.get(_query(StudyInstanceUID="1.2.3.2"),
                                         on_store=on_store_b)
        return got_b, result

    got_b, result = run(main())
    assert result.status == Status.SUCCESS and result.completed == 6
    assert got_b == ["1.2.3.2"] * 6


# -- a handler that gives a RetrievePlan first is streamed (issue 16 item 9, review) --------

def _planned_get(run: Any, on_get: Any) -> tuple[Any, list[str]]:
    events: list[str] = []

    async def main() -> Any:
        async def on_store(request: StoreRequest) -> Status:
            await request.dataset()
            events.append("store")
            return Status.SUCCESS

        contexts, roles = retrieve_contexts([CT])
        async with Server(admission=_policy(), handlers=Handlers(get=on_get(events))) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=contexts, role_selections=roles) as assoc:
                return await assoc.get(_query(), on_store=on_store)

    return run(main()), events


def test_a_planned_get_asks_for_each_item_after_the_previous_was_sent(
        run: Any, tmp_path: Path) -> None:
    files = _files(tmp_path, 3)

    def on_get(events: list[str]) -> Any:
        async def handler(request: GetRequest) -> AsyncIterator[Any]:
            yield RetrievePlan(len(files), {CT: [EXPLICIT_VR_LITTLE_ENDIAN]})
            for path in files:
                events.append("fetch")
                yield path
        return handler

    result, events = _planned_get(run, on_get)
    assert result.status == Status.SUCCESS and result.completed == 3
    assert events == ["fetch", "store"] * 3


@pytest.mark.parametrize("planned", [1, 3, 5])  # the index changed since the count
def test_a_planned_get_sends_what_follows_whatever_the_count(
        run: Any, tmp_path: Path, planned: int) -> None:
    files = _files(tmp_path, 3)

    def on_get(events: list[str]) -> Any:
        async def handler(request: GetRequest) -> AsyncIterator[Any]:
            yield RetrievePlan(planned, {CT: [EXPLICIT_VR_LITTLE_ENDIAN]})
            for path in files:
                yield path
        return handler

    result, events = _planned_get(run, on_get)
    assert result.status == Status.SUCCESS
    assert (result.completed, result.failed, result.remaining) == (3, 0, 0)


def test_a_planned_get_that_fails_part_way_keeps_its_counts(run: Any, tmp_path: Path) -> None:
    files = _files(tmp_path, 2)

    def on_get(events: list[str]) -> Any:
        async def handler(request: GetRequest) -> AsyncIterator[Any]:
            yield RetrievePlan(4, {CT: [EXPLICIT_VR_LITTLE_ENDIAN]})
            for path in files:
                yield path
            yield Status.CANNOT_UNDERSTAND  # e.g. the index server went down
        return handler

    result, events = _planned_get(run, on_get)
    assert result.status == Status.CANNOT_UNDERSTAND
    assert result.completed == 2 and events == ["store", "store"]


def test_a_planned_move_to_a_down_destination_lists_the_plan_s_uids(
        run: Any, tmp_path: Path) -> None:
    pulled: list[Any] = []

    async def uids() -> AsyncIterator[str]:
        for n in range(3):
            yield f"1.2.3.{n}"

    async def on_move(request: MoveRequest) -> AsyncIterator[Any]:
        yield RetrievePlan(3, {CT: [EXPLICIT_VR_LITTLE_ENDIAN]}, uids)
        for path in _files(tmp_path, 3):
            pulled.append(path)
            yield path

    async def main() -> Any:
        closed = Server(admission=AcceptorPolicy(accept_any_abstract_syntax=True))
        dead_host, dead_port = await closed.listen()
        await closed.close()
        async with Server(admission=_policy(), handlers=Handlers(move=on_move),
                          move_destinations={"DEST": RemoteAE(dead_host, dead_port)},
                          ) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=qr_contexts()) as assoc:
                return await assoc.move(_query(), "DEST")

    result = run(main())
    assert result.status == 0xA702 and result.failed == 3
    assert result.failed_sop_instances == ("1.2.3.0", "1.2.3.1", "1.2.3.2")
    assert pulled == []  # nothing asked for (or staged) once the destination was down
