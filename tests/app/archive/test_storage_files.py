"""The storage tree's per-store file-system bookkeeping (app/archive/_storage_files.py):
temporary files unique and private without mkstemp, series directories checked once and
re-created when removed behind our back."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.app.archive import _storage_files, storage_checks
from aiodicom.app.archive._storage_files import KnownDirectories, TempFiles, patched_file_meta
from aiodicom.app.archive.storage import (
    DuplicatePolicy,
    Storage,
    StorageSettings,
    StoreOutcome,
    encode_file_meta,
)
from aiodicom.core.uids import is_valid_uid

from .test_storage import EXPLICIT, SERIES, STUDY, encode, make_dataset, store


def test_temp_files_are_new_private_and_distinct(tmp_path: Path) -> None:
    temps = TempFiles(tmp_path)
    made = [temps.create() for _ in range(5)]
    try:
        names = {name for _, name in made}
        assert len(names) == 5
        for fd, name in made:
            assert Path(name).parent == tmp_path and name.endswith(".part")
            assert stat.S_IMODE(os.fstat(fd).st_mode) == 0o600
            assert f"{os.getpid()}-" in Path(name).name
    finally:
        for fd, _ in made:
            os.close(fd)


def test_a_name_taken_by_an_earlier_process_is_skipped(tmp_path: Path) -> None:
    temps = TempFiles(tmp_path)
    fd, first = temps.create()
    os.close(fd)
    # the next name (counter + 1) already exists, as a crashed process with our pid left it
    taken = first.removesuffix("-1.part") + "-2.part"
    Path(taken).write_bytes(b"theirs")
    fd, second = temps.create()
    os.close(fd)
    assert second not in (first, taken)
    assert Path(taken).read_bytes() == b"theirs"


def test_known_directories_are_checked_once_and_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dirs = KnownDirectories()
    series = tmp_path / "study" / "series"
    assert dirs.ensure(series) == [tmp_path / "study", series]
    assert series.is_dir()
    assert dirs.ensure(series) == [tmp_path / "study", series]  # not synced yet: again
    dirs.synced(series)
    shutil.rmtree(tmp_path / "study")
    assert dirs.ensure(series) == []  # known: not checked (the rename's failure re-creates)
    dirs.forget(series)
    assert dirs.ensure(series) == [tmp_path / "study", series]
    monkeypatch.setattr(_storage_files, "KNOWN_DIRECTORIES", 2)
    for name in "abc":
        dirs.ensure(tmp_path / name / "s")
    assert len(dirs._known) <= 2


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_a_series_directory_removed_between_stores_is_made_again(
        tmp_path: Path, policy: DuplicatePolicy) -> None:
    storage = Storage(StorageSettings(root=tmp_path / "store", duplicates=policy))
    data = encode(make_dataset(), EXPLICIT)
    first = store(storage, data)
    assert first.outcome is StoreOutcome.STORED
    shutil.rmtree(tmp_path / "store" / STUDY)  # an operator cleaned up meanwhile
    again = store(storage, data)
    assert again.outcome is StoreOutcome.STORED
    assert again.path == tmp_path / "store" / STUDY / SERIES / again.path.name
    assert again.path.read_bytes()[128:132] == b"DICM"
    assert os.listdir(tmp_path / "store" / ".incoming") == []


def test_fsync_covers_the_directories_a_store_created(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from aiodicom.app.archive import storage as storage_module

    synced: list[Path] = []
    monkeypatch.setattr(storage_module, "_fsync_dir", synced.append)
    storage = Storage(StorageSettings(root=tmp_path / "store", fsync=True))
    data = encode(make_dataset(), EXPLICIT)
    store(storage, data)
    root = tmp_path / "store"
    assert synced == [root / STUDY / SERIES, root, root / STUDY]  # new dirs' parents too
    synced.clear()
    store(storage, data)  # a duplicate, replaced
    assert synced == [root / STUDY / SERIES]  # nothing created: only the file's directory


_COMPONENT = st.one_of(st.just("0"), st.from_regex(r"[1-9][0-9]{0,9}", fullmatch=True))
_UIDS = st.lists(_COMPONENT, min_size=1, max_size=12).map(
    lambda parts: ".".join(parts)[:64].rstrip(".") or "1").filter(is_valid_uid)
_AES = st.from_regex(r"[A-Z0-9_]{1,16}", fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(sop_class=_UIDS, instance=_UIDS, syntax=_UIDS, source=_AES, receiving=_AES)
def test_patched_file_meta_is_what_the_encoder_makes(
        sop_class: str, instance: str, syntax: str, source: str, receiving: str) -> None:
    values = {"sop_class_uid": sop_class, "sop_instance_uid": instance,
              "transfer_syntax_uid": syntax, "source_ae_title": source,
              "receiving_ae_title": receiving}
    expected = encode_file_meta(**values)
    assert patched_file_meta(encode_file_meta, **values) == expected
    other = "9" * len(instance)  # same shape, another instance: the cached template patched
    assert patched_file_meta(encode_file_meta, **{**values, "sop_instance_uid": other}) \
        == encode_file_meta(**{**values, "sop_instance_uid": other})


def test_validate_uid_remembers_only_what_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_storage_files, "_VALID_UIDS", set())
    assert _storage_files.validate_uid("1.2.3", "X") == "1.2.3"
    assert "1.2.3" in _storage_files._VALID_UIDS
    for bad in ("1.02.3", "", "1..2", 5):
        with pytest.raises(ValueError, match="X"):
            _storage_files.validate_uid(bad, "X")
        with pytest.raises(ValueError, match="X"):  # not remembered: refused again
            _storage_files.validate_uid(bad, "X")
    assert set(_storage_files._VALID_UIDS) == {"1.2.3"}
    monkeypatch.setattr(_storage_files, "KNOWN_DIRECTORIES", 2)
    for uid in ("1.1", "1.2", "1.3"):
        _storage_files.validate_uid(uid, "X")
    assert len(_storage_files._VALID_UIDS) <= 2


def test_fsync_covers_what_both_tries_created_when_the_series_vanished_in_between(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The first store of a study creates its study and series directories; the series is
    removed before the rename (which fails, ENOENT), so it is made again: the study's new
    entry in the root still needs its fsync, or a power cut can lose an acknowledged file."""
    from aiodicom.app.archive import storage as storage_module

    synced: list[Path] = []
    monkeypatch.setattr(storage_module, "_fsync_dir", synced.append)
    move = storage_module.Part10Writer._move
    tries: list[str] = []

    def vanishing(self: storage_module.Part10Writer, final: str,
                  duplicates: DuplicatePolicy) -> StoreOutcome:
        tries.append(final)
        if len(tries) == 1:
            Path(final).parent.rmdir()  # removed between the mkdir and the rename
        return move(self, final, duplicates)

    monkeypatch.setattr(storage_module.Part10Writer, "_move", vanishing)
    storage = Storage(StorageSettings(root=tmp_path / "store", fsync=True))
    stored = store(storage, encode(make_dataset(), EXPLICIT))
    root = tmp_path / "store"
    assert len(tries) == 2 and stored.path.parent == root / STUDY / SERIES
    assert root in synced and root / STUDY in synced  # the study's entry and the series'


def test_fsync_syncs_the_parents_a_failed_store_created_at_the_next_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing disk: the first store of a series makes its study and series directories,
    then its rename fails (ENOSPC) and it is refused. The next store into that series finds
    the directories but their entries were never synced: it must sync them before its
    success is sent, or a power cut loses the acknowledged file with its directory."""
    import errno

    from aiodicom.app.archive import storage as storage_module

    synced: list[Path] = []
    monkeypatch.setattr(storage_module, "_fsync_dir", synced.append)
    move = storage_module.Part10Writer._move
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def failing_once(self: storage_module.Part10Writer, final: str,
                     duplicates: DuplicatePolicy) -> StoreOutcome:
        if failures:
            raise failures.pop()
        return move(self, final, duplicates)

    monkeypatch.setattr(storage_module.Part10Writer, "_move", failing_once)
    storage = Storage(StorageSettings(root=tmp_path / "store", fsync=True))
    root = tmp_path / "store"
    with pytest.raises(storage_module.StorageError):
        store(storage, encode(make_dataset(), EXPLICIT))
    assert (root / STUDY / SERIES).is_dir() and synced == []
    other = "1.2.826.0.1.3680043.8.498.99"
    stored = store(storage, encode(make_dataset(other), EXPLICIT), sop=other)
    assert stored.path.parent == root / STUDY / SERIES
    assert root in synced and root / STUDY in synced
    synced.clear()
    third = "1.2.826.0.1.3680043.8.498.98"
    store(storage, encode(make_dataset(third), EXPLICIT), sop=third)
    assert synced == [root / STUDY / SERIES]  # synced once: not again


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writev or write that takes only part of the bytes (a signal, a nearly full file
    system) is followed by the rest: the file is the meta information and every fragment,
    byte for byte, as the encoder makes it."""
    real_writev, real_write = os.writev, os.write
    calls: list[str] = []

    def short_writev(fd: int, buffers: list[bytes | memoryview]) -> int:
        calls.append("writev")
        total = sum(len(memoryview(b)) for b in buffers)
        return real_writev(fd, [b"".join(bytes(b) for b in buffers)[:max(1, total // 3)]])

    def short_write(fd: int, data: bytes | memoryview) -> int:
        calls.append("write")
        return real_write(fd, memoryview(data)[:7])

    monkeypatch.setattr(os, "writev", short_writev)
    monkeypatch.setattr(os, "write", short_write)
    storage = Storage(StorageSettings(root=tmp_path / "store"))
    data = encode(make_dataset(), EXPLICIT)
    stored = store(storage, data, fragment=300)
    meta = encode_file_meta(sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                            sop_instance_uid=stored.sop_instance_uid,
                            transfer_syntax_uid=EXPLICIT, source_ae_title="MODALITY1",
                            receiving_ae_title="ARCHIVE")
    assert stored.path.read_bytes() == meta + data and stored.size == len(meta) + len(data)
    assert calls.count("writev") == -(-len(data) // 300) and "write" in calls
    assert os.listdir(storage.incoming) == []


@pytest.mark.parametrize("fail_at", [1, 2, 3])
def test_a_write_failing_half_way_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 fail_at: int) -> None:
    """ENOSPC on the first (meta information and first fragment), second or third write:
    the store is refused as out of resources, no temporary or final file is left, and the
    next store succeeds."""
    import errno

    from aiodicom.app.archive.storage import StorageError, StorageFailure

    real_writev = os.writev
    count = [0]

    def failing(fd: int, buffers: list[bytes | memoryview]) -> int:
        count[0] += 1
        if count[0] == fail_at:
            real_writev(fd, [bytes(memoryview(buffers[0])[:5])])  # part of it reached disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_writev(fd, buffers)

    monkeypatch.setattr(os, "writev", failing)
    storage = Storage(StorageSettings(root=tmp_path / "store"))
    data = encode(make_dataset(), EXPLICIT)
    with pytest.raises(StorageError) as caught:
        store(storage, data, fragment=len(data) // 3 + 1)
    assert caught.value.failure is StorageFailure.OUT_OF_RESOURCES
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []
    monkeypatch.setattr(os, "writev", real_writev)
    stored = store(storage, data)
    assert stored.path.read_bytes().endswith(data)


def test_temp_files_of_a_forked_worker_have_its_pid_and_token(tmp_path: Path) -> None:
    """The pid is asked once, not per file: a fork (os.register_at_fork) makes the child
    ask again and draw its own token, so its names never meet the parent's."""
    temps = TempFiles(tmp_path)
    fd, before = temps.create()
    os.close(fd)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child reports through the pipe
        try:
            fd, name = temps.create()
            os.close(fd)
            os.write(write, name.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        theirs = Path(pipe.read().decode()).name
    os.waitpid(child, 0)
    fd, after = temps.create()
    os.close(fd)
    mine = [Path(n).name.split("-") for n in (before, after)]
    assert mine[0][:2] == mine[1][:2] == [str(os.getpid()), mine[0][1]]
    assert theirs.split("-")[0] == str(child) and theirs.split("-")[1] != mine[0][1]


def test_check_request_remembers_only_what_passed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The checked class, syntax and AE titles are remembered; the instance UID is checked
    every time, errors keep their order (class before instance), and a remembered answer
    equals a fresh one (padding stripped, meta byte for byte)."""
    from aiodicom.app.archive.storage import InvalidStorageRequest, check_request

    monkeypatch.setattr(storage_checks, "_CHECKED", {})
    request = dict(sop_class_uid="1.2.840.10008.5.1.4.1.1.2\x00", sop_instance_uid="1.2.3",
                   transfer_syntax_uid=EXPLICIT, source_ae_title=" CT01 ",
                   receiving_ae_title="ARCHIVE")
    fresh = check_request(**request)
    assert len(storage_checks._CHECKED) == 1
    again = check_request(**request)
    assert again == fresh and fresh.sop_class_uid == "1.2.840.10008.5.1.4.1.1.2"
    assert fresh.source_ae_title == "CT01"
    with pytest.raises(InvalidStorageRequest, match="Affected SOP Instance UID"):
        check_request(**{**request, "sop_instance_uid": "1..2"})
    with pytest.raises(InvalidStorageRequest, match="Affected SOP Class UID"):
        check_request(**{**request, "sop_class_uid": "x", "sop_instance_uid": "1..2"})
    with pytest.raises(InvalidStorageRequest, match="receiving AE title"):
        check_request(**{**request, "receiving_ae_title": "A\\B"})
    assert len(storage_checks._CHECKED) == 1  # nothing that failed was kept
