"""pydicom `Dataset` <-> bytes for a transfer syntax (PS3.5 §A); public via `core.part10`.

pydicom reads and writes the elements; this module adds what its `read_dataset` and
`write_dataset` leave to the caller:

- Deflated Explicit VR Little Endian: the data set is a raw deflate stream (zlib wbits
  -15, PS3.5 §A.5), padded with a NUL to even length; inflating is bounded.
- Explicit VR Big Endian: pydicom converts numbers, but writes OW/OF/OL/OD/OV values as
  the bytes it holds. Those are in the byte order the data set was decoded from, so when
  the orders differ every such value (in sequences too) is byte-swapped per word here.
- Encapsulated (compressed) syntaxes: the data set is Explicit VR Little Endian around
  encapsulated Pixel Data. A data set is never relabelled: compressed pixel data goes out
  only under its own transfer syntax, native pixel data never under a compressed one.
- Decoding reads buffers in place (no join of received fragments), refuses truncation,
  parses every element at once so errors surface here, and records the transfer syntax
  in ``file_meta.TransferSyntaxUID``.
"""

from __future__ import annotations

import bisect
import os
import warnings
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO, Final, cast

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from aiodicom.core.part10 import MAX_INFLATED_SIZE, DatasetCodecError, TransferSyntaxMismatch
from aiodicom.core.uids import is_uid_syntax

__all__ = [
    "MAX_INFLATED_SIZE",
    "DatasetCodecError",
    "TransferSyntaxMismatch",
    "decode_dataset",
    "encode_dataset",
]

Buffer = bytes | bytearray | memoryview

_IMPLICIT_LE: Final = "1.2.840.10008.1.2"
_EXPLICIT_LE: Final = "1.2.840.10008.1.2.1"
_DEFLATED_LE: Final = "1.2.840.10008.1.2.1.99"
_EXPLICIT_BE: Final = "1.2.840.10008.1.2.2"
_DEFLATED_ENCAPSULATED: Final = frozenset({
    "1.2.840.10008.1.2.4.95",  # JPIP Referenced Deflate
    "1.2.840.10008.1.2.4.205",  # JPIP HTJ2K Referenced Deflate
})
_TS_ARC: Final = "1.2.840.10008.1.2."
"""PS3.6 Annex A: every standard transfer syntax sits under this arc, nothing else does."""
_NATIVE: Final = frozenset({_IMPLICIT_LE, _EXPLICIT_LE, _DEFLATED_LE, _EXPLICIT_BE})
_WORD_SIZES: Final = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
_PIXEL_DATA: Final = 0x7FE00010
_ANY_PIXEL_DATA: Final = (0x7FE00008, 0x7FE00009, _PIXEL_DATA)
_UNDEFINED: Final = 0xFFFFFFFF
_INFLATE_CHUNK: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class _Syntax:
    uid: str
    implicit: bool
    little: bool
    deflated: bool
    encapsulated: bool

    @property
    def name(self) -> str:
        return f"{UID(self.uid).name} ({self.uid})"


def _syntax(uid: str, whose: str) -> _Syntax:
    """How data sets are encoded under transfer syntax `uid` (PS3.5 §10, Annex A)."""
    if uid in _NATIVE:
        return _Syntax(uid, uid == _IMPLICIT_LE, uid != _EXPLICIT_BE, uid == _DEFLATED_LE, False)
    known = is_uid_syntax(uid) and not UID(uid).is_private and UID(uid).is_transfer_syntax
    # A standard syntax newer than pydicom (JPEG XL, ...) is encapsulated too (PS3.5 A.4).
    if not (known or (is_uid_syntax(uid) and uid.startswith(_TS_ARC))):
        raise DatasetCodecError(
            f"{whose} {uid!r} is not a transfer syntax aiodicom knows; use a standard one "
            "(PS3.6 Annex A)"
        )
    return _Syntax(uid, False, True, uid in _DEFLATED_ENCAPSULATED, True)


# -- decoding ---------------------------------------------------------------------------------


class _Chunks:
    """A read/seek/tell file over buffers, without joining them; strict at the end.

    A read past the end raises instead of returning short data (pydicom would warn and
    carry on), except the one empty header read that tells pydicom the data set is over;
    no seek leaves the data, whatever a length field claims.
    """

    def __init__(self, views: list[memoryview]) -> None:
        self._views = views
        self._starts: list[int] = []
        total = 0
        for view in views:
            self._starts.append(total)
            total += len(view)
        self._length = total
        self._pos = 0
        self._ended = False

    @property
    def length(self) -> int:
        return self._length

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._length}[whence]
        target = base + offset
        if not 0 <= target <= self._length:
            raise DatasetCodecError("an element's length runs past the end of the data set")
        self._pos = target
        return target

    def read(self, size: int = -1) -> bytes:
        remaining = self._length - self._pos
        if size < 0:
            size = remaining
        if remaining == 0 and size == 8 and not self._ended:
            self._ended = True  # pydicom's one look for a next element header at the end
            return b""
        if size > remaining:
            raise DatasetCodecError("the data set ends inside an element (truncated)")
        index = bisect.bisect_right(self._starts, self._pos) - 1
        pieces = []
        pos, end = self._pos, self._pos + size
        while pos < end:
            view, start = self._views[index], self._starts[index]
            take = min(end, start + len(view)) - pos
            pieces.append(view[pos - start : pos - start + take])
            pos += take
            index += 1
        self._pos = end
        return pieces[0].tobytes() if len(pieces) == 1 else b"".join(pieces)


def _views(data: Buffer | Iterable[Buffer]) -> list[memoryview]:
    if isinstance(data, bytes | bytearray | memoryview):
        data = (data,)
    views = [memoryview(chunk).cast("B") for chunk in data]
    return [view for view in views if len(view)]


def _inflate(views: list[memoryview], limit: int) -> memoryview:
    """The raw deflate stream of PS3.5 §A.5, inflated to at most `limit` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    after: list[memoryview] = []
    try:
        for view in views:
            if inflater.eof:
                after.append(view)
                continue
            chunk: Buffer = view
            while chunk and not inflater.eof:
                out += inflater.decompress(chunk, _INFLATE_CHUNK)
                if len(out) > limit:
                    raise DatasetCodecError(
                        f"the deflated data set inflates to more than {limit} bytes; "
                        "raise max_inflated_size if that is expected"
                    )
                chunk = inflater.unconsumed_tail
    except zlib.error as exc:
        raise DatasetCodecError(f"the deflated data set does not inflate: {exc}") from None
    if not inflater.eof:
        raise DatasetCodecError("the deflated data set is truncated (no end of stream)")
    trailing = inflater.unused_data + b"".join(after)
    if trailing not in (b"", b"\x00"):
        raise DatasetCodecError(
            f"{len(trailing)} bytes follow the deflated data set (only a NUL pad may)"
        )
    return memoryview(out)


def _check_vr_mode(chunks: _Chunks, syntax: _Syntax) -> None:
    """Refuse explicit VR under an implicit syntax and the reverse (PS3.5 §7.1).

    pydicom would switch to what it finds with only a warning; the data set would then be
    labelled with a transfer syntax it was not encoded in.
    """
    first = chunks.read(min(6, chunks.length))
    chunks.seek(0)
    if len(first) < 6:
        return  # empty, or a truncated header that pydicom's read then refuses
    found_explicit = all(0x41 <= c <= 0x5A for c in first[4:6])
    if found_explicit == syntax.implicit:
        found = "explicit" if found_explicit else "implicit"
        raise DatasetCodecError(
            f"the data set is not encoded as {syntax.name} says ({found} VR found): the "
            "peer sent it on the wrong presentation context"
        )


def decode_dataset(
    data: Buffer | Iterable[Buffer],
    transfer_syntax_uid: str,
    *,
    max_inflated_size: int = MAX_INFLATED_SIZE,
) -> Dataset:
    """Decode a data set encoded under `transfer_syntax_uid`, from one or more buffers.

    Fragments (e.g. received PDVs) are read in place, never joined. Every element is
    parsed now, so a malformed value raises here rather than later in a handler; pydicom's
    warnings about values (query wildcards and ranges are not valid DA/UI values) are
    silenced. ``file_meta.TransferSyntaxUID`` is set to `transfer_syntax_uid`.
    Raises `DatasetCodecError`.
    """
    syntax = _syntax(transfer_syntax_uid, "transfer syntax")
    views = _views(data)
    if syntax.deflated:
        views = [_inflate(views, max_inflated_size)]
    chunks = _Chunks(views)
    _check_vr_mode(chunks, syntax)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if chunks.length:
                stream = cast(BinaryIO, chunks)  # read/seek/tell is all pydicom uses
                ds = read_dataset(stream, syntax.implicit, syntax.little)
            else:  # an empty data set (pydicom's reader wants a first element)
                ds = Dataset()
                ds.set_original_encoding(syntax.implicit, syntax.little, default_encoding)
            for _ in ds.iterall():
                pass
    except DatasetCodecError:
        raise
    except Exception as exc:  # pydicom on peer data: any failure means "does not parse"
        raise DatasetCodecError(
            f"the data set does not parse as {syntax.name}: {type(exc).__name__}: {exc}"
        ) from exc
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = UID(transfer_syntax_uid)
    ds.file_meta = meta
    return ds


# -- encoding ---------------------------------------------------------------------------------


def _own_syntax(ds: Dataset) -> str | None:
    meta = getattr(ds, "file_meta", None)
    if meta is None or "TransferSyntaxUID" not in meta:
        return None
    return str(meta.TransferSyntaxUID)


def _pixel_data_encapsulated(ds: Dataset) -> bool:
    if _PIXEL_DATA not in ds:
        return False
    elem = ds.get_item(_PIXEL_DATA)
    if isinstance(elem, RawDataElement):
        return elem.length == _UNDEFINED
    return bool(elem.is_undefined_length)


def _check_labels(ds: Dataset, target: _Syntax) -> None:
    """Refuse an encoding that would mislabel the pixel data (PS3.5 §8.2, §A.4)."""
    own_uid = _own_syntax(ds)
    has_pixels = any(tag in ds for tag in _ANY_PIXEL_DATA)
    if own_uid is not None:
        own = _syntax(own_uid, "the data set's file_meta.TransferSyntaxUID")
        # Without pixel data (a header, an identifier) there is nothing to mislabel.
        if own.encapsulated and own.uid != target.uid and has_pixels:
            raise TransferSyntaxMismatch(
                f"the data set is encoded as {own.name}; sending it as {target.name} would "
                "mislabel its compressed pixel data: use a presentation context with its own "
                "transfer syntax, or decompress it first"
            )
        encapsulated = own.encapsulated
    else:
        encapsulated = _pixel_data_encapsulated(ds)
        if encapsulated:
            raise TransferSyntaxMismatch(
                "the data set's Pixel Data is encapsulated but file_meta.TransferSyntaxUID "
                "does not say which compression: set it before encoding"
            )
    if target.encapsulated and not encapsulated and has_pixels:
        raise TransferSyntaxMismatch(
            f"the data set's pixel data is not compressed; sending it as {target.name} "
            "would mislabel it: use an uncompressed transfer syntax, or compress it first"
        )


def _source_little_endian(ds: Dataset) -> bool:
    """The byte order of the OW/OF/... values the data set holds.

    The order it was decoded from; else its file_meta transfer syntax; else little endian
    (what values built from bytes in memory are on every platform aiodicom runs on).
    """
    little = ds.original_encoding[1]
    if little is not None:
        return little
    own = _own_syntax(ds)
    return own != _EXPLICIT_BE


def _swap_words(value: bytes, size: int, tag: int) -> bytes:
    if len(value) % size:
        raise DatasetCodecError(
            f"({tag >> 16:04X},{tag & 0xFFFF:04X}) has {len(value)} bytes, not a multiple of "
            f"its {size}-byte words: it cannot be byte-swapped"
        )
    out = bytearray(len(value))
    for i in range(size):
        out[i::size] = value[size - 1 - i :: size]
    return bytes(out)


def _byte_swapped(ds: Dataset) -> Dataset:
    """A copy of `ds` whose OW/OF/OL/OD/OV values have the other byte order (recursive).

    Iterating converts raw elements and resolves ambiguous VRs (e.g. "OB or OW" Pixel
    Data) with the order they were read in; the caller's elements are shared, not changed.
    """
    out = Dataset()
    for elem in ds:
        if elem.VR == "SQ":
            items = Sequence([_byte_swapped(item) for item in elem.value])
            new = DataElement(elem.tag, "SQ", items)
            new.is_undefined_length = elem.is_undefined_length
            out.add(new)
        elif elem.VR in _WORD_SIZES and not elem.is_empty:
            if elem.is_buffered:
                raise DatasetCodecError(
                    f"({elem.tag.group:04X},{elem.tag.element:04X}) holds a buffered value, "
                    "which cannot be byte-swapped: read it into bytes first"
                )
            swapped = _swap_words(elem.value, _WORD_SIZES[elem.VR], elem.tag)
            out.add(DataElement(elem.tag, elem.VR, swapped))
        else:
            out.add(elem)
    return out


def encode_dataset(ds: Dataset, transfer_syntax_uid: str) -> bytes:
    """Encode `ds` under `transfer_syntax_uid` (PS3.5 §A.1-A.5), for a P-DATA or a file.

    Handles Implicit and Explicit VR Little Endian, Explicit VR Big Endian (multi-byte
    binary values byte-swapped when `ds` holds the other order), Deflated Explicit VR
    Little Endian and encapsulated syntaxes. Raises `TransferSyntaxMismatch` rather than
    mislabel pixel data, `DatasetCodecError` when pydicom cannot encode a value. Like
    pydicom's writer, it may convert `ds`'s raw elements in place.
    """
    target = _syntax(transfer_syntax_uid, "transfer syntax")
    _check_labels(ds, target)
    source = ds
    if _source_little_endian(ds) != target.little:
        source = _byte_swapped(ds)
    buf = DicomBytesIO()
    buf.is_little_endian = target.little
    buf.is_implicit_VR = target.implicit
    try:
        with warnings.catch_warnings():  # query keys: wildcards and ranges (PS3.4 C.2.2.2)
            warnings.simplefilter("ignore")
            write_dataset(buf, source)
    except Exception as exc:
        raise DatasetCodecError(
            f"the data set cannot be encoded as {target.name}: {type(exc).__name__}: {exc}"
        ) from exc
    encoded = buf.getvalue()
    if not target.deflated:
        return encoded
    deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = deflater.compress(encoded) + deflater.flush()
    return deflated + b"\x00" if len(deflated) % 2 else deflated
