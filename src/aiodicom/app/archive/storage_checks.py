"""What a C-STORE must pass before a byte is written or a file is placed: the command's UIDs
and AE titles (`check_request`, which also gives the File Meta bytes), the data set's head
against the command (`check_header`), and the errors a store fails with (`StorageError`, its
`StorageFailure` choosing the C-STORE status). Backends other than the file system start
here too; `aiodicom.app.archive.storage` re-exports every name.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from aiodicom.app.archive import _storage_files as files
from aiodicom.app.archive.head import HeaderError
from aiodicom.core.ae_titles import validate_ae_title
from aiodicom.core.part10 import encode_file_meta as core_encode_file_meta
from aiodicom.core.uids import strip_uid_padding
from aiodicom.errors import DicomError

__all__ = [
    "CheckedRequest",
    "InvalidStorageRequest",
    "StorageError",
    "StorageFailure",
    "check_header",
    "check_request",
    "encode_file_meta",
    "invalid_dataset",
]


class StorageFailure(enum.Enum):
    """Why a store failed, for the server to choose a C-STORE status (PS3.4 §B.2.3)."""

    INVALID_REQUEST = "invalid request"
    """The command's UIDs or AE titles are unusable (Cannot understand, 0xC000)."""
    INVALID_DATASET = "invalid data set"
    """The data set does not parse or lacks required UIDs (Cannot understand, 0xC000)."""
    MISMATCH = "data set does not match the command"
    """SOP class/instance in the data differ from the command (0xA900)."""
    DUPLICATE = "duplicate SOP instance"
    """The instance is already stored and the policy is REJECT."""
    OUT_OF_RESOURCES = "out of resources"
    """Disk full or quota exceeded (Refused: out of resources, 0xA700)."""
    IO_ERROR = "I/O error"
    """Any other file system error (Cannot understand/processing failure)."""
    STATE = "writer already finished"
    """The writer was used after commit or abort (a local programming error)."""


class StorageError(DicomError):
    """A data set could not be stored; nothing was left under the final path."""

    def __init__(self, message: str, *, failure: StorageFailure) -> None:
        super().__init__(message)
        self.failure = failure


class InvalidStorageRequest(StorageError, ValueError):
    """`Storage.begin` refused the command's UIDs or AE titles; nothing was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, failure=StorageFailure.INVALID_REQUEST)


def _check_ae(value: str, what: str) -> str:
    """An AE title by the rule of `aiodicom.core.ae_titles`, without its padding."""
    try:
        return validate_ae_title(value, what)
    except ValueError as exc:
        raise InvalidStorageRequest(f"{exc}; the instance was not stored") from None


def _uid_arg(value: str, what: str) -> str:
    try:
        value = strip_uid_padding(value) if isinstance(value, str) else value
        return files.validate_uid(value, what)
    except ValueError as exc:
        raise InvalidStorageRequest(f"{exc}; the instance was not stored") from None


def encode_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str,
    receiving_ae_title: str,
) -> bytes:
    """Preamble, "DICM" and group 0002 (`aiodicom.core.part10.encode_file_meta`).

    (0002,0016) Source and (0002,0017) Sending AE Title both carry the peer's calling AE
    title (as DCMTK and dcm4che record the source), (0002,0018) the AE that received it.
    """
    return core_encode_file_meta(
        sop_class_uid=sop_class_uid,
        sop_instance_uid=sop_instance_uid,
        transfer_syntax_uid=transfer_syntax_uid,
        source_ae_title=source_ae_title,
        sending_ae_title=source_ae_title,
        receiving_ae_title=receiving_ae_title,
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckedRequest:
    """A C-STORE's UIDs and AE title after `check_request`, and its File Meta bytes."""

    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    source_ae_title: str
    meta: bytes


_CHECKED: dict[tuple[str, str, str, str], tuple[str, str, str, str]] = {}
"""(class, syntax, source AE, receiving AE) -> checked; they repeat (bounded, then cleared)."""


def check_request(*, sop_class_uid: str, sop_instance_uid: str, transfer_syntax_uid: str,
                  source_ae_title: str, receiving_ae_title: str) -> CheckedRequest:
    """Validate a C-STORE's UIDs (a trailing NUL pad accepted) and AE titles in this order,
    encode the File Meta Information; raises `InvalidStorageRequest`. Backends start here."""
    key = (sop_class_uid, transfer_syntax_uid, source_ae_title, receiving_ae_title)
    plain = str is type(sop_class_uid) is type(transfer_syntax_uid) is type(
        source_ae_title) is type(receiving_ae_title)
    known = _CHECKED.get(key) if plain else None
    sop_class = known[0] if known else _uid_arg(sop_class_uid, "Affected SOP Class UID")
    instance = _uid_arg(sop_instance_uid, "Affected SOP Instance UID")
    if known is None:
        known = (sop_class, _uid_arg(transfer_syntax_uid, "Transfer Syntax UID"),
                 _check_ae(source_ae_title, "calling (source) AE title"),
                 _check_ae(receiving_ae_title, "receiving AE title"))
        if len(_CHECKED) >= files.KNOWN_DIRECTORIES:
            _CHECKED.clear()
        if plain:
            _CHECKED[key] = known
    meta = files.patched_file_meta(
        encode_file_meta, sop_class_uid=sop_class, sop_instance_uid=instance,
        transfer_syntax_uid=known[1], source_ae_title=known[2], receiving_ae_title=known[3])
    return CheckedRequest(sop_class_uid=sop_class, sop_instance_uid=instance,
                          transfer_syntax_uid=known[1], source_ae_title=known[2], meta=meta)


def check_header(attributes: Mapping[str, str], *, sop_instance_uid: str,
                 sop_class_uid: str) -> None:
    """The data set's head against the command (0xA900 on a difference) and its Study and
    Series Instance UIDs by PS3.5 §9.1 (they become names); raises `StorageError`."""
    for keyword, expected in (
        ("SOPInstanceUID", sop_instance_uid),
        ("SOPClassUID", sop_class_uid),
    ):
        found = attributes[keyword]
        if found != expected:
            raise StorageError(
                f"the data set's {keyword} {found[:70]!r} differs from the command's "
                f"{expected!r}; nothing was stored",
                failure=StorageFailure.MISMATCH,
            )
    for keyword, what in (
        ("StudyInstanceUID", "Study Instance UID"),
        ("SeriesInstanceUID", "Series Instance UID"),
    ):
        try:
            files.validate_uid(attributes[keyword], f"the data set's {what}")
        except ValueError as exc:
            raise StorageError(
                f"{exc}; nothing was stored", failure=StorageFailure.INVALID_DATASET
            ) from None


def invalid_dataset(sop_instance_uid: str, exc: HeaderError) -> StorageError:
    """The one wording of a data set whose head does not parse."""
    return StorageError(
        f"the data set for {sop_instance_uid} is not valid: {exc}; nothing was stored",
        failure=StorageFailure.INVALID_DATASET,
    )
