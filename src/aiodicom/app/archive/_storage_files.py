"""The local storage tree's file-system bookkeeping per store, kept to the system calls needed.

`TempFiles` names the temporary file of each C-STORE in .incoming: opened exclusively,
mode 0600 (as `tempfile.mkstemp`), but named by process, a token drawn once per process
and a counter, so unique across workers without mkstemp's random name per file.
`KnownDirectories` remembers the series directories that exist, so a store into one makes
no `stat` or `mkdir`; one removed meanwhile is re-created when the rename into it fails.
"""

from __future__ import annotations

import errno
import functools
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from aiodicom.core.uids import validate_uid as _validate_uid

__all__ = ["KNOWN_DIRECTORIES", "KnownDirectories", "TempFiles", "patched_file_meta",
           "validate_uid", "write_all", "write_whole"]

KNOWN_DIRECTORIES = 4096
"""Series directories remembered at most (then forgotten all at once)."""

_FLAGS = (os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
          | getattr(os, "O_CLOEXEC", 0))


_FORKS = [0]
"""Forks into this process seen: a forked worker draws its own token (no getpid syscall
per file to notice it; without `os.register_at_fork`, the pid is asked each time)."""
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=lambda: _FORKS.__setitem__(0, _FORKS[0] + 1))
else:  # pragma: no cover - POSIX has it
    _FORKS = None  # type: ignore[assignment]


class TempFiles:
    """Creates the temporary files of one directory (see the module docstring)."""

    def __init__(self, directory: Path) -> None:
        self._prefix = f"{directory}{os.sep}"
        self._pid = 0
        self._forks = -1
        self._token = ""
        self._count = 0

    def create(self) -> tuple[int, str]:
        """(descriptor, path) of a new empty file; OSError if it cannot be made."""
        if _FORKS is None or self._forks != _FORKS[0]:
            pid = os.getpid()
            if self._pid != pid:  # first use, or a forked worker: a token of its own
                self._pid, self._token = pid, secrets.token_hex(4)
            self._forks = _FORKS[0] if _FORKS is not None else -1
        pid = self._pid
        while True:
            self._count += 1
            name = f"{self._prefix}{pid}-{self._token}-{self._count}.part"
            try:
                return os.open(name, _FLAGS, 0o600), name
            except FileExistsError:  # left by an earlier process with our pid and token
                continue


def write_all(fd: int, buffers: list[bytes | memoryview]) -> None:
    """Write ``buffers`` (bytes or byte views) to ``fd`` in order, whole: one writev,
    then, after a short write (a signal, a file system near full), the rest piece by
    piece until done or an OSError."""
    written = os.writev(fd, buffers)
    for buffer in buffers:
        view = memoryview(buffer)
        if written >= len(view):
            written -= len(view)
            continue
        write_whole(fd, view[written:])
        written = 0


def write_whole(fd: int, data: bytes | memoryview) -> None:
    """Write ``data`` to ``fd`` whole, in as many writes as the file system takes, or raise
    OSError (also when a write takes nothing without an error: retrying would spin)."""
    view = memoryview(data)
    while view:
        taken = os.write(fd, view)
        if taken == 0:
            raise OSError(errno.EIO, "the file system wrote nothing (write returned 0)")
        view = view[taken:]


class KnownDirectories:
    """Series directories known to exist (see the module docstring), and those created
    whose entries no store has synced yet (its rename or fsync failed): the next store
    into one syncs them, or a power cut could take its acknowledged file along."""

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._unsynced: dict[str, Path] = {}
        """Directories made whose entry in their parent no store has synced yet, by name:
        whichever store next goes into one or its subdirectory syncs it (not only a store
        into the series that made it; one made before a failed mkdir too)."""

    def ensure(self, directory: Path | str) -> list[Path]:
        """Make ``directory`` exist; returns those created (its parent, itself) and not yet
        `synced`, whose parents a durable store must fsync. Nothing is checked for one
        seen before."""
        key = str(directory)
        if key in self._known:
            return self._pending(key) if self._unsynced else []
        path = Path(directory)
        created = [(name, d) for name, d in ((os.path.dirname(key), path.parent), (key, path))
                   if not d.is_dir()]
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:  # the parent may be made already: the next store syncs its entry
            self._note([(name, d) for name, d in created if d.is_dir()])
            raise
        if len(self._known) >= KNOWN_DIRECTORIES:
            self._known.clear()
        self._known.add(key)
        self._note(created)
        return self._pending(key) if self._unsynced else []

    def _note(self, created: list[tuple[str, Path]]) -> None:
        if created:
            if len(self._unsynced) >= KNOWN_DIRECTORIES:
                self._unsynced.clear()
            self._unsynced.update(created)

    def _pending(self, key: str) -> list[Path]:
        """The unsynced among ``key``'s parent and itself (names as `ensure` was given them:
        string operations only, for every store while any is pending)."""
        unsynced = self._unsynced
        return [d for d in (unsynced.get(os.path.dirname(key)), unsynced.get(key))
                if d is not None]

    def synced(self, directory: Path | str) -> None:
        """A store into ``directory`` synced the parents `ensure` returned."""
        if self._unsynced:
            key = str(directory)
            self._unsynced.pop(os.path.dirname(key), None)
            self._unsynced.pop(key, None)

    def forget(self, directory: Path | str) -> None:
        self._known.discard(str(directory))


_INSTANCE_HEADER = b"\x02\x00\x03\x00UI"  # (0002,0003) Media Storage SOP Instance UID


@functools.lru_cache(maxsize=256)
def _meta_template(encode: Callable[..., bytes], sop_class_uid: str, instance_length: int,
                   transfer_syntax_uid: str, source_ae_title: str,
                   receiving_ae_title: str) -> tuple[bytes, int]:
    wire = encode(sop_class_uid=sop_class_uid, sop_instance_uid="1" * instance_length,
                  transfer_syntax_uid=transfer_syntax_uid, source_ae_title=source_ae_title,
                  receiving_ae_title=receiving_ae_title)
    return wire, wire.index(_INSTANCE_HEADER) + len(_INSTANCE_HEADER) + 2


def patched_file_meta(encode: Callable[..., bytes], *, sop_class_uid: str,
                      sop_instance_uid: str, transfer_syntax_uid: str, source_ae_title: str,
                      receiving_ae_title: str) -> bytes:
    """What ``encode`` (`storage.encode_file_meta`) makes of these values, built once per
    (class, instance UID length, syntax, AE titles) and the instance UID patched in: only
    it varies from store to store. The caller has validated every value (an invalid one
    would be refused by ``encode``, never patched in); tests/app/archive/
    test_storage_files.py holds the two byte for byte equal."""
    wire, at = _meta_template(encode, sop_class_uid, len(sop_instance_uid),
                              transfer_syntax_uid, source_ae_title, receiving_ae_title)
    meta = bytearray(wire)
    meta[at:at + len(sop_instance_uid)] = sop_instance_uid.encode("ascii")
    return bytes(meta)


_VALID_UIDS: set[str] = set()


def validate_uid(value: object, what: str) -> str:
    """`aiodicom.core.uids.validate_uid`, remembering the values that passed: a store
    checks its class, syntax, study and series UIDs several times and they repeat from
    store to store (a bounded set, forgotten all at once)."""
    if value in _VALID_UIDS:
        return str(value)  # only str values are ever added
    checked = _validate_uid(value, what)
    if len(_VALID_UIDS) >= KNOWN_DIRECTORIES:
        _VALID_UIDS.clear()
    _VALID_UIDS.add(checked)
    return checked
