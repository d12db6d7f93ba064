"""Object storage (issue 14 item 1): C-STOREs over the network into real Azurite and moto S3
servers through the bundled server's handlers; the object is what the local tree holds,
visible only when whole, indexed by its key; failures are 0xA700 and leave nothing."""

from __future__ import annotations

import asyncio
import re
import struct
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aiodicom.aio.client import connect
from aiodicom.aio.commitment import (
    FailureReason,
    Reference,
    commitment_context,
    commitment_role,
)
from aiodicom.app.archive.index import Index
from aiodicom.app.archive.index_writer import writer_for_index
from aiodicom.app.archive.object_storage import (
    MIN_PART_SIZE,
    ObjectStorage,
    ObjectStorageSettings,
)
from aiodicom.app.archive.storage import DuplicatePolicy
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.run import build_server
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS
from aiodicom.core.qr import qr_contexts
from aiodicom.settings import AssociationSettings, Timeouts
from tests.conftest import make_runner, write_ct
from tests.services.azurite import AzuriteServer
from tests.services.moto_s3 import MotoS3, start_moto

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
STUDY, SERIES = "1.2.3.4.5", "1.2.3.4.5.6"
CONTEXTS = [(CT, [EXPLICIT]), (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]),
            *qr_contexts(), commitment_context()]
run = make_runner("asyncio")


@dataclass
class Bucket:
    """One fresh bucket/container in a running emulator, and how to look inside it."""

    url: str
    env: dict[str, str]
    keys: Callable[[], list[str]]
    pending: Callable[[], list[str]]
    """Uploads started and neither completed nor aborted (S3 ListMultipartUploads)."""
    started: Callable[[], list[str]]
    """Keys with an upload under way in the store (S3 uploads; Azure uncommitted blobs)."""

    def backend(self, **settings: Any) -> ObjectStorage:
        return ObjectStorage(ObjectStorageSettings(url=self.url, part_size=MIN_PART_SIZE,
                                                   **settings), environ=self.env)


def _s3_bucket(moto: MotoS3) -> Bucket:
    name = f"b{uuid.uuid4().hex[:12]}"
    moto.create_bucket(name)

    def pending() -> list[str]:
        with urllib.request.urlopen(f"{moto.endpoint}/{name}?uploads", timeout=10) as resp:
            return re.findall(r"<Key>([^<]*)</Key>", resp.read().decode())

    return Bucket(url=f"s3://{name}/archive", env=moto.env(),
                  keys=lambda: moto.list_keys(name), pending=pending, started=pending)


def _azure_bucket(azurite: AzuriteServer) -> Bucket:
    name = f"c{uuid.uuid4().hex[:12]}"
    azurite.create_container(name)
    def uncommitted() -> list[str]:
        status, body = azurite.request("GET", name, {"restype": "container", "comp": "list",
                                                     "include": "uncommittedblobs"})
        assert status == 200, body
        return re.findall(r"<Name>([^<]*)</Name>", body.decode())

    # Azure keeps an aborted upload's blocks uncommitted (never readable nor listed) until
    # it discards them (7 days); object_store's Azure abort cannot remove them, so Azure has
    # no "pending upload" a reader could see: `keys` (committed blobs) is what matters.
    return Bucket(url=f"az://{name}/archive", env=azurite.env(),
                  keys=lambda: azurite.list_blobs(name), pending=list, started=uncommitted)


@pytest.fixture(params=["az", "s3"])
def bucket(request: pytest.FixtureRequest) -> Bucket:
    if request.param == "az":
        return _azure_bucket(request.getfixturevalue("azurite"))
    return _s3_bucket(request.getfixturevalue("moto_s3"))


@asynccontextmanager
async def serving(options: ServeOptions, backend: Any = None) -> AsyncIterator[tuple[str, int]]:
    server, _ = build_server(options, backend=backend)
    try:
        async with server:
            yield await server.listen()
    finally:
        if backend is not None:
            await backend.close()


def options_for(tmp_path: Path, bucket: Bucket | None, **more: Any) -> ServeOptions:
    if bucket is None:
        return ServeOptions(port=0, storage=tmp_path / "local", **more).check()
    return ServeOptions(port=0, storage=bucket.url, index=str(tmp_path / "index.sqlite"),
                        **more).check()


async def send(host: str, port: int, *files: Path) -> list[Status]:
    settings = AssociationSettings(timeouts=Timeouts(dimse=60))
    async with connect(host, port, contexts=CONTEXTS, settings=settings) as assoc:
        return [await assoc.store(f) for f in files]


def object_bytes(backend: ObjectStorage, key: str) -> bytes:
    async def get() -> bytes:
        import obstore

        return bytes(await (await obstore.get_async(backend.store, key)).bytes_async())

    return run(get())


@pytest.mark.parametrize("size", [4096, 2 * MIN_PART_SIZE + 12345])
def test_a_c_store_lands_as_the_file_a_local_store_writes(tmp_path: Path, bucket: Bucket,
                                                          size: int) -> None:
    """One PUT (small) or a multipart upload of three parts: the object's bytes are the
    local file's, at {prefix}/{Study}/{Series}/{SOP}.dcm, and the index row holds the key."""
    uid = f"2.25.{uuid.uuid4().int}"
    source = write_ct(tmp_path / "ct.dcm", size=size, sop_instance_uid=uid,
                      study_uid=STUDY, series_uid=SERIES)
    backend = bucket.backend()

    async def main() -> tuple[list[Status], list[Status]]:
        async with serving(options_for(tmp_path, bucket), backend) as (host, port):
            remote = await send(host, port, source)
        async with serving(options_for(tmp_path, None)) as (host, port):
            local = await send(host, port, source)
        return remote, local

    assert run(main()) == ([Status.SUCCESS], [Status.SUCCESS])
    key = f"archive/{STUDY}/{SERIES}/{uid}.dcm"
    assert bucket.keys() == [key]
    on_disk = (tmp_path / "local" / STUDY / SERIES / f"{uid}.dcm").read_bytes()
    assert object_bytes(backend, key) == on_disk
    with Index(tmp_path / "index.sqlite") as index:
        assert index.locate(uid) == Path(key)
    assert bucket.pending() == []


def test_an_association_aborted_mid_data_set_leaves_nothing(tmp_path: Path,
                                                            bucket: Bucket) -> None:
    """The peer aborts once the multipart upload is under way in the store: no object, no
    pending upload, and the server stores the next instance normally."""
    big_uid, small_uid = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
    big = write_ct(tmp_path / "big.dcm", size=4 * MIN_PART_SIZE, sop_instance_uid=big_uid,
                   study_uid=STUDY, series_uid=SERIES)
    small = write_ct(tmp_path / "small.dcm", size=1024, sop_instance_uid=small_uid,
                     study_uid=STUDY, series_uid=SERIES)
    backend = bucket.backend()

    async def main() -> tuple[Any, list[Status]]:
        async with serving(options_for(tmp_path, bucket), backend) as (host, port):
            async with connect(host, port, contexts=CONTEXTS) as assoc:
                sending = asyncio.ensure_future(assoc.store(big))
                while not bucket.started():  # the store holds an upload of ours
                    await asyncio.sleep(0.02)
                assoc.abort()
                (outcome,) = await asyncio.gather(sending, return_exceptions=True)
            await backend.settle()  # the abort reached the store
            return outcome, await send(host, port, small)

    outcome, after = run(main())
    assert isinstance(outcome, Exception)  # the C-STORE never completed
    assert after == [Status.SUCCESS]
    assert bucket.keys() == [f"archive/{STUDY}/{SERIES}/{small_uid}.dcm"]
    assert bucket.pending() == []
    with Index(tmp_path / "index.sqlite") as index:
        assert index.locate(big_uid) is None


def test_the_store_down_fails_the_c_store_with_a700_and_the_server_goes_on(
        tmp_path: Path) -> None:
    """moto stopped: the C-STORE is answered 0xA700 (out of resources: the modality keeps
    the instance and retries), never 0000; C-ECHO still answers on the same association."""
    with start_moto(tmp_path / "moto") as moto:
        bucket = _s3_bucket(moto)
        backend = bucket.backend(retry_timeout=2.0)
        first = write_ct(tmp_path / "a.dcm", size=1024)
        second = write_ct(tmp_path / "b.dcm", size=1024)
        big = write_ct(tmp_path / "c.dcm", size=2 * MIN_PART_SIZE)

        async def main() -> tuple[Status, list[Status], Status]:
            async with (serving(options_for(tmp_path, bucket), backend) as (host, port),
                        connect(host, port, contexts=CONTEXTS) as assoc):
                before = await assoc.store(first)
                moto.process.stop()
                after = [await assoc.store(second), await assoc.store(big)]
                echo = await assoc.echo()
            return before, after, echo

        before, after, echo = run(main())
    assert before == Status.SUCCESS
    assert after == [Status.OUT_OF_RESOURCES, Status.OUT_OF_RESOURCES]
    assert echo == Status.SUCCESS


@pytest.mark.parametrize("size", [1024, MIN_PART_SIZE + 4096])  # conditional PUT; HEAD
@pytest.mark.parametrize("policy", ["keep", "reject", "overwrite"])
def test_duplicates_are_answered_by_the_store(tmp_path: Path, bucket: Bucket, policy: str,
                                              size: int) -> None:
    """The same SOP instance twice with other content: KEEP answers success and keeps the
    first object, REJECT refuses the second (0xC000, as on disk) and keeps the first,
    OVERWRITE replaces it."""
    uid = f"2.25.{uuid.uuid4().int}"
    first = write_ct(tmp_path / "1.dcm", size=size, sop_instance_uid=uid, study_uid=STUDY,
                     series_uid=SERIES)
    first_bytes = first.read_bytes()
    second = write_ct(tmp_path / "2.dcm", size=size + 2, sop_instance_uid=uid,
                      study_uid=STUDY, series_uid=SERIES)
    backend = bucket.backend(duplicates=DuplicatePolicy[policy.upper()])

    async def main() -> list[Status]:
        options = options_for(tmp_path, bucket, duplicates=policy)
        async with serving(options, backend) as (host, port):
            return await send(host, port, first, second)

    statuses = run(main())
    key = f"archive/{STUDY}/{SERIES}/{uid}.dcm"
    stored = object_bytes(backend, key)
    assert bucket.keys() == [key]
    expected = {"keep": Status.SUCCESS, "reject": Status.CANNOT_UNDERSTAND,
                "overwrite": Status.SUCCESS}[policy]
    assert statuses == [Status.SUCCESS, expected]
    kept = stored[-64:] == first_bytes[-64:]  # the pixel data's tail tells them apart
    assert kept == (policy != "overwrite")
    assert stored[-64:] in (first_bytes[-64:], second.read_bytes()[-64:])
    assert bucket.pending() == []


def test_storage_commitment_answers_from_the_store(tmp_path: Path, bucket: Bucket) -> None:
    """A stored instance is committed; one never sent is 0x0112; one the index does not
    list (its row not written yet) is found by listing the store; another AE title asking
    about ours is told 0x0112."""
    uid, unindexed = f"2.25.{uuid.uuid4().int}", f"2.25.{uuid.uuid4().int}"
    source = write_ct(tmp_path / "ct.dcm", size=1024, sop_instance_uid=uid,
                      study_uid=STUDY, series_uid=SERIES)
    other = write_ct(tmp_path / "other.dcm", size=1024, sop_instance_uid=unindexed,
                     study_uid=STUDY, series_uid=SERIES)
    backend = bucket.backend()
    refs = [Reference(sop_class_uid=CT, sop_instance_uid=uid),
            Reference(sop_class_uid=CT, sop_instance_uid="2.25.404"),
            Reference(sop_class_uid=CT, sop_instance_uid=unindexed)]

    async def main() -> tuple[Any, Any]:
        async with serving(options_for(tmp_path, bucket), backend) as (host, port):
            assert await send(host, port, source, other) == [Status.SUCCESS] * 2
            writer_for_index(str(tmp_path / "index.sqlite"), bucket.url).flush(10)
            with Index(tmp_path / "index.sqlite") as index:  # as if its row were late
                assert index.remove(unindexed)
            async with connect(host, port, contexts=CONTEXTS,
                               role_selections=[commitment_role()]) as assoc:
                mine = await assoc.commit(refs, timeout=30)
            settings = AssociationSettings(ae_title="INTRUDER")
            async with connect(host, port, contexts=CONTEXTS, settings=settings,
                               role_selections=[commitment_role()]) as assoc:
                theirs = await assoc.commit(refs[:1], timeout=30)
        return mine, theirs

    mine, theirs = run(main())
    assert {r.sop_instance_uid for r in mine.committed} == {uid, unindexed}
    assert [(f.reference.sop_instance_uid, f.reason) for f in mine.failed] == [
        ("2.25.404", FailureReason.NO_SUCH_OBJECT_INSTANCE)]
    assert theirs.committed == ()
    assert [f.reason for f in theirs.failed] == [FailureReason.NO_SUCH_OBJECT_INSTANCE]


def test_c_get_sends_back_what_the_store_holds(tmp_path: Path, bucket: Bucket) -> None:
    """C-GET of a study held in the object store: each instance is read back from the store
    (a staged copy, removed afterwards) and arrives as it was sent."""
    from aiodicom.core.qr import retrieve_contexts

    uids = [f"2.25.{uuid.uuid4().int}" for _ in range(2)]
    sources = [write_ct(tmp_path / f"{n}.dcm", size=size, sop_instance_uid=uid,
                        study_uid=STUDY, series_uid=SERIES)
               for n, (uid, size) in enumerate(zip(uids, (2048, MIN_PART_SIZE + 10),
                                                   strict=True))]
    backend = bucket.backend()

    async def main() -> tuple[Any, dict[str, bytes], list[Path]]:
        received: dict[str, bytes] = {}

        async def on_store(request: Any) -> Status:
            chunks = [bytes(v) async for v in request.fragments()]
            received[request.sop_instance_uid] = b"".join(chunks)
            return Status.SUCCESS

        async with serving(options_for(tmp_path, bucket), backend) as (host, port):
            assert await send(host, port, *sources) == [Status.SUCCESS] * 2
            contexts, roles = retrieve_contexts([CT])
            async with connect(host, port, contexts=contexts, role_selections=roles) as assoc:
                query = Dataset()
                query.QueryRetrieveLevel = "STUDY"
                query.StudyInstanceUID = STUDY
                result = await assoc.get(query, on_store=on_store)
            staging = backend.reader._staging
            assert staging is not None  # the instances went through it
            left = [p for p in staging.rglob("*") if p.is_file()]
            for _ in range(200):  # the server lets go once its C-GET has returned
                if not left:
                    break
                await asyncio.sleep(0.05)
                left = [p for p in staging.rglob("*") if p.is_file()]
        return result, received, left

    result, received, left = run(main())
    assert (result.status, result.completed, result.failed) == (Status.SUCCESS, 2, 0)
    for uid, source in zip(uids, sources, strict=True):
        data = source.read_bytes()
        (group_length,) = struct.unpack_from("<L", data, 140)
        assert received[uid] == data[144 + group_length:]  # the data set, byte for byte
    assert left == []  # each staged copy went once the retrieve let go of it
    assert backend.reader._staging is None  # and the directory at close


def test_a_head_that_differs_from_the_command_is_refused_from_the_first_part(
        tmp_path: Path, bucket: Bucket) -> None:
    """The data set names another SOP instance than the command: 0xA900 decided on the
    buffered first part (no upload begun, nothing read back), the rest of the data set
    dropped, and the association goes on."""
    import pydicom

    source = write_ct(tmp_path / "ct.dcm", size=2 * MIN_PART_SIZE, study_uid=STUDY,
                      series_uid=SERIES)
    ds = pydicom.dcmread(source)
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.1"  # what the command will say
    ds.save_as(source, enforce_file_format=False)
    good = write_ct(tmp_path / "good.dcm", size=1024, study_uid=STUDY, series_uid=SERIES)
    backend = bucket.backend()

    async def main() -> tuple[list[Status], int]:
        async with serving(options_for(tmp_path, bucket), backend) as (host, port):
            statuses = await send(host, port, source, good)
            return statuses, len(backend._uploads)

    statuses, uploads = run(main())
    assert statuses == [Status.DATASET_MISMATCH, Status.SUCCESS]
    assert uploads == 0
    assert len(bucket.keys()) == 1 and bucket.pending() == []
