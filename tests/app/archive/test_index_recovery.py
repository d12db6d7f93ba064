"""What the index may lack after a crash comes back without an operator (issue 14 item 6):
the journal of acknowledged-but-unindexed instances is replayed at the next start (SQLite
and PostgreSQL), `aiodicom index rebuild az://...` rebuilds from the object store, and a
KEPT_EXISTING duplicate of an object the index lacks is indexed from the object."""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiodicom.app.archive import index_writer
from aiodicom.app.archive.index import Index
from aiodicom.app.archive.index_journal import Journal, claim_orphans, entry, parse_entry
from aiodicom.app.archive.index_objects import object_reader
from aiodicom.app.archive.storage import Storage, StoreOutcome
from aiodicom.app.objstore import open_store
from tests.conftest import write_ct
from tests.services.azurite import AzuriteServer

from .test_index import populate, storage  # noqa: F401 - fixture

AIODICOM = str(Path(sys.executable).with_name("aiodicom"))

# A server process as far as the index is concerned: its index writes never finish (the
# window between the C-STORE response and the index commit, held open), every instance is
# submitted as the store handler does before answering, then it says so and is killed.
_CHILD = textwrap.dedent("""
    import sys, threading
    from pathlib import Path
    from aiodicom.app.archive.index import read_stored_file
    from aiodicom.app.archive.index_writer import writer_for_index
    spec, root = sys.argv[1] or None, sys.argv[2]
    writer = writer_for_index(spec, root)
    writer.index.add_many = lambda instances: threading.Event().wait()
    files = sorted(p for p in Path(root).rglob("*.dcm") if ".index-journal" not in p.parts)
    for path in files:
        writer.submit(read_stored_file(path))
    print(f"acknowledged {len(files)}", flush=True)
    threading.Event().wait()
""")


@pytest.fixture
def fresh_writers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's writers start empty and are closed after the test."""
    monkeypatch.setattr(index_writer, "_writers", {})
    yield
    for writer in index_writer._writers.values():
        writer.close(timeout=10)
        writer.index.close()


def _acknowledge_then_die(spec: str | None, root: Path) -> int:
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, spec or "", str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = ""
    with proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            if line.startswith("acknowledged"):
                proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None and not line.startswith("acknowledged"):
                proc.kill()
            _, err = proc.communicate(timeout=30)
    assert line.startswith("acknowledged"), line + err
    assert proc.returncode == -signal.SIGKILL
    return int(line.split()[1])


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_killed_writers_acknowledged_instances_are_indexed_at_restart(
        storage: Storage, backend: str, request: pytest.FixtureRequest,  # noqa: F811
        fresh_writers: None) -> None:
    stored = populate(storage)  # files in place, acknowledged, nothing indexed
    spec = None
    if backend == "postgresql":
        spec = str(request.getfixturevalue("postgres").create_database(
            f"recover_{uuid.uuid4().hex[:12]}"))
    assert _acknowledge_then_die(spec, storage.root) == len(stored)
    journals = list((storage.root / ".index-journal").glob("journal-*.jsonl"))
    assert len(journals) == 1 and journals[0].stat().st_mode & 0o777 == 0o600
    with index_writer.open_index(spec, storage.root) as before:
        assert before.count() == 0  # the killed process indexed nothing

    writer = index_writer.writer_for_index(spec, storage.root)  # the node starts again
    writer.flush(timeout=30)
    assert writer.index.count() == len(stored)
    assert sorted(r["SOPInstanceUID"] for r in writer.index.query("IMAGE")) == sorted(
        s.sop_instance_uid for s in stored)
    assert not journals[0].exists()  # claimed and replayed once
    assert writer.journal is not None and writer.journal.path is not None
    assert writer.journal.path.stat().st_size == 0  # caught up: its own journal is empty


def test_a_live_processes_journal_is_not_claimed(tmp_path: Path,
                                                 storage: Storage) -> None:  # noqa: F811
    live = Journal(tmp_path)
    stored = populate(storage)
    live.append(entry(stored[0]))
    assert list(claim_orphans(tmp_path)) == []  # its lock is held
    assert live.path is not None and live.path.exists()
    live.close()  # not empty: left for the next start
    claimed = [(path, instances) for path, instances in claim_orphans(tmp_path)]
    assert [len(instances) for _, instances in claimed] == [1]
    assert claimed[0][1][0] == stored[0]
    assert not live.path.exists()


def test_torn_and_bad_lines_are_skipped(tmp_path: Path, storage: Storage,  # noqa: F811
                                        caplog: pytest.LogCaptureFixture) -> None:
    stored = populate(storage)[:2]
    path = tmp_path / "journal-1-dead.jsonl"
    path.write_bytes(entry(stored[0]) + b'{"path": 3}\n' + entry(stored[1])[:40])
    [(found, instances)] = list(claim_orphans(tmp_path))
    assert found == path and instances == [stored[0]]
    assert "line 2 skipped" in caplog.text and "line 3 skipped" in caplog.text
    with pytest.raises(ValueError):
        parse_entry(b"not json")


def test_clear_keeps_what_the_index_was_unavailable_for(tmp_path: Path,
                                                        storage: Storage) -> None:  # noqa: F811
    stored = populate(storage)
    journal = Journal(tmp_path, fsync=True)
    for each in stored:
        journal.append(entry(each))
    journal.clear([entry(stored[0])])
    assert journal.path is not None
    assert [parse_entry(line) for line in journal.path.read_bytes().splitlines()] == [stored[0]]
    journal.clear()
    journal.close()
    assert not journal.path.exists()  # empty at a clean close: removed


def test_clear_never_leaves_the_kept_entries_nowhere(tmp_path: Path, storage: Storage,  # noqa: F811
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept entries go into a new file before the old one is removed: a disk that fails
    the new file leaves the old one whole and in use (it was truncated first before)."""
    stored = populate(storage)
    journal = Journal(tmp_path)
    for each in stored:
        journal.append(entry(each))
    old = journal.path
    assert old is not None
    real_write = os.write

    def full_disk(fd: int, data: Any) -> int:
        if fd != journal._fd or journal.path == old:
            return real_write(fd, data)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError):
        journal.clear([entry(stored[0])])
    monkeypatch.setattr(os, "write", real_write)
    assert journal.path == old and sorted(tmp_path.glob("journal-*")) == [old]
    assert [parse_entry(line) for line in old.read_bytes().splitlines()] == stored
    journal.append(entry(stored[1]))  # still the journal in use
    journal.clear([entry(stored[1])])
    assert journal.path is not None and journal.path != old and not old.exists()
    assert sorted(tmp_path.glob("journal-*")) == [journal.path]
    assert [parse_entry(line) for line in journal.path.read_bytes().splitlines()] == [stored[1]]
    assert list(claim_orphans(tmp_path)) == []  # the new file is locked: ours
    journal.close()


def test_a_new_journal_name_never_reuses_the_one_in_use(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """clear(keep) opens a new file: a repeated random name must not reopen (and wait on the
    lock of) the file this process holds; it takes another name."""
    from aiodicom.app.archive import index_journal

    tokens = iter(["aaaaaaaa", "aaaaaaaa", "bbbbbbbb"])
    monkeypatch.setattr(index_journal.secrets, "token_hex", lambda n: next(tokens))
    journal = Journal(tmp_path)
    journal.append(b'{"a": 1}\n')
    assert journal.path is not None and journal.path.name.endswith("-aaaaaaaa.jsonl")
    journal.clear([b'{"a": 1}\n'])
    assert journal.path.name.endswith("-bbbbbbbb.jsonl")
    assert sorted(p.name for p in tmp_path.glob("journal-*")) == [journal.path.name]
    journal.close()


def _blob_env(azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"rb{uuid.uuid4().hex[:10]}"
    azurite.create_container(name)
    for key, value in azurite.env().items():
        monkeypatch.setenv(key, value)
    return name


def _ct_bytes(tmp_path: Path, n: int, patient: str | None = None) -> tuple[str, bytes]:
    sop = f"1.2.3.4.{n}"
    path = write_ct(tmp_path / f"{n}-{patient}.dcm", size=512, study_uid="1.2.3",
                    series_uid=f"1.2.3.{1 + n % 2}", sop_instance_uid=sop)
    if patient is not None:
        import pydicom

        ds = pydicom.dcmread(path)
        ds.PatientName = patient
        ds.save_as(path, enforce_file_format=True)
    return sop, path.read_bytes()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_cli_rebuilds_from_azure_blob(tmp_path: Path, azurite: AzuriteServer, backend: str,
                                      monkeypatch: pytest.MonkeyPatch,
                                      request: pytest.FixtureRequest) -> None:
    container = _blob_env(azurite, monkeypatch)
    sops = []
    for n in range(1, 6):
        sop, data = _ct_bytes(tmp_path, n)
        azurite.put_blob(container, f"site/1.2.3/1.2.3.{1 + n % 2}/{sop}.dcm", data)
        sops.append(sop)
    azurite.put_blob(container, "site/1.2.3/1.2.3.1/junk.dcm", b"not dicom at all")
    azurite.put_blob(container, "site/readme.txt", b"ignored: not an instance key")
    azurite.put_blob(container, "other/1.2.3/1.2.3.1/1.2.3.4.99.dcm", _ct_bytes(tmp_path, 99)[1])
    spec = str(tmp_path / "index.sqlite")
    if backend == "postgresql":
        spec = str(request.getfixturevalue("postgres").create_database(
            f"rebuild_{uuid.uuid4().hex[:12]}"))
    with index_writer.open_index(spec, f"az://{container}/site") as index:  # a stale row
        index.add(dataclasses.replace(_stale(tmp_path), path=Path("site/gone.dcm")))
    result = subprocess.run([AIODICOM, "index", "rebuild", f"az://{container}/site",
                             "--index", spec], capture_output=True, text=True, timeout=120,
                            check=False, env=os.environ.copy())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "indexed 5 instance(s)" in result.stdout
    assert "junk.dcm is not a usable DICOM Part 10 file" in result.stderr
    with index_writer.open_index(spec, f"az://{container}/site") as index:
        rows = index.query("IMAGE")
        assert sorted(r["SOPInstanceUID"] for r in rows) == sorted(sops)  # stale one pruned
        assert {r["path"] for r in rows} == {
            f"site/1.2.3/1.2.3.{1 + int(s.rsplit('.', 1)[1]) % 2}/{s}.dcm" for s in sops}
        assert all(int(r["size"]) > 512 for r in rows)


def _stale(tmp_path: Path) -> Any:
    from aiodicom.app.archive.index import read_stored_file

    path = write_ct(tmp_path / "stale.dcm", size=64, study_uid="1.2.9",
                    series_uid="1.2.9.1", sop_instance_uid="1.2.9.1.1")
    return read_stored_file(path)


def test_cli_rebuild_from_a_store_needs_index_and_reports_store_failure(
        tmp_path: Path, azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in azurite.env().items():
        monkeypatch.setenv(key, value)
    run = [AIODICOM, "index", "rebuild", "az://no-such-container/site"]
    result = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode != 0 and "needs --index" in result.stderr
    result = subprocess.run([*run, "--index", str(tmp_path / "i.sqlite")], capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "the object store failed, nothing was pruned" in result.stderr


def test_kept_existing_object_the_index_lacks_is_read_from_the_store(
        tmp_path: Path, azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    container = _blob_env(azurite, monkeypatch)
    sop, data = _ct_bytes(tmp_path, 7, "Kept^Original")
    key = f"site/1.2.3/1.2.3.2/{sop}.dcm"
    azurite.put_blob(container, key, data)
    _, duplicate = _ct_bytes(tmp_path, 7, "Duplicate^Received")
    received = dataclasses.replace(_describe_bytes(tmp_path, duplicate), path=Path(key),
                                   outcome=StoreOutcome.KEPT_EXISTING)
    with Index(tmp_path / "index.sqlite") as index:
        index.read_kept = object_reader(lambda: open_store(f"az://{container}/site")[0])
        index.add_many([received])  # before: read_stored_file(key) on a local path failed
        [row] = index.query("IMAGE", {"SOPInstanceUID": sop}, ())
        assert row["path"] == key and row["size"] == str(len(data))
        [patient] = index.query("PATIENT")
        assert patient["PatientName"] == "Kept^Original"  # the object's, not the duplicate's


def _describe_bytes(tmp_path: Path, data: bytes) -> Any:
    from aiodicom.app.archive.index import read_stored_file

    path = tmp_path / "described.dcm"
    path.write_bytes(data)
    return read_stored_file(path)


def test_lock_is_per_process_file(tmp_path: Path) -> None:
    """The claim relies on flock: a second open file description cannot take a held lock."""
    journal = Journal(tmp_path)
    journal.append(b"{}\n")
    assert journal.path is not None
    fd = os.open(journal.path, os.O_RDONLY)
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    finally:
        os.close(fd)
        journal.close()
