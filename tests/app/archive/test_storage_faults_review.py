"""Hostile review of the C-STORE write path (Part10Writer on a raw descriptor, write_all):
a failing or deviating file system gets a clear refusal, never a hang or a partial file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiodicom.app.archive.storage import Storage, StorageError, StorageFailure, StorageSettings

from .test_storage import EXPLICIT, encode, make_dataset, store


def test_a_write_that_takes_nothing_is_refused_not_retried_forever(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """writev and write returning 0 for a non-empty buffer (a deviating file system, FUSE):
    write_all retried forever and hung the event loop; now the store is refused as an I/O
    error and nothing is left."""
    calls = [0]

    def nothing(fd: int, data: bytes | memoryview) -> int:
        calls[0] += 1
        if calls[0] > 1000:
            raise AssertionError("write_all keeps retrying a write that returns 0")
        return 0

    monkeypatch.setattr(os, "writev", lambda fd, buffers: 0)
    monkeypatch.setattr(os, "write", nothing)
    storage = Storage(StorageSettings(root=tmp_path / "store"))
    with pytest.raises(StorageError, match="wrote nothing") as caught:
        store(storage, encode(make_dataset(), EXPLICIT))
    assert caught.value.failure is StorageFailure.IO_ERROR
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []


def _synced_dirs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    from aiodicom.app.archive import storage as storage_module

    synced: list[Path] = []
    monkeypatch.setattr(storage_module, "_fsync_dir", synced.append)
    return synced


def test_a_study_directory_left_by_a_failed_mkdir_is_synced_by_the_next_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--fsync, a failing disk: the first store of a study creates the study directory, then
    making the series directory fails (ENOSPC) and the store is refused. The next store
    into that series found the study existing and synced only the study directory (for the
    series entry), never the root: the study's entry, and the acknowledged file with it,
    could be lost on power loss. Now the root is synced before that success."""
    import errno

    from .test_storage import SERIES, STUDY

    synced = _synced_dirs(monkeypatch)
    root = tmp_path / "store"
    real_mkdir = os.mkdir
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def mkdir(path: str | Path, mode: int = 0o777) -> None:
        if Path(path) == root / STUDY / SERIES and (root / STUDY).is_dir() and failures:
            raise failures.pop()
        real_mkdir(path, mode)

    monkeypatch.setattr(os, "mkdir", mkdir)
    storage = Storage(StorageSettings(root=root, fsync=True))
    with pytest.raises(StorageError) as caught:
        store(storage, encode(make_dataset(), EXPLICIT))
    assert caught.value.failure is StorageFailure.OUT_OF_RESOURCES
    assert (root / STUDY).is_dir() and not (root / STUDY / SERIES).exists() and synced == []
    stored = store(storage, encode(make_dataset(), EXPLICIT))
    assert stored.path.parent == root / STUDY / SERIES
    assert root in synced and root / STUDY in synced


def test_a_study_directory_a_failed_store_made_is_synced_by_a_store_into_another_series(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--fsync: a store creates its study and series directories and its rename fails
    (ENOSPC). The next store goes to another series of that study: its directories were
    remembered as unsynced for the first series only, so the root was never synced and
    the study's entry could be lost with the acknowledged file. Now it is synced."""
    import errno

    from aiodicom.app.archive import storage as storage_module

    from .test_storage import STUDY

    synced = _synced_dirs(monkeypatch)
    root = tmp_path / "store"
    move = storage_module.Part10Writer._move
    failures = [OSError(errno.ENOSPC, "No space left on device")]

    def failing_once(self: storage_module.Part10Writer, final: str,
                     duplicates: storage_module.DuplicatePolicy) -> storage_module.StoreOutcome:
        if failures:
            raise failures.pop()
        return move(self, final, duplicates)

    monkeypatch.setattr(storage_module.Part10Writer, "_move", failing_once)
    storage = Storage(StorageSettings(root=root, fsync=True))
    with pytest.raises(StorageError):
        store(storage, encode(make_dataset(), EXPLICIT))
    assert synced == []
    other_series = "1.2.826.0.1.3680043.2.1125.1.33"
    other = "1.2.826.0.1.3680043.2.1125.1.44"
    stored = store(storage, encode(make_dataset(other, SeriesInstanceUID=other_series),
                                   EXPLICIT), sop=other)
    assert stored.path.parent == root / STUDY / other_series
    assert root in synced and root / STUDY in synced


@pytest.mark.parametrize("policy", ["reject", "keep"])
def test_a_refused_store_leaves_no_new_file_when_the_directory_sync_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, policy: str) -> None:
    """--fsync with REJECT or KEEP: the file was linked into place, then the directory's
    fsync failed (EIO) and the store was refused with "nothing was stored", but the new
    file stayed visible (and never indexed): under REJECT the peer's retry was refused as a
    duplicate of it, for ever. Now the link this store made is removed before the refusal,
    and the retry is stored."""
    import errno

    from aiodicom.app.archive import storage as storage_module
    from aiodicom.app.archive.storage import DuplicatePolicy, StoreOutcome

    real = storage_module._fsync_dir
    failures = [OSError(errno.EIO, "Input/output error")]

    def failing_once(directory: Path) -> None:
        if failures:
            raise failures.pop()
        real(directory)

    monkeypatch.setattr(storage_module, "_fsync_dir", failing_once)
    root = tmp_path / "store"
    storage = Storage(StorageSettings(root=root, fsync=True,
                                      duplicates=DuplicatePolicy(policy)))
    data = encode(make_dataset(), EXPLICIT)
    with pytest.raises(StorageError, match="nothing was stored") as caught:
        store(storage, data)
    assert caught.value.failure is StorageFailure.IO_ERROR
    assert [p for p in root.rglob("*") if p.is_file()] == []
    assert store(storage, data).outcome is StoreOutcome.STORED


def test_an_abandoned_writer_closes_its_descriptor(tmp_path: Path) -> None:
    """A writer dropped without commit or abort (a handler that forgot the context manager)
    kept its raw descriptor open for ever since 802a9df; the buffered file object before it
    closed the descriptor when collected. Now the writer does."""
    import gc

    from .test_storage import CT, SOP

    storage = Storage(StorageSettings(root=tmp_path / "store"))
    writer = storage.begin(sop_class_uid=CT, sop_instance_uid=SOP, transfer_syntax_uid=EXPLICIT,
                           source_ae_title="MODALITY1", receiving_ae_title="ARCHIVE")
    writer.write(encode(make_dataset(), EXPLICIT)[:100])
    inode = writer.temp_path.stat().st_ino
    fd = writer._fd
    del writer
    gc.collect()
    try:
        still = os.fstat(fd).st_ino == inode
    except OSError:
        still = False
    assert not still, "the abandoned writer's descriptor is still open"


def test_a_failed_write_on_a_disk_gone_read_only_is_still_a_clear_refusal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failing disk remounted read-only (errors=remount-ro): the write fails (EIO) and
    removing the temporary file fails too (EROFS). That second error escaped as a bare
    OSError, replacing the store's refusal (a handler traceback, no C-STORE failure reason);
    now the store is refused with the write's error and the temporary file is left for
    purge_incoming."""
    import errno

    def failing(fd: int, buffers: list[bytes | memoryview]) -> int:
        raise OSError(errno.EIO, "Input/output error")

    def read_only(path: str | Path) -> None:
        raise OSError(errno.EROFS, "Read-only file system")

    storage = Storage(StorageSettings(root=tmp_path / "store"))
    monkeypatch.setattr(os, "writev", failing)
    monkeypatch.setattr(os, "unlink", read_only)
    with pytest.raises(StorageError, match="Input/output error") as caught:
        store(storage, encode(make_dataset(), EXPLICIT))
    assert caught.value.failure is StorageFailure.IO_ERROR
    assert not list((tmp_path / "store").rglob("*.dcm"))


def test_a_linked_file_whose_temporary_name_cannot_be_removed_is_not_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """REJECT (no-clobber link): the file is linked into place, then removing its temporary
    name fails (EIO). The store was refused ("nothing was stored") with the file visible
    and never indexed, and the peer's retry refused as a duplicate of it for ever. The
    file is placed whole: now the store succeeds and the extra name is left to
    purge_incoming."""
    import errno

    from aiodicom.app.archive.storage import DuplicatePolicy, StoreOutcome

    real_unlink = os.unlink
    failures = [OSError(errno.EIO, "Input/output error")]

    def unlink(path: str | Path) -> None:
        if str(path).endswith(".part") and failures:
            raise failures.pop()
        real_unlink(path)

    monkeypatch.setattr(os, "unlink", unlink)
    root = tmp_path / "store"
    storage = Storage(StorageSettings(root=root, duplicates=DuplicatePolicy.REJECT))
    data = encode(make_dataset(), EXPLICIT)
    stored = store(storage, data)
    assert stored.outcome is StoreOutcome.STORED and stored.path.read_bytes().endswith(data)


def test_a_replacement_whose_directory_sync_fails_does_not_claim_nothing_was_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--fsync, OVERWRITE: the new file replaced the old one, then the directory's fsync
    failed (EIO). The refusal said "nothing was stored" with the new file in place (the old
    one gone); now it says the file is in place but may not survive a power loss, and to
    send it again."""
    import errno

    from aiodicom.app.archive import storage as storage_module

    real = storage_module._fsync_dir
    failures = [OSError(errno.EIO, "Input/output error")]

    def failing_once(directory: Path) -> None:
        if failures:
            raise failures.pop()
        real(directory)

    monkeypatch.setattr(storage_module, "_fsync_dir", failing_once)
    storage = Storage(StorageSettings(root=tmp_path / "store", fsync=True))
    with pytest.raises(StorageError) as caught:
        store(storage, encode(make_dataset(), EXPLICIT))
    assert caught.value.failure is StorageFailure.IO_ERROR
    assert list((tmp_path / "store").rglob("*.dcm"))  # in place
    message = str(caught.value)
    assert "nothing was stored" not in message
    assert "Input/output error" in message and "send it again" in message


def test_stores_go_on_after_the_incoming_directory_was_removed(tmp_path: Path) -> None:
    """An operator removes ROOT/.incoming while the server runs (it looks like clutter):
    every later store was refused ("cannot create a temporary file ... No such file or
    directory") until a restart. Now it is made again, as a removed series directory is."""
    import shutil

    storage = Storage(StorageSettings(root=tmp_path / "store"))
    data = encode(make_dataset(), EXPLICIT)
    store(storage, data)
    shutil.rmtree(storage.incoming)
    stored = store(storage, data)
    assert stored.path.read_bytes().endswith(data)
    assert storage.incoming.is_dir() and os.listdir(storage.incoming) == []
