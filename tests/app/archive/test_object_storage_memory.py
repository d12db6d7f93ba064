"""Bounded memory into an object store (issue 14 item 1): a data set streamed into a real
moto S3 server costs a few parts of memory whatever its size.

The model for 1 GiB: what a store holds is its part buffer, the part queued for the upload
and the parts in flight, each `part_size`; nothing grows with the data set, so 16 MiB and
64 MiB (here) and 1 GiB stay under the same 5 parts (25 MiB with 5 MiB parts, 40 MiB with
the default 8 MiB). tracemalloc sees every part: obstore takes the writer's bytearrays
without copying and holds them until their upload ends.
"""

from __future__ import annotations

import asyncio
import struct
import tracemalloc
import uuid
from pathlib import Path

import pydicom

from aiodicom.app.archive.object_storage import (
    MIN_PART_SIZE,
    ObjectStorage,
    ObjectStorageSettings,
)
from tests.conftest import make_runner, write_ct
from tests.services.moto_s3 import MotoS3

CT = "1.2.840.10008.5.1.4.1.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
FRAGMENT = 16 * 1024  # a P-DATA value of a 16 KiB PDU
MIB = 1024 * 1024
run = make_runner("asyncio")


def _head(tmp_path: Path, uid: str) -> bytes:
    """A CT data set without its pixel data, Explicit VR Little Endian, as a C-STORE
    carries it (no File Meta)."""
    path = write_ct(tmp_path / f"{uid}.dcm", size=2, sop_instance_uid=uid)
    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    (group_length,) = struct.unpack_from("<L", data, 140)
    return data[144 + group_length:]


async def _store(backend: ObjectStorage, head: bytes, pixels: int, uid: str) -> int:
    """Stream head + (7FE0,0010) OW of ``pixels`` zero bytes in FRAGMENT-sized views of one
    buffer (the sender allocates nothing); the peak traced while it runs."""
    zeros = memoryview(bytes(FRAGMENT))
    element = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, pixels)
    tracemalloc.reset_peak()
    writer = backend.begin(sop_class_uid=CT, sop_instance_uid=uid, transfer_syntax_uid=EXPLICIT,
                           source_ae_title="MODALITY", receiving_ae_title="AIODICOM")
    for piece in (head, element):
        if writer.write(piece):
            await writer.drain()
    left = pixels
    while left:
        n = min(left, FRAGMENT)
        if writer.write(zeros[:n]):
            await writer.drain()
        left -= n
    stored = await writer.commit()
    assert stored.size > pixels
    return tracemalloc.get_traced_memory()[1]


def test_a_large_data_set_streams_in_a_few_parts_of_memory(tmp_path: Path,
                                                           moto_s3: MotoS3) -> None:
    bucket = f"m{uuid.uuid4().hex[:12]}"
    moto_s3.create_bucket(bucket)
    part = MIN_PART_SIZE
    backend = ObjectStorage(ObjectStorageSettings(url=f"s3://{bucket}/mem", part_size=part),
                            environ=moto_s3.env())
    uids = [f"2.25.{uuid.uuid4().int}" for _ in range(2)]
    heads = [_head(tmp_path, uid) for uid in uids]

    async def main() -> list[int]:
        peaks = []
        tracemalloc.start()
        try:
            for uid, head, size in zip(uids, heads, (16 * MIB, 64 * MIB), strict=True):
                peaks.append(await _store(backend, head, size, uid))
        finally:
            tracemalloc.stop()
            await backend.close()
        return peaks

    small, large = run(main())
    # The bound: the part being filled, the part queued, two parts in flight (obstore's
    # max_concurrency=1 lets a second start as one finishes), and bytearray slack. Measured
    # here: 3.6 parts at 16 MiB, 4.5 parts at 32, 64, 128 and 256 MiB (the plateau).
    bound = 5 * part
    assert small < bound and large < bound, (small, large)
    keys = moto_s3.list_keys(bucket)
    assert len(keys) == 2 and all(k.startswith("mem/") for k in keys)


def test_the_object_appears_only_at_commit(tmp_path: Path, moto_s3: MotoS3) -> None:
    """Parts uploaded, data set not finished: nothing to read under the key until commit."""
    bucket = f"v{uuid.uuid4().hex[:12]}"
    moto_s3.create_bucket(bucket)
    backend = ObjectStorage(ObjectStorageSettings(url=f"s3://{bucket}/v",
                                                  part_size=MIN_PART_SIZE),
                            environ=moto_s3.env())
    uid = f"2.25.{uuid.uuid4().int}"
    head = _head(tmp_path, uid)

    async def main() -> tuple[list[str], list[str]]:
        pixels = 3 * MIN_PART_SIZE
        writer = backend.begin(sop_class_uid=CT, sop_instance_uid=uid,
                               transfer_syntax_uid=EXPLICIT, source_ae_title="M",
                               receiving_ae_title="AIODICOM")
        writer.write(head)
        writer.write(struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, pixels))
        chunk = bytes(MIB)
        for _ in range(pixels // MIB):
            if writer.write(chunk):
                await writer.drain()
        await asyncio.sleep(0.2)  # let the first parts reach the store
        before = moto_s3.list_keys(bucket)
        await writer.commit()
        after = moto_s3.list_keys(bucket)
        await backend.close()
        return before, after

    before, after = run(main())
    assert before == []
    assert after == [f"v/1.2.3.4.5/1.2.3.4.5.6/{uid}.dcm"]
