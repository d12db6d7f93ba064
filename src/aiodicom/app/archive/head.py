"""Reading the head of a stored data set in bounded memory (for the index and `commit`).

Only the attributes the index keeps (up to (0020,0013)) are read, element by element,
with every length checked against what remains and a byte budget, so a data set of any
size (or a deflate bomb) costs a few MB at most. Used by `Storage` on commit and by the
index rebuild.

Two readers give the same answer. `header_from_prefix` walks the first bytes of a little
endian data set as they were received, in memory, and answers only for the plain case
(defined lengths, known VRs, the head complete in the prefix); for anything else it
returns None and `read_header` (pydicom over the file, bounded) decides, errors included.
The fast path exists because a store is ~1 ms of server CPU and pydicom's reader plus
re-opening the file was ~0.1 ms of it; a differential test and the fuzz_store harness hold
the two to the same result. It also keeps pydicom (~16 MB of RSS with what it imports) out
of a server that only stores: without a Specific Character Set, or with ISO_IR 6, 100 or
192, and values without ESC, it decodes exactly as pydicom's `decode_bytes` would (one
`bytes.decode` with the same codec), and imports pydicom only otherwise.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import BinaryIO, cast

from aiodicom.core.negotiation import (
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
)
from aiodicom.core.part10 import LONG_VRS
from aiodicom.core.uids import strip_uid_padding
from aiodicom.errors import DicomError

__all__ = [
    "HEADER_KEYWORDS",
    "LONG_VRS",
    "PREFIX_LIMIT",
    "HeaderError",
    "header_from_prefix",
    "read_header",
]

_HEADER_TAGS: dict[int, tuple[str, str]] = {
    0x00080016: ("SOPClassUID", "UI"),
    0x00080018: ("SOPInstanceUID", "UI"),
    0x00080020: ("StudyDate", "DA"),
    0x00080023: ("ContentDate", "DA"),
    0x0008002A: ("AcquisitionDateTime", "DT"),
    0x00080030: ("StudyTime", "TM"),
    0x00080033: ("ContentTime", "TM"),
    0x00080050: ("AccessionNumber", "SH"),
    0x00080060: ("Modality", "CS"),
    0x00080090: ("ReferringPhysicianName", "PN"),
    0x00081030: ("StudyDescription", "LO"),
    0x0008103E: ("SeriesDescription", "LO"),
    0x00100010: ("PatientName", "PN"),
    0x00100020: ("PatientID", "LO"),
    0x00100030: ("PatientBirthDate", "DA"),
    0x00100040: ("PatientSex", "CS"),
    0x0020000D: ("StudyInstanceUID", "UI"),
    0x0020000E: ("SeriesInstanceUID", "UI"),
    0x00200010: ("StudyID", "SH"),
    0x00200011: ("SeriesNumber", "IS"),
    0x00200013: ("InstanceNumber", "IS"),
}
HEADER_KEYWORDS: tuple[str, ...] = tuple(keyword for keyword, _ in _HEADER_TAGS.values())
"""The attributes `commit` and `read_stored_file` extract (StoredInstance.attributes)."""

_LAST_HEADER_TAG = max(_HEADER_TAGS)
_SPECIFIC_CHARACTER_SET = 0x00080005
_HEADER_VALUE_LIMIT = 4096
_HEADER_READ_BUDGET = 8 * 1024 * 1024
_READ_CALL_COST = 256  # charged per read so many tiny elements cannot build a huge tree
_INFLATE_CHUNK = 64 * 1024
_INFLATE_HISTORY = 4096
_TEXT_DELIMITERS = {0x09, 0x0A, 0x0C, 0x0D}
_DEFAULT_ENCODING = "iso8859"  # pydicom.charset.default_encoding (a test holds them equal)
_ESC = 0x1B
_PLAIN_CHARSETS: dict[bytes, str] = {  # (0008,0005) value -> pydicom's Python codec for it
    b"": _DEFAULT_ENCODING,
    b"ISO_IR 6": _DEFAULT_ENCODING,
    b"ISO_IR 100": "latin_1",
    b"ISO_IR 192": "UTF8",
}
_PLAIN_CODECS = frozenset(_PLAIN_CHARSETS.values())
_ENCODED_VR = frozenset({  # pydicom.filereader.ENCODED_VR (a test holds them equal)
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
    b"OB", b"OB or OW", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ",
    b"SS", b"ST", b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"US or OW",
    b"US or SS", b"US or SS or OW", b"UT", b"UV",
})
_PN_DELIMITERS = _TEXT_DELIMITERS | {0x3D, 0x5E}


class HeaderError(DicomError, ValueError):
    """The head of a data set is malformed (internal; surfaces as `StorageError`)."""


class _Budget:
    """Bytes pydicom may still read into memory (skipped values cost nothing)."""

    def __init__(self) -> None:
        self.left = _HEADER_READ_BUDGET

    def charge(self, size: int) -> None:
        self.left -= size + _READ_CALL_COST
        if self.left < 0:
            raise HeaderError(
                f"the elements before (0020,0013) need more than "
                f"{_HEADER_READ_BUDGET // (1024 * 1024)} MiB to parse"
            )


class _PlainStream:
    """The data set bytes of a file, for pydicom: bounded, strict at the end.

    A read that would run past the data set raises instead of returning short data
    (pydicom would otherwise warn and carry on), and no read larger than the bytes
    really present or the budget is attempted, whatever a length field claims.
    """

    def __init__(self, fp: BinaryIO, start: int, length: int) -> None:
        self._fp, self._start, self._length = fp, start, length
        self._pos = 0
        self._budget = _Budget()

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset + (self._pos if whence == os.SEEK_CUR else 0)
        if whence == os.SEEK_END:
            target = self._length + offset
        if not 0 <= target <= self._length:
            raise HeaderError("an element's length runs past the end of the data set")
        self._pos = target
        return target

    def read(self, size: int = -1) -> bytes:
        remaining = self._length - self._pos
        if remaining == 0:
            return b""
        if size < 0:
            size = remaining
        if size > remaining:
            raise HeaderError("the data set ends inside an element (truncated)")
        self._budget.charge(size)
        self._fp.seek(self._start + self._pos)
        data = self._fp.read(size)
        if len(data) != size:
            raise HeaderError("the file is shorter than written")
        self._pos += size
        return data


class _InflateStream:
    """The inflated data set of a Deflated transfer syntax file (PS3.5 §A.5), lazily.

    Only the bytes up to the stop point are inflated, in bounded chunks, with a small
    window kept for pydicom's short backward seeks: a deflate bomb costs time, not memory.
    """

    def __init__(self, fp: BinaryIO, start: int, length: int) -> None:
        fp.seek(start)
        self._fp, self._left = fp, length
        self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
        self._window = bytearray()
        self._window_start = 0
        self._pos = 0
        self._eof = False
        self._budget = _Budget()

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        target = offset + (self._pos if whence == os.SEEK_CUR else 0)
        if whence == os.SEEK_END or target < self._window_start:
            raise HeaderError("cannot seek backwards in a deflated data set")
        self._pos = target
        return target

    def _fill(self, end: int) -> None:
        try:
            while self._window_start + len(self._window) < end and not self._eof:
                chunk = self._inflater.unconsumed_tail
                if not chunk:
                    chunk = self._fp.read(min(_INFLATE_CHUNK, self._left))
                    self._left -= len(chunk)
                if not chunk:
                    self._window += self._inflater.flush()
                    self._eof = True
                    break
                self._window += self._inflater.decompress(chunk, _INFLATE_CHUNK)
                self._eof = self._inflater.eof
                drop = min(self._pos - _INFLATE_HISTORY - self._window_start, len(self._window))
                if drop > 0:
                    del self._window[:drop]
                    self._window_start += drop
        except zlib.error as exc:
            raise HeaderError(f"the deflated data set does not inflate: {exc}") from None

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            raise HeaderError("unbounded read of a deflated data set")
        self._budget.charge(size)
        self._fill(self._pos + size)
        offset = self._pos - self._window_start
        available = len(self._window) - offset
        if available == 0 and size:
            return b""
        if available < size:
            raise HeaderError("the data set ends inside an element (truncated)")
        self._pos += size
        return bytes(self._window[offset : offset + size])


def _stop_at_end_of_header(tag: int, vr: str | None, length: int) -> bool:
    """pydicom's stop_when: stop after (0020,0013); refuse oversized wanted values."""
    if tag > _LAST_HEADER_TAG:
        return True
    if (tag in _HEADER_TAGS or tag == _SPECIFIC_CHARACTER_SET) and (
        _HEADER_VALUE_LIMIT < length != 0xFFFFFFFF
    ):
        raise HeaderError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) is {length} bytes long")
    return False


def _decode(value: bytes, vr: str, encodings: list[str]) -> str:
    """A header value as text; ASCII VRs directly, text VRs through the character set."""
    if vr == "UI":
        return strip_uid_padding(value.decode("ascii", "replace"))
    if vr in ("DA", "TM", "CS", "IS"):
        return value.decode("ascii", "replace").strip(" \x00")
    text: str | None = None
    if _ESC not in value and encodings[0] in _PLAIN_CODECS:
        try:  # pydicom's one call without ESC (try, not contextlib.suppress: per value)
            text = value.decode(encodings[0])
        except UnicodeError:
            pass
    if text is None:
        from pydicom.charset import decode_bytes

        delimiters = _PN_DELIMITERS if vr == "PN" else _TEXT_DELIMITERS
        try:
            text = decode_bytes(value, encodings, delimiters)
        except (UnicodeError, LookupError, ValueError):
            text = value.decode("latin-1")
    # NUL is padding at the end only (PS3.5 6.2); one inside a text value is invalid, and
    # PostgreSQL refuses it in text: dropped from the index copy (the file keeps it) so an
    # acknowledged instance is findable on both index backends.
    return str(text).strip(" \x00").replace("\x00", "")


def read_header(fp: BinaryIO, start: int, length: int, transfer_syntax_uid: str) -> dict[str, str]:
    """The `HEADER_KEYWORDS` attributes of the data set at `start` ("" when absent).

    Parses only up to (0020,0013) with pydicom, skipping the values it does not need,
    so memory stays bounded for any data set size. Raises `HeaderError`.
    """
    from pydicom.filereader import read_dataset

    implicit = transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    little = transfer_syntax_uid != EXPLICIT_VR_BIG_ENDIAN
    stream: _PlainStream | _InflateStream
    if transfer_syntax_uid == DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN:
        stream = _InflateStream(fp, start, length)
    else:
        stream = _PlainStream(fp, start, length)
    first = stream.read(6)
    if len(first) < 6:
        raise HeaderError("the data set is empty")
    looks_explicit = _looks_explicit(first)
    if looks_explicit == implicit:
        raise HeaderError(
            f"the data set is not encoded as its transfer syntax {transfer_syntax_uid} says "
            f"({'explicit' if looks_explicit else 'implicit'} VR found)"
        )
    stream.seek(0)
    try:
        dataset = read_dataset(
            cast(BinaryIO, stream),  # read/seek/tell is all pydicom uses
            implicit,
            little,
            stop_when=_stop_at_end_of_header,
            specific_tags=list(_HEADER_TAGS),
        )
        encodings = dataset.original_character_set
        values = {
            # get_item returns the raw element (pydicom converts lazily, and may raise here)
            tag: element.value
            for tag in _HEADER_TAGS
            if tag in dataset and (element := dataset.get_item(tag)) is not None
        }
        return _attributes(values, [encodings] if isinstance(encodings, str) else list(encodings))
    except HeaderError:
        raise
    except Exception as exc:  # pydicom on peer data: any failure means "does not parse"
        raise HeaderError(f"it does not parse ({type(exc).__name__}: {exc})") from exc


def _looks_explicit(first: bytes | bytearray | memoryview) -> bool:
    return all(0x41 <= c <= 0x5A for c in first[4:6])


def _attributes(values: dict[int, object], encodings: list[str]) -> dict[str, str]:
    """Decode the raw values of the header tags (both readers end here)."""
    attributes: dict[str, str] = {}
    for tag, (keyword, vr) in _HEADER_TAGS.items():
        value = values.get(tag)
        if not value:  # absent, or an empty value: b"", "" or None
            attributes[keyword] = ""
        elif isinstance(value, bytes):
            attributes[keyword] = _decode(value, vr, encodings)
        else:
            raise HeaderError(f"{keyword} is not encoded as {vr}")
    return attributes


PREFIX_LIMIT = 16 * 1024
"""How much of a received data set `Part10Writer` keeps in memory for `header_from_prefix`.

Enough for the groups 0008-0020 of real images (private groups 0009 and 0019 included)
while a store in flight holds little; longer heads take the slow path. Within it at most
2,048 elements fit, far under `read_header`'s budget, so the budget can never be what
makes the two readers differ."""

_WANTED = frozenset(_HEADER_TAGS) | {_SPECIFIC_CHARACTER_SET}
_EXPLICIT_ELEMENT = struct.Struct("<HH2sH")
_IMPLICIT_ELEMENT = struct.Struct("<HHL")
_LONG_LENGTH = struct.Struct("<L")
_SLOW_SYNTAXES = {EXPLICIT_VR_BIG_ENDIAN, DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN}
_UNDEFINED = 0xFFFFFFFF
_ITEM_DELIMITER = 0xFFFEE00D


def header_from_prefix(
    prefix: bytes | bytearray, dataset_length: int, transfer_syntax_uid: str
) -> dict[str, str] | None:
    """`read_header`'s answer from the data set's first bytes, or None to ask it instead.

    Answers only when the result is certain to be `read_header`'s: a little endian data
    set whose elements up to (0020,0013) have defined lengths and standard VRs and lie
    entirely in `prefix`. Everything else (errors included) returns None, so the slow
    reader gives every refusal its one wording.
    """
    if transfer_syntax_uid in _SLOW_SYNTAXES:
        return None
    implicit = transfer_syntax_uid == IMPLICIT_VR_LITTLE_ENDIAN
    end = len(prefix)
    complete = end == dataset_length
    if end < 6 or _looks_explicit(prefix[:6]) == implicit:
        return None
    found: dict[int, tuple[str | None, int, object, int]] = {}
    pos = 0
    while pos != end:
        if end - pos < 8:
            return None
        vr: str | None = None
        if implicit:
            group, elem, length = _IMPLICIT_ELEMENT.unpack_from(prefix, pos)
            pos += 8
        else:
            group, elem, raw_vr, length = _EXPLICIT_ELEMENT.unpack_from(prefix, pos)
            pos += 8
            if raw_vr not in _ENCODED_VR:
                return None  # pydicom guesses at unknown VRs: let it
            if raw_vr in LONG_VRS:
                if end - pos < 4:
                    return None
                length = _LONG_LENGTH.unpack_from(prefix, pos)[0]
                pos += 4
            vr = raw_vr.decode(_DEFAULT_ENCODING)
        tag = group << 16 | elem
        if tag == _ITEM_DELIMITER:
            return None
        if tag > _LAST_HEADER_TAG:
            return _decode_found(found, implicit)
        if length == _UNDEFINED or end - pos < length:
            return None  # a sequence to parse, or a value past what we hold
        if tag in _WANTED:
            if length > _HEADER_VALUE_LIMIT:
                return None
            # a zero length: pydicom's raw empty value is b"" or None, both read as ""
            value = bytes(prefix[pos : pos + length]) if length else b""
            found[tag] = (vr, length, value, pos)
        pos += length
    return _decode_found(found, implicit) if complete else None


def _decode_found(
    found: dict[int, tuple[str | None, int, object, int]], implicit: bool
) -> dict[str, str] | None:
    """The attributes, with the character set worked out as pydicom does; None if that fails."""
    charset = found.get(_SPECIFIC_CHARACTER_SET)
    if charset is None or (charset[0] in ("CS", None) and charset[2] in _PLAIN_CHARSETS):
        plain = _PLAIN_CHARSETS[cast(bytes, charset[2])] if charset else _DEFAULT_ENCODING
        try:
            return _attributes({tag: item[2] for tag, item in found.items()}, [plain])
        except Exception:  # noqa: BLE001 - the slow reader gives the verdict and its wording
            return None
    from pydicom.charset import convert_encodings
    from pydicom.dataelem import RawDataElement, convert_raw_data_element
    from pydicom.tag import BaseTag
    from pydicom.values import convert_string

    try:
        encodings: list[str] = [_DEFAULT_ENCODING]
        if _SPECIFIC_CHARACTER_SET in found:
            vr, length, value, tell = found[_SPECIFIC_CHARACTER_SET]
            raw = cast(bytes | None, value)
            convert_encodings(convert_string(raw or b"", True))  # as pydicom's reader does
            element = RawDataElement(
                BaseTag(_SPECIFIC_CHARACTER_SET), vr, length, raw, tell, implicit, True
            )
            char_set = convert_raw_data_element(element).value
            converted = convert_encodings(char_set)
            encodings = [converted] if isinstance(converted, str) else list(converted)
        return _attributes({tag: item[2] for tag, item in found.items()}, encodings)
    except Exception:  # noqa: BLE001 - the slow reader gives the verdict and its wording
        return None
