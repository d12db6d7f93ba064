"""Fuzz the C-STORE data path: received fragments -> Part 10 file -> commit (PS3.10 §7).

The payload is the data set as a peer sends it, cut at fuzzer-chosen sizes into the
memoryview fragments the server writes one by one; the transfer syntax is fuzzer-chosen
too. `Part10Writer.commit` must either store a file under STORAGE/study/series/sop.dcm
(whose UIDs pass the strict check and whose bytes after the file meta are exactly the
payload) or raise `StorageError`; in both cases nothing is left in .incoming and nothing
appears outside the storage root. Anything else is a bug.

Run: ``python fuzz/fuzz_store.py [libFuzzer flags] fuzz/corpus/fuzz_store``.
Replay: ``fuzz_store.one_input(data)``.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

from fuzz_reader import Tail, chunks, instrumented, provider, read_sizes, run_fuzzer

with instrumented():
    from aiodicom.app.archive.head import PREFIX_LIMIT, header_from_prefix, read_header
    from aiodicom.app.archive.storage import INCOMING_DIR, Storage, StorageError, StorageSettings
    from aiodicom.core.uids import is_valid_uid

SOP_CLASS = "1.2.840.10008.5.1.4.1.1.2"
SOP_INSTANCE = "1.2.3.4.5.6.7.8.9"
SYNTAXES = (
    "1.2.840.10008.1.2",  # implicit VR little endian
    "1.2.840.10008.1.2.1",  # explicit VR little endian
    "1.2.840.10008.1.2.2",  # explicit VR big endian
    "1.2.840.10008.1.2.1.99",  # deflated
)

_ROOT = Path(tempfile.mkdtemp(prefix="fuzz-store-", dir="/dev/shm" if os.path.isdir(
    "/dev/shm") else None))
atexit.register(shutil.rmtree, _ROOT, True)
_STORAGE = Storage(StorageSettings(root=_ROOT / "storage"))


def _clean() -> None:
    for entry in (_ROOT / "storage").iterdir():
        if entry.name == INCOMING_DIR:
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def make_input(payload: bytes, syntax: int = 1, sizes: tuple[int, ...] = ()) -> bytes:
    """The fuzzer input storing ``payload`` in syntax ``syntax`` cut at ``sizes``."""
    tail = Tail().int(syntax, 0, 255).int(len(sizes), 0, 15)
    for size in sizes:
        tail.int(size, 1, 4096)
    return tail.build(payload)


def one_input(data: bytes) -> None:
    """One fuzz case; raises AssertionError (or anything unexpected) on a bug."""
    fdp = provider(data)
    syntax = SYNTAXES[fdp.ConsumeIntInRange(0, 255) % len(SYNTAXES)]
    sizes = read_sizes(fdp, largest=4096)
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    fast = header_from_prefix(payload[:PREFIX_LIMIT], len(payload), syntax)
    if fast is not None:
        slow = read_header(io.BytesIO(payload), 0, len(payload), syntax)  # must not raise
        assert fast == slow, f"the readers differ: {fast} != {slow}"
    writer = _STORAGE.begin(
        sop_class_uid=SOP_CLASS, sop_instance_uid=SOP_INSTANCE, transfer_syntax_uid=syntax,
        source_ae_title="FUZZER",
    )
    view = memoryview(payload)
    try:
        for piece in chunks(view, sizes):  # type: ignore[arg-type]
            writer.write(piece)
        stored = writer.commit()
    except StorageError:
        stored = None
    try:
        assert not any((_ROOT / "storage" / INCOMING_DIR).iterdir()), "a temporary file is left"
        outside = [p for p in _ROOT.iterdir() if p.name != "storage"]
        assert not outside, f"something was written outside the storage root: {outside}"
        if stored is None:
            files = [p for p in (_ROOT / "storage").rglob("*.dcm")]
            assert not files, f"a failed store left files: {files}"
            return
        rel = stored.path.relative_to(_ROOT / "storage")
        assert len(rel.parts) == 3, rel
        study, series, name = rel.parts
        assert name == f"{stored.sop_instance_uid}.dcm"
        for uid in (study, series, stored.sop_instance_uid):
            assert is_valid_uid(uid), f"unsafe path component {uid!r}"
        assert stored.sop_instance_uid == SOP_INSTANCE
        data_on_disk = stored.path.read_bytes()
        assert data_on_disk[:128] == bytes(128), "the preamble is not zeroed"
        assert data_on_disk.endswith(payload), "the stored data set differs from what was sent"
    finally:
        _clean()


def main(argv: list[str]) -> None:
    run_fuzzer(argv, one_input)


if __name__ == "__main__":
    main(sys.argv)
