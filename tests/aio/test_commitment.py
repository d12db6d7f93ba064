"""Storage commitment (PS3.4 J): our SCU against our Server, the bundled server's handler
over real files, the data set codec, and our SCU against a pynetdicom SCP."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.commitment import (
    STORAGE_COMMITMENT_INSTANCE,
    STORAGE_COMMITMENT_PUSH_MODEL,
    CommitFailure,
    CommitRequest,
    CommitResult,
    FailureReason,
    Reference,
    commitment_context,
    commitment_role,
    decode_action,
    decode_event,
    encode_action,
    encode_event,
)
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Handlers, Server
from aiodicom.app.archive.commitment import check_references, make_commit_handler
from aiodicom.app.archive.index import Index
from aiodicom.app.archive.storage import Storage, StorageSettings
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import AcceptorPolicy, RoleSupport
from aiodicom.core.part10 import read_part10_info
from aiodicom.errors import DimseError, DimseTimeout
from aiodicom.settings import AssociationSettings, Timeouts
from tests.conftest import write_ct

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
EXPLICIT = "1.2.840.10008.1.2.1"


def _policy() -> AcceptorPolicy:
    return AcceptorPolicy(
        abstract_syntaxes={STORAGE_COMMITMENT_PUSH_MODEL: (EXPLICIT,)},
        accept_any_abstract_syntax=True,
        role_selection={STORAGE_COMMITMENT_PUSH_MODEL: RoleSupport(requestor_scp=True)},
    )


def _refs(paths: list[Path]) -> list[Reference]:
    infos = [read_part10_info(p) for p in paths]
    return [Reference(sop_class_uid=i.sop_class_uid, sop_instance_uid=i.sop_instance_uid)
            for i in infos]


def test_codec_round_trip() -> None:
    refs = (Reference(sop_class_uid=CT, sop_instance_uid="1.2.3"),
            Reference(sop_class_uid=MR, sop_instance_uid="1.2.4"))
    for ts in (EXPLICIT, "1.2.840.10008.1.2"):
        assert decode_action(encode_action("9.8.7", refs, ts), ts) == ("9.8.7", refs)
        result = CommitResult(transaction_uid="9.8.7", committed=refs[:1], failed=(
            CommitFailure(reference=refs[1], reason=FailureReason.NO_SUCH_OBJECT_INSTANCE),))
        event_type, body = encode_event(result, ts)
        assert event_type == 2
        assert decode_event(body, ts) == result
        all_ok = CommitResult(transaction_uid="9.8.7", committed=refs)
        assert encode_event(all_ok, ts)[0] == 1


def test_commit_against_our_server_stores_then_commits(run: Any, tmp_path: Path) -> None:
    """Store two CT files into a real Storage, commit them plus one never sent and one
    named with the wrong class: the report lists 2 committed, 0x0112 and 0x0119."""
    root = tmp_path / "store"
    storage = Storage(StorageSettings(root=root))
    files = [write_ct(tmp_path / f"ct{i}.dcm") for i in range(3)]
    seen: list[CommitRequest] = []
    inner = make_commit_handler(root, lambda: Index.for_root(root))

    async def on_store(request: StoreRequest) -> Status:
        await request.save(storage)
        return Status.SUCCESS

    async def on_commit(request: CommitRequest) -> CommitResult:
        seen.append(request)
        return await inner(request)

    async def main() -> tuple[list[Status], CommitResult]:
        handlers = Handlers(store=on_store, commit=on_commit)
        async with Server(admission=_policy(), handlers=handlers) as server:
            host, port = await server.listen()
            contexts = [*storage_contexts_for(files[:2]), commitment_context()]
            async with connect(host, port, contexts=contexts,
                               role_selections=[commitment_role()]) as assoc:
                statuses = [await assoc.store(p) for p in files[:2]]
                refs = _refs(files)
                refs[1] = Reference(sop_class_uid=MR, sop_instance_uid=refs[1].sop_instance_uid)
                result = await assoc.commit(refs, transaction_uid="1.2.3.99")
            return statuses, result

    statuses, result = run(main())
    assert statuses == [Status.SUCCESS] * 2
    refs = _refs(files)
    assert result.transaction_uid == "1.2.3.99"
    assert result.committed == (refs[0],)
    reasons = {f.reference.sop_instance_uid: f.reason for f in result.failed}
    assert reasons == {refs[1].sop_instance_uid: FailureReason.CLASS_INSTANCE_CONFLICT,
                       refs[2].sop_instance_uid: FailureReason.NO_SUCH_OBJECT_INSTANCE}
    assert not result.all_committed
    assert seen[0].transaction_uid == "1.2.3.99" and len(seen[0].references) == 3


def test_failing_handler_reports_every_instance_failed(run: Any) -> None:
    async def on_commit(request: CommitRequest) -> CommitResult:
        raise RuntimeError("archive offline")

    refs = [Reference(sop_class_uid=CT, sop_instance_uid="1.2.3.4")]

    async def main() -> CommitResult:
        async with Server(admission=_policy(), handlers=Handlers(commit=on_commit)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=[commitment_context()]) as assoc:
                return await assoc.commit(refs)

    result = run(main())
    assert result.committed == ()
    assert [f.reason for f in result.failed] == [FailureReason.PROCESSING_FAILURE]


def test_server_without_commit_handler_refuses(run: Any) -> None:
    async def main() -> str:
        async with Server(admission=_policy(), handlers=Handlers()) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=[commitment_context()]) as assoc:
                with pytest.raises(DimseError) as info:
                    await assoc.commit([Reference(sop_class_uid=CT, sop_instance_uid="1.2")])
                assert assoc.is_established
                return str(info.value)

    assert "0x0122" in run(main())


def test_no_report_within_timeout_raises(run: Any) -> None:
    release = asyncio.Event()

    async def on_commit(request: CommitRequest) -> CommitResult:
        await release.wait()
        return CommitResult(transaction_uid=request.transaction_uid)

    async def main() -> None:
        async with Server(admission=_policy(), handlers=Handlers(commit=on_commit)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=[commitment_context()]) as assoc:
                with pytest.raises(DimseTimeout, match="N-EVENT-REPORT"):
                    await assoc.commit([Reference(sop_class_uid=CT, sop_instance_uid="1.2")],
                                       timeout=0.2)
                release.set()

    run(main())


def test_check_references_scans_tree_when_index_lags(tmp_path: Path) -> None:
    """A file renamed into place whose index row is not written yet is still committed."""
    root = tmp_path / "store"
    storage = Storage(StorageSettings(root=root))
    src = write_ct(tmp_path / "a.dcm")
    info = read_part10_info(src)
    with src.open("rb") as f:
        f.seek(info.dataset_offset)
        data = f.read()
    writer = storage.begin(sop_class_uid=info.sop_class_uid,
                           sop_instance_uid=info.sop_instance_uid,
                           transfer_syntax_uid=info.transfer_syntax_uid,
                           source_ae_title="A", receiving_ae_title="B")
    writer.write(memoryview(data))
    writer.commit()
    ref = _refs([src])[0]
    with Index.for_root(root) as index:
        committed, failed = check_references(root, index, [ref])
    assert committed == [ref] and failed == []
    committed, failed = check_references(root, None, [
        Reference(sop_class_uid=CT, sop_instance_uid="1.2.3.404")])
    assert committed == [] and failed[0].reason == FailureReason.NO_SUCH_OBJECT_INSTANCE
    # Committed to the AE that sent it; any other AE is told "no such instance", even
    # with the wrong SOP class (0x0119 would tell it the instance exists).
    assert check_references(root, None, [ref], "A") == ([ref], [])
    for asked in (ref, Reference(sop_class_uid="1.2.840.10008.5.1.4.1.1.4",
                                 sop_instance_uid=ref.sop_instance_uid)):
        committed, failed = check_references(root, None, [asked], "OTHER")
        assert committed == [] and failed[0].reason == FailureReason.NO_SUCH_OBJECT_INSTANCE


def _pynetdicom_scp(known: set[str]) -> tuple[Any, int]:
    """A pynetdicom Storage Commitment SCP that reports on the same association."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

    ae = AE(ae_title="PYSCP")
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)

    def on_action(event: Any) -> Any:
        info = event.action_information
        done = threading.Event()

        def report() -> None:
            done.wait(5)
            ds = Dataset()
            ds.TransactionUID = info.TransactionUID
            ok, bad = [], []
            for item in info.ReferencedSOPSequence:
                (ok if item.ReferencedSOPInstanceUID in known else bad).append(item)
            for item in bad:
                item.FailureReason = 0x0112
            if ok:
                ds.ReferencedSOPSequence = ok
            if bad:
                ds.FailedSOPSequence = bad
            event.assoc.send_n_event_report(ds, 2 if bad else 1, StorageCommitmentPushModel,
                                            STORAGE_COMMITMENT_INSTANCE)

        threading.Thread(target=report, daemon=True).start()
        done.set()
        return 0x0000, None

    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_N_ACTION, on_action)])
    return server, server.socket.getsockname()[1]


@pytest.mark.parametrize("missing", [False, True])
def test_commit_against_pynetdicom_scp(run: Any, missing: bool) -> None:
    refs = [Reference(sop_class_uid=CT, sop_instance_uid="1.2.3.1"),
            Reference(sop_class_uid=CT, sop_instance_uid="1.2.3.2")]
    known = {"1.2.3.1"} | (set() if missing else {"1.2.3.2"})
    server, port = _pynetdicom_scp(known)
    settings = AssociationSettings(timeouts=Timeouts(dimse=10))

    async def main() -> CommitResult:
        async with connect("127.0.0.1", port, contexts=[commitment_context()],
                           role_selections=[commitment_role()], settings=settings) as assoc:
            return await assoc.commit(refs)

    try:
        result = run(main())
    finally:
        server.shutdown()
    if missing:
        assert result.committed == (refs[0],)
        assert [(f.reference, f.reason) for f in result.failed] == [(refs[1], 0x0112)]
    else:
        assert result.all_committed and result.committed == tuple(refs)


def test_too_many_references_are_refused_and_repeats_checked_once(
        run: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request naming more instances than MAX_REFERENCES gets 0x0213 before any lookup;
    a reference named twice is looked up once."""
    import aiodicom.aio.commitment as commitment

    monkeypatch.setattr(commitment, "MAX_REFERENCES", 3)
    seen: list[int] = []

    async def on_commit(request: CommitRequest) -> CommitResult:
        seen.append(len(request.references))
        return CommitResult(transaction_uid=request.transaction_uid,
                            committed=tuple(request.references))

    def ref(n: int) -> Reference:
        return Reference(sop_class_uid=CT, sop_instance_uid=f"1.2.3.{n}")

    async def main() -> str:
        async with Server(admission=_policy(), handlers=Handlers(commit=on_commit)) as server:
            host, port = await server.listen()
            async with connect(host, port, contexts=[commitment_context()]) as assoc:
                result = await assoc.commit([ref(1), ref(1), ref(2), ref(3)])
                assert len(result.committed) == 3
                with pytest.raises(DimseError) as info:
                    await assoc.commit([ref(n) for n in range(4)])
                return str(info.value)

    assert "0x0213" in run(main())
    assert seen == [3]  # only the first request, deduplicated, reached the handler
