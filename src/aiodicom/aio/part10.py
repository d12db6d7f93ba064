"""Reading what a C-STORE needs from a Part 10 file without loading the data set."""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Part10Info", "read_part10_info", "stream_dataset"]

_UNCOMMON_VRS = {b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"}


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


class NotPart10Error(ValueError):
    """The file is not a DICOM Part 10 file (no DICM prefix or a broken meta group)."""


def read_part10_info(path: Path) -> Part10Info:
    """Parse the preamble and group 0002 (explicit VR little endian, PS3.10 §7.1)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(132)
        if len(head) < 132 or head[128:132] != b"DICM":
            raise NotPart10Error(f"{path}: not a DICOM Part 10 file (no 'DICM' at offset 128)")
        values: dict[int, bytes] = {}
        offset = 132
        while True:
            header = f.read(8)
            if len(header) < 8:
                break
            group, elem = struct.unpack("<HH", header[:4])
            if group != 0x0002:
                break
            vr = header[4:6]
            if vr in _UNCOMMON_VRS:
                rest = f.read(4)
                if len(rest) < 4:
                    raise NotPart10Error(f"{path}: truncated file meta information")
                (length,) = struct.unpack("<L", rest)
                hlen = 12
            else:
                (length,) = struct.unpack("<H", header[6:8])
                hlen = 8
            if length > 1 << 16:
                raise NotPart10Error(f"{path}: file meta element ({group:04X},{elem:04X}) too long")
            value = f.read(length)
            if len(value) < length:
                raise NotPart10Error(f"{path}: truncated file meta information")
            values[elem] = value
            offset += hlen + length
    def text(elem: int, name: str) -> str:
        raw = values.get(elem)
        if not raw:
            raise NotPart10Error(f"{path}: file meta information lacks {name}")
        return raw.rstrip(b"\0 ").decode("ascii", "replace")

    return Part10Info(
        path=path,
        sop_class_uid=text(0x0002, "MediaStorageSOPClassUID"),
        sop_instance_uid=text(0x0003, "MediaStorageSOPInstanceUID"),
        transfer_syntax_uid=text(0x0010, "TransferSyntaxUID"),
        dataset_offset=offset,
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
