"""The index journal: what this process acknowledged and has not indexed yet.

A C-STORE is answered once its file or object is durable; the index row is written after,
by the writer thread (index_writer). A process killed in between (SIGKILL, OOM, a crash)
would leave acknowledged instances out of the index. So, before the response, the
instance's description (what the index row is made of, one JSON line) is appended to this
process's journal file: one write(2), and fdatasync(2) too when the server fsyncs its
files (`--fsync`). A write survives the death of the process (it is in the kernel); the
fsync covers a crash of the machine. Whenever the writer has committed everything queued,
the file is emptied, so it holds at most what is in flight.

Each process has its own file, ``journal-PID-TOKEN.jsonl``, locked (flock) while it lives.
At start, a writer claims the files of processes that are gone (their lock is free:
the kernel drops it with the process), re-queues their instances (journaled again in its
own file first), then deletes them: the previous run's acknowledged instances are indexed
without an operator, and replaying one twice is harmless (an upsert). The files hold what
the index holds (patient names, IDs): mode 0600 in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import json.encoder
import logging
import math
import os
import secrets
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from aiodicom.app.archive._storage_files import write_whole
from aiodicom.app.archive.storage import StoredInstance, StoreOutcome

__all__ = ["ENV", "Journal", "claim_orphans", "default_directory", "entry", "parse_entry"]

logger = logging.getLogger(__name__)

ENV = "AIODICOM_INDEX_JOURNAL"
"""Environment variable: the directory under which journals are kept when neither the
storage nor the index is a local path (an object store with a PostgreSQL index)."""

DIRECTORY_NAME = ".index-journal"
"""The journal directory under a local storage root (hidden: rebuild skips it)."""


def default_directory(spec: str | None, storage: str | Path, key: str,
                      environ: Mapping[str, str] | None = None) -> Path:
    """Where the journals of the index ``spec`` of ``storage`` live: STORAGE/.index-journal
    for a local tree, INDEX.journal beside an SQLite index file, else a directory per
    (storage, index) under $AIODICOM_INDEX_JOURNAL, $XDG_STATE_HOME/aiodicom/index-journal
    or ~/.local/state/aiodicom/index-journal (keep it on a disk that outlives the node)."""
    env = os.environ if environ is None else environ
    location = str(storage)
    if "://" not in location:
        return Path(location) / DIRECTORY_NAME
    if spec and "://" not in spec:
        return Path(f"{spec}.journal")
    base = env.get(ENV) or str(Path(env.get("XDG_STATE_HOME")
                                    or Path.home() / ".local" / "state")
                               / "aiodicom" / "index-journal")
    digest = hashlib.sha256(f"{location}\n{key}".encode()).hexdigest()[:16]
    return Path(base) / digest


_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
"""One encoder for every line: `json.dumps` with arguments builds a new one per call."""


_STRING = json.encoder.encode_basestring_ascii  # the encoder's own (C) string quoting
"""``"..."`` of a str as the encoder writes it (ensure_ascii)."""


def entry(stored: StoredInstance) -> bytes:
    """One journal line: the instance as the index needs it.

    Built by hand, the bytes `_ENCODE` makes of `_entry_fields` (its keys in order, the
    encoder's own string quoting, `float.__repr__`/`int.__repr__` as it uses them): the
    encoder per line cost ~60,000 instructions of a small C-STORE. Values it would write
    otherwise (not a str: `_STRING` raises TypeError; an int or float subclass, a
    non-finite time) go through the encoder; tests hold both equal byte for byte."""
    received, size = stored.received_at, stored.size
    if type(received) is not float or not math.isfinite(received) or type(size) is not int:
        return _ENCODE(_entry_fields(stored)).encode() + b"\n"
    try:
        pairs = ",".join([f"{_STRING(k)}:{_STRING(v)}" for k, v in stored.attributes.items()])
        line = (f'{{"path":{_STRING(str(stored.path))},'
                f'"sop_class_uid":{_STRING(stored.sop_class_uid)},'
                f'"sop_instance_uid":{_STRING(stored.sop_instance_uid)},'
                f'"transfer_syntax_uid":{_STRING(stored.transfer_syntax_uid)},'
                f'"study_instance_uid":{_STRING(stored.study_instance_uid)},'
                f'"series_instance_uid":{_STRING(stored.series_instance_uid)},'
                f'"size":{size!r},"source_ae_title":{_STRING(stored.source_ae_title)},'
                f'"received_at":{received!r},"outcome":{_STRING(stored.outcome.value)},'
                f'"attributes":{{{pairs}}}}}\n')
    except TypeError:
        return _ENCODE(_entry_fields(stored)).encode() + b"\n"
    return line.encode("ascii")


def _entry_fields(stored: StoredInstance) -> dict[str, Any]:
    """The journal line's object, as `_ENCODE` takes it."""
    return {
        "path": str(stored.path), "sop_class_uid": stored.sop_class_uid,
        "sop_instance_uid": stored.sop_instance_uid,
        "transfer_syntax_uid": stored.transfer_syntax_uid,
        "study_instance_uid": stored.study_instance_uid,
        "series_instance_uid": stored.series_instance_uid, "size": stored.size,
        "source_ae_title": stored.source_ae_title, "received_at": stored.received_at,
        "outcome": stored.outcome.value, "attributes": dict(stored.attributes),
    }


def parse_entry(line: bytes) -> StoredInstance:
    """The instance of a journal line; ValueError (KeyError, TypeError) if malformed."""
    data: dict[str, Any] = json.loads(line)
    attributes = data["attributes"]
    if not isinstance(attributes, dict):
        raise TypeError("attributes is not an object")
    return StoredInstance(
        path=Path(str(data["path"])), sop_class_uid=str(data["sop_class_uid"]),
        sop_instance_uid=str(data["sop_instance_uid"]),
        transfer_syntax_uid=str(data["transfer_syntax_uid"]),
        study_instance_uid=str(data["study_instance_uid"]),
        series_instance_uid=str(data["series_instance_uid"]), size=int(data["size"]),
        source_ae_title=str(data["source_ae_title"]),
        received_at=float(data["received_at"]), outcome=StoreOutcome(data["outcome"]),
        attributes={str(k): str(v) for k, v in attributes.items()})


def _make_directory(directory: Path) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)


def _sync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _same_file(fd: int, path: Path) -> bool:
    """True while ``path`` still names the open file ``fd`` (not deleted meanwhile)."""
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class Journal:
    """This process's journal file in ``directory`` (created at the first `append`)."""

    def __init__(self, directory: Path, *, fsync: bool = False) -> None:
        self.directory = Path(directory)
        self.fsync = fsync
        self.path: Path | None = None
        self._fd: int | None = None
        self._torn = False
        """An append failed part way: the next entry starts on a line of its own."""

    def _open(self) -> int:
        _make_directory(self.directory)
        while True:
            path = self.directory / f"journal-{os.getpid()}-{secrets.token_hex(4)}.jsonl"
            try:  # O_EXCL: a name we hold already would have us wait on our own lock
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_EXCL
                             | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # new and ours: a claimer may hold it briefly
                if _same_file(fd, path):  # a starting writer took it for an orphan: again
                    self.path, self._fd = path, fd
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def append(self, line: bytes) -> None:
        """Add one `entry`; durable against the process's death when this returns (and
        against the machine's with ``fsync``). OSError if the disk refuses it."""
        fd = self._fd if self._fd is not None else self._open()
        if self._torn:  # after part of a line: this entry must not join it (skipped)
            line = b"\n" + line
        self._torn = True  # until the whole line is written
        write_whole(fd, line)
        self._torn = False
        if self.fsync:
            os.fdatasync(fd)

    def clear(self, keep: Iterable[bytes] = ()) -> None:
        """Drop the entries that are indexed; ``keep`` the ones that are not.

        Nothing to keep: the file is emptied in place. Else ``keep`` goes into a new journal
        file first and the old one is removed after, so a process killed in between leaves
        both (replays are harmless), never neither. OSError, with the old file still in
        use and whole, if the new one cannot be written.
        """
        if self._fd is None:
            return
        lines = list(keep)
        if not lines:
            os.ftruncate(self._fd, 0)
            return
        old_fd, old_path = self._fd, self.path
        self._fd = self.path = None
        try:
            # One write and one sync for them all: the old file is whole until this is done.
            fd = self._open()
            write_whole(fd, b"".join(lines))
            if self.fsync:  # the new file's content and name, before the old one goes
                os.fdatasync(fd)
                _sync_directory(self.directory)
        except OSError:
            new_fd, new_path = self._fd, self.path
            self._fd, self.path = old_fd, old_path  # the old one, whole, stays in use
            if new_fd is not None:
                with contextlib.suppress(OSError):
                    if new_path is not None:
                        os.unlink(new_path)
                with contextlib.suppress(OSError):
                    os.close(new_fd)
            raise
        self._torn = False
        with contextlib.suppress(OSError):  # left behind, it is replayed: harmless
            if old_path is not None:
                os.unlink(old_path)
        with contextlib.suppress(OSError):
            os.close(old_fd)

    def close(self) -> None:
        """Close the file; deleted if empty (else the next start replays it)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            if os.fstat(fd).st_size == 0 and self.path is not None:
                os.unlink(self.path)
        os.close(fd)


def claim_orphans(directory: Path, own: Path | None = None
                  ) -> Iterator[tuple[Path, list[StoredInstance]]]:
    """The journals in ``directory`` whose process is gone, each with its instances; the
    file stays locked until the caller asks for the next one, then it is deleted (so the
    caller journals the instances again before that). A torn last line (the process died
    mid-write: its C-STORE was not answered) and malformed lines are skipped, logged."""
    try:
        names = sorted(directory.glob("journal-*.jsonl"))
    except OSError:
        return
    for path in names:
        if path == own:
            continue
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a live process's journal
            if not _same_file(fd, path):
                continue  # claimed and deleted by another process meanwhile
            with os.fdopen(os.dup(fd), "rb") as fp:
                lines = fp.read().split(b"\n")
            instances = []
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    instances.append(parse_entry(line))
                except (ValueError, KeyError, TypeError) as exc:
                    logger.warning("index journal %s line %d skipped (%s)", path, number, exc)
            yield path, instances
            os.unlink(path)
        finally:
            os.close(fd)
