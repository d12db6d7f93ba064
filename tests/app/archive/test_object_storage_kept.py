"""KEEP over an object store when the object is there but the index does not list it (a node
killed after completing the upload and before its index write, or another node's write
lost): the retried C-STORE is answered success, so the instance must end up indexed."""

from __future__ import annotations

import uuid
from pathlib import Path

from aiodicom.app.archive.index import Index
from aiodicom.app.archive.index_writer import writer_for_index
from aiodicom.app.archive.storage import DuplicatePolicy
from aiodicom.core.dimse import Status
from tests.app.archive.test_object_storage import (
    SERIES,
    STUDY,
    Bucket,
    bucket,
    options_for,
    run,
    send,
    serving,
)
from tests.conftest import write_ct

__all__ = ["bucket"]


def test_kept_existing_object_is_indexed_when_the_index_lacks_it(tmp_path: Path,
                                                                 bucket: Bucket) -> None:
    uid = f"2.25.{uuid.uuid4().int}"
    source = write_ct(tmp_path / "ct.dcm", size=2048, sop_instance_uid=uid,
                      study_uid=STUDY, series_uid=SERIES)
    key = f"archive/{STUDY}/{SERIES}/{uid}.dcm"
    backend = bucket.backend(duplicates=DuplicatePolicy.KEEP)

    async def put_first() -> None:  # the object a crashed node completed, never indexed
        import obstore

        await obstore.put_async(backend.store, key, source.read_bytes())

    run(put_first())

    async def main() -> list[Status]:
        async with serving(options_for(tmp_path, bucket, duplicates="keep"),
                           backend) as (host, port):
            return await send(host, port, source)

    assert run(main()) == [Status.SUCCESS]
    assert bucket.keys() == [key]
    # the index row is written off the response path (index_writer): wait for it, as
    # aiodicom serve does before it exits; the journal has it until then
    writer_for_index(str(tmp_path / "index.sqlite"), bucket.url).flush(30)
    with Index(tmp_path / "index.sqlite") as index:
        assert index.locate(uid) == Path(key)  # acknowledged, so findable
