"""aio.events: `RequestCompleted` is built only for an observer that wants it (issue 18).

A plain callable sees every event; an observer with a false ``wants_requests`` sees the
association events and no request event; the choice is re-read when the observer is
replaced; `FanOut` gives requests only to its members that want them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.events import (
    AssociationAccepted,
    AssociationEnded,
    FanOut,
    RequestCompleted,
    ServerEvent,
    wants_requests,
)
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Admission, Handlers, Server
from aiodicom.core.dimse import Message, Status
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)
from tests.conftest import write_ct

CT = "1.2.840.10008.5.1.4.1.1.2"


def _policy() -> AcceptorPolicy:
    return AcceptorPolicy(
        ae_title="STRICT",
        abstract_syntaxes={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,),
                           CT: (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)},
    )


class Declining:
    """An observer that wants no request events."""

    wants_requests = False

    def __init__(self) -> None:
        self.events: list[ServerEvent] = []

    def __call__(self, event: ServerEvent) -> None:
        self.events.append(event)


async def _store(request: StoreRequest) -> Status:
    async for _ in request.fragments():
        pass
    return Status.SUCCESS


def _refuse_second_store(seen: list[str]) -> Any:
    def check(info: AssociationInfo, msg: Message) -> Status | None:
        uid = getattr(msg, "affected_sop_instance_uid", None)
        if uid is None:
            return None
        seen.append(uid)
        return Status.NOT_AUTHORIZED if len(seen) == 2 else None
    return check


async def _traffic(server: Server, files: list[Path], echoes: int) -> list[Status]:
    host, port = await server.listen()
    async with connect(host, port, called_ae_title="STRICT",
                       contexts=storage_contexts_for(files)) as assoc:
        statuses = [await assoc.echo() for _ in range(echoes)]
        statuses += [await assoc.store(path) for path in files]
    await server.close()
    return statuses


def test_plain_callable_sees_every_request(run: Any, tmp_path: Path) -> None:
    """Echoes (answered inline), stores (in tasks) and a refused store: one event each."""
    files = [write_ct(tmp_path / f"{i}.dcm", size=200) for i in range(3)]
    events: list[ServerEvent] = []
    seen: list[str] = []

    async def main() -> list[Status]:
        server = Server(admission=Admission(policy=_policy(),
                                            request_filter=_refuse_second_store(seen)),
                        handlers=Handlers(store=_store), observer=events.append)
        assert server.wants_requests
        return await _traffic(server, files, echoes=4)

    statuses = run(main())
    assert statuses == [Status.SUCCESS] * 5 + [Status.NOT_AUTHORIZED, Status.SUCCESS]
    requests = [e for e in events if isinstance(e, RequestCompleted)]
    assert [(r.service, r.status) for r in requests] == (
        [("C-ECHO", 0)] * 4 + [("C-STORE", 0), ("C-STORE", int(Status.NOT_AUTHORIZED)),
                               ("C-STORE", 0)])
    assert [r.sop_instance_uid for r in requests[4:]] == seen
    assert all(r.bytes > 200 for r in requests[4:])


def test_declining_observer_gets_association_events_only(run: Any, tmp_path: Path) -> None:
    files = [write_ct(tmp_path / "a.dcm", size=200)]
    observer = Declining()
    seen: list[str] = []

    async def main() -> list[Status]:
        server = Server(admission=Admission(policy=_policy(),
                                            request_filter=_refuse_second_store(seen)),
                        handlers=Handlers(store=_store), observer=observer)
        assert not server.wants_requests
        return await _traffic(server, files, echoes=3)

    assert run(main()) == [Status.SUCCESS] * 4
    kinds = [type(e) for e in observer.events]
    assert kinds == [AssociationAccepted, AssociationEnded]


def test_replacing_the_observer_rereads_what_it_wants(run: Any, tmp_path: Path) -> None:
    """As `LiveAssociations.attach` does: the chained observer wants requests."""
    files = [write_ct(tmp_path / "a.dcm", size=200)]
    declining = Declining()
    events: list[ServerEvent] = []

    def chained(event: ServerEvent) -> None:
        events.append(event)
        declining(event)

    async def main() -> list[Status]:
        server = Server(admission=_policy(), handlers=Handlers(store=_store),
                        observer=declining)
        assert not server.wants_requests
        server.observer = chained
        assert server.wants_requests and server.observer is chained
        return await _traffic(server, files, echoes=2)

    assert run(main()) == [Status.SUCCESS] * 3
    assert [e.service for e in events if isinstance(e, RequestCompleted)] == [
        "C-ECHO", "C-ECHO", "C-STORE"]
    server_none = Server(admission=_policy(), observer=None)
    assert not server_none.wants_requests


def test_wants_requests_reads_the_attribute() -> None:
    assert not wants_requests(None)
    assert wants_requests(print)
    assert not wants_requests(Declining())

    class Property:
        def __init__(self) -> None:
            self.level = False

        @property
        def wants_requests(self) -> bool:
            return self.level

        def __call__(self, event: ServerEvent) -> None:
            pass

    observer = Property()
    assert not wants_requests(observer)
    observer.level = True
    assert wants_requests(observer)


def test_fan_out_gives_requests_only_to_those_that_want_them(
        caplog: pytest.LogCaptureFixture) -> None:
    info = AssociationInfo(id=1, calling_ae_title="A", called_ae_title="B", peer_address=None)
    request = RequestCompleted(info=info, service="C-ECHO", sop_class_uid="1.2",
                               sop_instance_uid=None, status=0, bytes=0, duration=0.0)
    accepted = AssociationAccepted(info=info)
    declining = Declining()
    seen: list[ServerEvent] = []

    def broken(event: ServerEvent) -> None:
        raise RuntimeError("exporter down")

    log = logging.getLogger("test.fanout")
    fan = FanOut([broken, declining, seen.append], log)
    assert fan.wants_requests
    with caplog.at_level(logging.ERROR, logger="test.fanout"):
        fan(accepted)
        fan(request)
    assert seen == [accepted, request]  # after a broken member, the others still run
    assert declining.events == [accepted]
    assert [r.getMessage() for r in caplog.records] == [
        "function failed on AssociationAccepted", "function failed on RequestCompleted"]
    assert not FanOut([declining, Declining()], log).wants_requests
    assert not FanOut([], log).wants_requests
