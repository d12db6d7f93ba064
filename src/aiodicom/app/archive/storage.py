"""Received C-STORE data sets written to disk as DICOM Part 10 files (PS3.10 §7).

Theory of operation: `Storage.begin` validates the command's UIDs, opens a temporary
file with a random name in ROOT/.incoming (same file system as the final tree) and
writes the preamble, "DICM" and the File Meta Information. `Part10Writer.write` appends
each received fragment (a memoryview over the receive buffer) straight to the file,
never joining them. `Part10Writer.commit` reads back only the head of the data set
(up to (0020,0013), in bounded memory, see `read_header`), checks the UIDs against the
command and PS3.5 §9.1, and renames the file atomically to
ROOT/{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm. Any failure removes
the temporary file, so nothing partial is ever visible under the final path, and path
components are only UIDs that passed `aiodicom.core.uids.is_valid_uid`.
"""

from __future__ import annotations

import enum
import errno
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from aiodicom.app.archive import _storage_files as files
from aiodicom.app.archive.head import (
    HEADER_KEYWORDS,
    PREFIX_LIMIT,
    HeaderError,
    header_from_prefix,
    read_header,
)
from aiodicom.app.archive.storage_checks import (
    CheckedRequest,
    InvalidStorageRequest,
    StorageError,
    StorageFailure,
    check_header,
    check_request,
    encode_file_meta,
    invalid_dataset,
)
from aiodicom.core.negotiation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "CheckedRequest",
    "INCOMING_DIR",
    "HEADER_KEYWORDS",
    "HeaderError",
    "DuplicatePolicy",
    "InvalidStorageRequest",
    "Part10Writer",
    "Storage",
    "StorageError",
    "StorageFailure",
    "StorageSettings",
    "StoreOutcome",
    "StoredInstance",
    "check_header",
    "check_request",
    "encode_file_meta",
    "invalid_dataset",
    "read_header",
]

INCOMING_DIR = ".incoming"
"""Temporary files live here, on the same file system as the final tree."""



class DuplicatePolicy(enum.Enum):
    """What to do when the SOP instance is already stored."""

    OVERWRITE = "overwrite"
    """Replace the stored file atomically (the default: a re-send is usually a correction)."""
    KEEP = "keep"
    """Keep the stored file, discard the new one, report success (`StoreOutcome.KEPT_EXISTING`)."""
    REJECT = "reject"
    """Keep the stored file and fail with `StorageFailure.DUPLICATE`."""


class StoreOutcome(enum.Enum):
    """What a successful commit did."""

    STORED = "stored"
    REPLACED = "replaced"
    KEPT_EXISTING = "kept existing"


@dataclass(frozen=True, slots=True, kw_only=True)
class StorageSettings:
    """Where and how to store received instances."""

    root: Path
    """ROOT of the tree ROOT/{Study}/{Series}/{SOP Instance}.dcm and of index.sqlite."""
    fsync: bool = False
    """fsync each file and its directory before reporting success (durable, slower)."""
    duplicates: DuplicatePolicy = DuplicatePolicy.OVERWRITE
    """Duplicate SOP Instance UID handling; OVERWRITE by default (see DuplicatePolicy)."""
    file_mode: int = 0o600
    """Permissions of stored files (they hold patient data: owner only by default)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredInstance:
    """A Part 10 file now visible under its final path, with what the index needs."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    study_instance_uid: str
    series_instance_uid: str
    size: int
    """File size in bytes, meta information included."""
    source_ae_title: str
    received_at: float
    """Seconds since the epoch (UTC) when committed (file mtime after a rebuild)."""
    outcome: StoreOutcome = StoreOutcome.STORED
    attributes: Mapping[str, str] = field(default_factory=dict)
    """Header attributes by DICOM keyword (`HEADER_KEYWORDS`), "" when absent."""


def _os_failure(exc: OSError) -> StorageFailure:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFailure.OUT_OF_RESOURCES
    return StorageFailure.IO_ERROR


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Storage:
    """The storage tree: ROOT/{Study}/{Series}/{SOP}.dcm, temporaries in ROOT/.incoming."""

    def __init__(self, settings: StorageSettings) -> None:
        self.settings = settings
        self.root = Path(settings.root)
        self.incoming = self.root / INCOMING_DIR
        self._root_prefix = os.path.join(self.root, "")
        self._temps = files.TempFiles(self.incoming)
        self._dirs = files.KnownDirectories()
        try:
            self.incoming.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(
                f"cannot create the storage directory {self.incoming}: {exc.strerror}; "
                "check the path and its permissions",
                failure=_os_failure(exc),
            ) from exc

    def known_directory(self, directory: Path | str) -> list[Path]:
        """Make a series directory exist; the directories created (see `KnownDirectories`)."""
        return self._dirs.ensure(directory)

    def forget_directory(self, directory: Path | str) -> None:
        self._dirs.forget(directory)

    def path_for(self, study_uid: str, series_uid: str, sop_instance_uid: str) -> Path:
        """The final path of an instance; every UID must be valid (they become names)."""
        return Path(self.names_for(study_uid, series_uid, sop_instance_uid)[1])

    def names_for(self, study_uid: str, series_uid: str, sop_instance_uid: str
                  ) -> tuple[str, str]:
        """`path_for`'s directory and path as str (a valid UID holds no separator)."""
        parent = (f"{self._root_prefix}{files.validate_uid(study_uid, 'Study Instance UID')}"
                  f"{os.sep}{files.validate_uid(series_uid, 'Series Instance UID')}")
        uid = files.validate_uid(sop_instance_uid, "SOP Instance UID")
        return parent, f"{parent}{os.sep}{uid}.dcm"

    def purge_incoming(self, older_than: float) -> int:
        """Remove temporary files left in .incoming by a crash, older than N seconds.

        Call at server start; files younger than `older_than` may belong to a live writer
        in another process. Returns how many were removed.
        """
        removed = 0
        limit = time.time() - older_than
        for entry in os.scandir(self.incoming):
            try:
                if entry.name.endswith(".part") and entry.stat().st_mtime < limit:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def begin(
        self,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        source_ae_title: str,
        receiving_ae_title: str = "AIODICOM",
    ) -> Part10Writer:
        """Start a file for one C-STORE: validate first, then write the meta information.

        The UIDs come from the C-STORE command and the presentation context; a trailing
        NUL pad is accepted. Raises `InvalidStorageRequest` (nothing written) on a bad
        UID or AE title, `StorageError` if the temporary file cannot be written.
        """
        checked = check_request(
            sop_class_uid=sop_class_uid, sop_instance_uid=sop_instance_uid,
            transfer_syntax_uid=transfer_syntax_uid, source_ae_title=source_ae_title,
            receiving_ae_title=receiving_ae_title)
        try:
            try:
                fd, name = self._temps.create()
            except FileNotFoundError:  # .incoming removed meanwhile: made again, as a series
                self.incoming.mkdir(parents=True, exist_ok=True)
                fd, name = self._temps.create()
        except OSError as exc:
            raise StorageError(
                f"cannot create a temporary file in {self.incoming}: {exc.strerror}",
                failure=_os_failure(exc),
            ) from exc
        return Part10Writer(  # the name as a str: a Path only if asked (temp_path)
            self, fd, name, sop_class_uid=checked.sop_class_uid,
            sop_instance_uid=checked.sop_instance_uid,
            transfer_syntax_uid=checked.transfer_syntax_uid,
            source_ae_title=checked.source_ae_title, meta=checked.meta)


class Part10Writer:
    """One Part 10 file being received; `write` fragments, then `commit` or `abort`.

    Synchronous: each fragment is written to the descriptor as it comes (no buffer, no
    copy), the meta information with the first one (one writev). Use as a context manager
    to abort on any exit that did not commit.
    """

    def __init__(
        self,
        storage: Storage,
        fd: int,
        temp_path: Path | str,
        *,
        sop_class_uid: str,
        sop_instance_uid: str,
        transfer_syntax_uid: str,
        source_ae_title: str,
        meta: bytes,
    ) -> None:
        self._storage = storage
        self._temp = os.fspath(temp_path)
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid
        self.transfer_syntax_uid = transfer_syntax_uid
        self.source_ae_title = source_ae_title
        self._meta_length = len(meta)
        self._head = bytearray()  # the data set's first bytes, for header_from_prefix
        self._fd = fd  # -1 once closed
        self._meta: bytes | None = meta  # written with the first fragment (or at commit)
        self._finished = False
        self.size = len(meta)
        """Bytes taken so far, meta information included (written by commit)."""
        try:
            os.fchmod(fd, storage.settings.file_mode)
        except OSError as exc:
            self._discard()
            raise StorageError(
                f"cannot open the temporary file {temp_path}: {exc.strerror}",
                failure=_os_failure(exc),
            ) from exc

    @property
    def temp_path(self) -> Path:
        """The temporary file in .incoming."""
        return Path(self._temp)

    @property
    def finished(self) -> bool:
        """True after commit or abort."""
        return self._finished

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Append one fragment of the data set as received (no joining, no copy)."""
        view = memoryview(data).cast("B")
        self._append(view)
        room = PREFIX_LIMIT - len(self._head)
        if room > 0:  # the head alone is copied, for header_from_prefix at commit
            self._head += view[:room]

    def _append(self, view: memoryview | None) -> None:
        """Write ``view`` (None: nothing), after the meta information if not yet written."""
        if self._finished or self._fd < 0:
            raise StorageError(
                "write after commit or abort: begin a new instance",
                failure=StorageFailure.STATE,
            )
        meta, self._meta = self._meta, None
        try:
            files.write_all(self._fd, [b for b in (meta, view) if b is not None])
            self.size += 0 if view is None else len(view)
        except OSError as exc:
            self._discard()
            raise StorageError(
                f"writing {self.sop_instance_uid} failed: {exc.strerror}; nothing was stored",
                failure=_os_failure(exc),
            ) from exc

    def abort(self) -> None:
        """Drop the temporary file; idempotent, never raises (one it cannot remove is left
        to `Storage.purge_incoming`)."""
        self._discard()

    def _discard(self) -> None:
        self._finished = True
        fd, self._fd = self._fd, -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            os.unlink(self._temp)
        except OSError:  # gone, or a disk gone read-only: the refusal stays the first error
            pass  # (a temporary file left is removed by purge_incoming)

    def commit(self) -> StoredInstance:
        """Check the data set head, then make the file visible atomically.

        Raises `StorageError` (the temporary file removed) when the data set does not
        parse, lacks or has invalid Study/Series/SOP UIDs, differs from the command,
        is a rejected duplicate, or the file system fails.
        """
        if self._finished or self._fd < 0:
            raise StorageError(
                "commit after commit or abort: begin a new instance",
                failure=StorageFailure.STATE,
            )
        try:
            return self._commit()
        except StorageError:
            self._discard()
            raise
        except OSError as exc:
            self._discard()
            raise StorageError(
                f"storing {self.sop_instance_uid} failed: {exc.strerror or exc}; "
                "nothing was stored",
                failure=_os_failure(exc),
            ) from exc
        except BaseException:
            self._discard()
            raise

    def _commit(self) -> StoredInstance:
        settings = self._storage.settings
        if self._meta is not None:  # an empty data set: the meta information alone
            self._append(None)
        if settings.fsync:
            os.fsync(self._fd)
        fd, self._fd = self._fd, -1
        os.close(fd)
        attributes = self._read_and_check()
        parent, final = self._storage.names_for(
            attributes["StudyInstanceUID"], attributes["SeriesInstanceUID"],
            self.sop_instance_uid)
        outcome = self._place(final, parent)
        self._finished = True
        return StoredInstance(
            path=Path(final),
            sop_class_uid=self.sop_class_uid,
            sop_instance_uid=self.sop_instance_uid,
            transfer_syntax_uid=self.transfer_syntax_uid,
            study_instance_uid=attributes["StudyInstanceUID"],
            series_instance_uid=attributes["SeriesInstanceUID"],
            size=self.size,
            source_ae_title=self.source_ae_title,
            received_at=time.time(),
            outcome=outcome,
            attributes=attributes,
        )

    def _read_and_check(self) -> dict[str, str]:
        start, syntax = self._meta_length, self.transfer_syntax_uid
        length = self.size - start
        head, self._head = self._head, bytearray()
        try:
            attributes = header_from_prefix(head, length, syntax)
            if attributes is None:  # not the plain case: pydicom reads the file
                with open(self._temp, "rb") as fp:
                    attributes = read_header(fp, start, length, syntax)
        except HeaderError as exc:
            raise invalid_dataset(self.sop_instance_uid, exc) from None
        check_header(attributes, sop_instance_uid=self.sop_instance_uid,
                     sop_class_uid=self.sop_class_uid)
        return attributes

    def _place(self, final: str, parent: str) -> StoreOutcome:
        """Move the temporary file to `final` (in `parent`) under the duplicate policy."""
        settings = self._storage.settings
        created = self._storage.known_directory(parent)
        try:
            outcome = self._move(final, settings.duplicates)
        except FileNotFoundError:  # the series directory was removed since we last saw it
            if not os.path.exists(self._temp):
                raise
            self._storage.forget_directory(parent)
            created += self._storage.known_directory(parent)  # both tries' need sync
            outcome = self._move(final, settings.duplicates)
        if settings.fsync:
            try:
                for directory in dict.fromkeys([Path(parent), *(d.parent for d in created)]):
                    _fsync_dir(directory)
            except OSError as exc:  # refused: a new file placed without replacing is taken back
                if settings.duplicates is DuplicatePolicy.OVERWRITE:  # it cannot be
                    raise StorageError(
                        f"storing {self.sop_instance_uid}: the file is in place but syncing "
                        f"its directory failed: {exc.strerror or exc}; it may not survive a "
                        "power loss: send it again", failure=_os_failure(exc)) from exc
                if outcome is StoreOutcome.STORED:
                    try:
                        os.unlink(final)
                    except OSError:
                        pass
                raise
        self._storage._dirs.synced(parent)
        return outcome

    def _move(self, final: str, duplicates: DuplicatePolicy) -> StoreOutcome:
        if duplicates is DuplicatePolicy.OVERWRITE:
            outcome = StoreOutcome.REPLACED if os.path.exists(final) else StoreOutcome.STORED
            os.replace(self._temp, final)
            return outcome
        return self._place_exclusive(final)

    def _place_exclusive(self, final: str) -> StoreOutcome:
        """Link without replacing (atomic no-clobber); fall back where links fail."""
        try:
            os.link(self._temp, final)
            exists = False
        except FileExistsError:
            exists = True
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
                raise
            exists = os.path.exists(final)
            if not exists:  # no hard links here: check-then-replace, not race-free
                os.replace(self._temp, final)
                return StoreOutcome.STORED
        if exists:
            if self._storage.settings.duplicates is DuplicatePolicy.REJECT:
                raise StorageError(
                    f"SOP instance {self.sop_instance_uid} is already stored and the "
                    "duplicate policy is REJECT; nothing was changed",
                    failure=StorageFailure.DUPLICATE,
                )
            self._discard()
            return StoreOutcome.KEPT_EXISTING
        try:
            os.unlink(self._temp)
        except OSError:  # the file is placed whole; its extra name goes at purge_incoming
            pass
        return StoreOutcome.STORED

    def __del__(self) -> None:
        """A writer dropped unfinished closes its descriptor, as the buffered file object it
        once wrote through did (the temporary file is left to `Storage.purge_incoming`: a
        forked copy of a writer must not remove its parent's)."""
        fd, self._fd = getattr(self, "_fd", -1), -1
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Part10Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not self._finished:
            self.abort()
