"""Storage commitment over an object store lists at most `LIST_PAGES` pages per request
for instances the index lacks: a peer naming UIDs that do not exist cannot make every
N-ACTION list the whole archive (Azurite; app/archive/object_reads.py)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.commitment import FailureReason, Reference
from aiodicom.app.archive import object_reads
from aiodicom.app.archive.object_reads import check_object_references
from tests.app.archive.test_object_storage import CT, SERIES, STUDY, _azure_bucket, run
from tests.conftest import write_ct
from tests.services.azurite import AzuriteServer


def test_commitment_lists_a_bounded_number_of_pages(
    tmp_path: Path, azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import obstore

    backend = _azure_bucket(azurite).backend()
    uids = sorted(f"2.25.{uuid.uuid4().int}" for _ in range(5))  # listed in this order
    data = write_ct(tmp_path / "ct.dcm", size=256, sop_instance_uid=uids[0],
                    study_uid=STUDY, series_uid=SERIES).read_bytes()
    pages: list[int] = []
    real_list = obstore.list

    def counting_list(*args: Any, **kw: Any) -> Any:
        pages.append(0)
        stream = real_list(*args, **kw)

        class Counted:
            def __aiter__(self) -> Counted:
                return self

            async def __anext__(self) -> Any:
                page = await stream.__anext__()
                pages[-1] += 1
                return page

        return Counted()

    async def main() -> tuple[list[Reference], list[Any]]:
        for uid in uids:  # objects the index never heard of (no index at all here)
            await obstore.put_async(backend.store, backend.key_for(STUDY, SERIES, uid), data)
        monkeypatch.setattr(object_reads, "LIST_CHUNK", 1)
        monkeypatch.setattr(object_reads, "LIST_PAGES", 2)
        monkeypatch.setattr(obstore, "list", counting_list)
        refs = [Reference(sop_class_uid=CT, sop_instance_uid=uid)
                for uid in (uids[0], uids[4], "2.25.404")]
        try:
            return await check_object_references(backend.reader, None, refs)
        finally:
            await backend.close()

    committed, failed = run(main())
    assert [r.sop_instance_uid for r in committed] == [uids[0]]  # on the first page
    assert sorted((f.reference.sop_instance_uid, f.reason) for f in failed) == sorted([
        # past the pages read: it may exist (another node's, its row not written yet), so
        # "ask again later", never "no such object"; the unknown UID cannot be told apart
        (uids[4], FailureReason.PROCESSING_FAILURE),
        ("2.25.404", FailureReason.PROCESSING_FAILURE)])
    assert pages == [2], pages
