"""DICOM Part 10 files and data set encodings: the one module for both (PS3.10 §7, PS3.5 §A).

Three things every layer needs and once had in several disagreeing copies:

- `LONG_VRS`, the explicit VRs with a 4-byte length (PS3.5 §7.1.2), as pydicom has them.
- The File Meta Information (group 0002, always Explicit VR Little Endian): one reader,
  `read_file_meta`, bounded whatever the file claims, used by `read_part10_info` (what a
  C-STORE needs to send a file) and the archive index; one writer, `encode_file_meta`.
- A pydicom `Dataset` <-> bytes codec for a transfer syntax, `encode_dataset` and
  `decode_dataset` (in `aiodicom.core._dataset_codec`, called through here).

pydicom (~16 MB of a server's RSS with what it pulls in) is imported only when a data set
is decoded or encoded: reading file meta and streaming a file (C-STORE) never load it.

File access here is plain blocking reads of local files: no sockets, no clock.
"""

from __future__ import annotations

import io
import os
import struct
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, BinaryIO, Final

from aiodicom.core.ae_titles import validate_ae_title
from aiodicom.core.negotiation import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from aiodicom.core.uids import is_uid_syntax
from aiodicom.errors import DicomError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from pydicom.dataset import Dataset

    Buffer = bytes | bytearray | memoryview

__all__ = [
    "LONG_VRS",
    "META_VALUE_LIMIT",
    "DatasetCodecError",
    "FileMeta",
    "NotPart10Error",
    "Part10Info",
    "TransferSyntaxMismatch",
    "decode_dataset",
    "encode_dataset",
    "encode_file_meta",
    "read_file_meta",
    "read_part10_info",
    "stream_dataset",
]

LONG_VRS: Final = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
"""Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 §7.1.2), as bytes
(pydicom's EXPLICIT_VR_LENGTH_32; a test holds the two equal)."""

MAX_INFLATED_SIZE: Final = 1 << 30
"""Default bound on an inflated Deflated data set (1 GiB): a deflate bomb stops here."""

PREAMBLE_LENGTH: Final = 128
"""PS3.10 §7.1: a 128-byte preamble, then the prefix "DICM"."""

META_VALUE_LIMIT: Final = 4096
"""File meta values longer than this are skipped, not read (none of group 0002's are)."""

_MAX_META_ELEMENTS: Final = 1024
_ELEMENT: Final = struct.Struct("<HH2sH")
_LONG_LENGTH: Final = struct.Struct("<L")
_TAG_SOP_CLASS: Final = 0x00020002
_TAG_SOP_INSTANCE: Final = 0x00020003
_TAG_TRANSFER_SYNTAX: Final = 0x00020010


class DatasetCodecError(DicomError, ValueError):
    """A data set cannot be encoded or decoded as asked; the message says why."""


class TransferSyntaxMismatch(DatasetCodecError):
    """Encoding would mislabel the pixel data (compressed as another syntax, or native as
    compressed): the data set must be sent under its own transfer syntax or converted."""


def decode_dataset(
    data: Buffer | Iterable[Buffer],
    transfer_syntax_uid: str,
    *,
    max_inflated_size: int = MAX_INFLATED_SIZE,
) -> Dataset:
    """Decode a data set encoded under `transfer_syntax_uid` (`_dataset_codec`, pydicom)."""
    from aiodicom.core import _dataset_codec

    return _dataset_codec.decode_dataset(
        data, transfer_syntax_uid, max_inflated_size=max_inflated_size
    )


def encode_dataset(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """Encode `ds` under `transfer_syntax_uid` (`_dataset_codec`, pydicom)."""
    from aiodicom.core import _dataset_codec

    return _dataset_codec.encode_dataset(ds, transfer_syntax_uid)


class NotPart10Error(DicomError, ValueError):
    """The file is not a DICOM Part 10 file (no DICM prefix or a broken meta group)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FileMeta:
    """The File Meta Information of a Part 10 file, and where its data set starts."""

    elements: Mapping[int, bytes]
    """Tag (0002,xxxx) -> raw value; values over `META_VALUE_LIMIT` bytes are left out."""
    dataset_offset: int
    """Offset of the data set from the start of the file (after group 0002)."""

    def text(self, tag: int) -> str:
        """A value as text without its padding (NUL or space); "" when absent."""
        return self.elements.get(tag, b"").decode("ascii", "replace").strip(" \x00")


def _file_size(fp: BinaryIO) -> int:
    here = fp.tell()
    size = fp.seek(0, os.SEEK_END)
    fp.seek(here)
    return size


def read_file_meta(fp: BinaryIO) -> FileMeta:
    """Read the preamble, "DICM" and group 0002 from the start of `fp` (PS3.10 §7.1).

    Every length is checked against the bytes the file really has before anything is
    read or skipped, values are kept only up to `META_VALUE_LIMIT` and at most 1,024
    elements are walked, so a hostile file costs little. Leaves `fp` at the data set.
    Raises `NotPart10Error` saying what is wrong.
    """
    size = _file_size(fp)
    if fp.read(PREAMBLE_LENGTH + 4)[PREAMBLE_LENGTH:] != b"DICM":
        raise NotPart10Error(
            "not a DICOM Part 10 file: no 'DICM' after the 128-byte preamble"
        )
    elements: dict[int, bytes] = {}
    offset = PREAMBLE_LENGTH + 4
    for _ in range(_MAX_META_ELEMENTS):
        header = fp.read(8)
        if len(header) < 8:
            break
        group, element, vr, length = _ELEMENT.unpack(header)
        if group != 0x0002:
            break
        tag = group << 16 | element
        header_length = 8
        if vr in LONG_VRS:
            extra = fp.read(4)
            if len(extra) < 4:
                raise NotPart10Error(f"the file meta information is truncated in ({_tag(tag)})")
            (length,) = _LONG_LENGTH.unpack(extra)
            header_length = 12
        start = offset + header_length
        if length > size - start:
            raise NotPart10Error(
                f"file meta element ({_tag(tag)}) claims {length} bytes but only "
                f"{size - start} remain in the file (truncated)"
            )
        if length > META_VALUE_LIMIT:
            fp.seek(length, os.SEEK_CUR)
        else:
            elements[tag] = fp.read(length)
        offset = start + length
    else:
        raise NotPart10Error(
            f"the file meta information has more than {_MAX_META_ELEMENTS} elements"
        )
    fp.seek(offset)
    return FileMeta(elements=MappingProxyType(elements), dataset_offset=offset)


def _tag(tag: int) -> str:
    return f"{tag >> 16:04X},{tag & 0xFFFF:04X}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Part10Info:
    """The file meta facts a C-STORE needs and where the data set starts."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    transfer_syntax_uid: str
    dataset_offset: int
    size: int

    @property
    def dataset_length(self) -> int:
        return self.size - self.dataset_offset


def read_part10_info(path: Path) -> Part10Info:
    """What a C-STORE of the file at `path` needs, from its File Meta Information.

    Raises `NotPart10Error` (message starting with the path) when the file is not Part 10
    or lacks the SOP class, SOP instance or transfer syntax UID; `OSError` if unreadable.
    """
    with path.open("rb") as fp:
        try:
            meta = read_file_meta(fp)
        except NotPart10Error as exc:
            raise NotPart10Error(f"{path}: {exc}") from None
        size = os.fstat(fp.fileno()).st_size

    def text(tag: int, name: str) -> str:
        value = meta.text(tag)
        if not value:
            raise NotPart10Error(f"{path}: file meta information lacks {name}")
        return value

    return Part10Info(
        path=path,
        sop_class_uid=text(_TAG_SOP_CLASS, "MediaStorageSOPClassUID"),
        sop_instance_uid=text(_TAG_SOP_INSTANCE, "MediaStorageSOPInstanceUID"),
        transfer_syntax_uid=text(_TAG_TRANSFER_SYNTAX, "TransferSyntaxUID"),
        dataset_offset=meta.dataset_offset,
        size=size,
    )


def stream_dataset(info: Part10Info, chunk_size: int) -> Iterator[bytearray]:
    """The data set bytes in fresh chunks (a transport may still hold the previous one)."""
    with info.path.open("rb", buffering=0) as f:
        f.seek(info.dataset_offset)
        assert isinstance(f, io.FileIO)
        while True:
            chunk = bytearray(chunk_size)
            n = f.readinto(chunk)
            if not n:
                return
            if n < chunk_size:
                del chunk[n:]
            yield chunk


# -- the writer -------------------------------------------------------------------------------


def _element(tag: int, vr: bytes, value: bytes, pad: bytes) -> bytes:
    """One Explicit VR Little Endian element, value padded to even length (PS3.5 §7.1.2)."""
    if len(value) % 2:
        value += pad
    head = struct.pack("<HH2s", tag >> 16, tag & 0xFFFF, vr)
    if vr in LONG_VRS:
        return head + struct.pack("<HL", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _uid(value: str, what: str) -> bytes:
    if not is_uid_syntax(value):
        raise ValueError(f"{what} {value!r} is not a UID (1-64 digits and dots)")
    return value.encode("ascii")


def encode_file_meta(
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax_uid: str,
    source_ae_title: str | None = None,
    sending_ae_title: str | None = None,
    receiving_ae_title: str | None = None,
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID,
    implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME,
) -> bytes:
    """Preamble (zeros), "DICM" and group 0002 in Explicit VR Little Endian (PS3.10 §7.1).

    (0002,0016) Source, (0002,0017) Sending and (0002,0018) Receiving AE Title are written
    when given. Raises `ValueError` for a value group 0002 cannot hold (not a UID, not
    an AE title, a version name that is not 1-16 printable characters).
    """
    parts = [
        _element(0x00020001, b"OB", b"\x00\x01", b"\x00"),
        _element(_TAG_SOP_CLASS, b"UI", _uid(sop_class_uid, "SOP class UID"), b"\x00"),
        _element(_TAG_SOP_INSTANCE, b"UI", _uid(sop_instance_uid, "SOP instance UID"), b"\x00"),
        _element(
            _TAG_TRANSFER_SYNTAX, b"UI", _uid(transfer_syntax_uid, "transfer syntax"), b"\x00"
        ),
        _element(
            0x00020012,
            b"UI",
            _uid(implementation_class_uid, "implementation class UID"),
            b"\x00",
        ),
    ]
    if implementation_version_name is not None:
        name = implementation_version_name
        if not (0 < len(name) <= 16 and name.isascii() and name.isprintable()):
            raise ValueError(
                f"implementation version name {name!r} is not 1-16 printable ASCII characters"
            )
        parts.append(_element(0x00020013, b"SH", name.encode("ascii"), b" "))
    for tag, title, what in (
        (0x00020016, source_ae_title, "source AE title"),
        (0x00020017, sending_ae_title, "sending AE title"),
        (0x00020018, receiving_ae_title, "receiving AE title"),
    ):
        if title is not None:
            raw = validate_ae_title(title, what).encode("ascii")
            parts.append(_element(tag, b"AE", raw, b" "))
    body = b"".join(parts)
    group_length = _element(0x00020000, b"UL", struct.pack("<L", len(body)), b"")
    return b"".join((bytes(PREAMBLE_LENGTH), b"DICM", group_length, body))
