"""The DIMSE command set codec: group 0000 elements in Implicit VR Little Endian.

A command set is always Implicit VR Little Endian whatever the presentation context says
(PS3.7 §6.3.1), so the VR of each element comes from the registry of command elements
(PS3.7 Annex E, Table E.1-1), transcribed in `COMMAND_ELEMENTS`. Decoding trusts no length:
every element length is checked against the bytes left and each value against its VR; the
group length is required but, being derived from the framing, only advice (a wrong one is
ignored, as DCMTK and pynetdicom do); the only exception it raises is
`DimseError`. Unknown (retired) group 0000 elements are skipped, anything outside group
0000 is refused (PS3.7 §6.3.1: a command set holds no data elements).
"""

from __future__ import annotations

import enum
import functools
import re
import struct
from collections.abc import Mapping

from aiodicom.core.ae_titles import is_valid_ae_title
from aiodicom.core.buffer import ReadableBuffer
from aiodicom.errors import DimseError

__all__ = [
    "COMMAND_ELEMENTS",
    "MAX_COMMAND_SET_LENGTH",
    "CommandValue",
    "VR",
    "decode_command_set",
    "encode_command_set",
]

MAX_COMMAND_SET_LENGTH = 64 * 1024
"""The largest command set we accept: real ones are a few hundred bytes."""

CommandValue = int | str | tuple[int, ...]
"""US/UL -> int, UI/AE/LO -> str (padding removed), AT -> tuple of (group << 16 | element)."""


class VR(enum.Enum):
    """The value representations used by command elements (PS3.5 §6.2)."""

    UL = "UL"
    US = "US"
    UI = "UI"
    AE = "AE"
    LO = "LO"
    AT = "AT"


COMMAND_ELEMENTS: dict[int, tuple[str, VR]] = {
    0x0000: ("CommandGroupLength", VR.UL),
    0x0002: ("AffectedSOPClassUID", VR.UI),
    0x0003: ("RequestedSOPClassUID", VR.UI),
    0x0100: ("CommandField", VR.US),
    0x0110: ("MessageID", VR.US),
    0x0120: ("MessageIDBeingRespondedTo", VR.US),
    0x0600: ("MoveDestination", VR.AE),
    0x0700: ("Priority", VR.US),
    0x0800: ("CommandDataSetType", VR.US),
    0x0900: ("Status", VR.US),
    0x0901: ("OffendingElement", VR.AT),
    0x0902: ("ErrorComment", VR.LO),
    0x0903: ("ErrorID", VR.US),
    0x1000: ("AffectedSOPInstanceUID", VR.UI),
    0x1001: ("RequestedSOPInstanceUID", VR.UI),
    0x1002: ("EventTypeID", VR.US),
    0x1005: ("AttributeIdentifierList", VR.AT),
    0x1008: ("ActionTypeID", VR.US),
    0x1020: ("NumberOfRemainingSuboperations", VR.US),
    0x1021: ("NumberOfCompletedSuboperations", VR.US),
    0x1022: ("NumberOfFailedSuboperations", VR.US),
    0x1023: ("NumberOfWarningSuboperations", VR.US),
    0x1030: ("MoveOriginatorApplicationEntityTitle", VR.AE),
    0x1031: ("MoveOriginatorMessageID", VR.US),
}
"""Command element tag (group 0000, so the tag is the element number) -> (keyword, VR).

PS3.7 Table E.1-1, current elements only; retired ones are skipped when received.
"""

_ELEMENT_HEADER = struct.Struct("<HHL")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<L")
_GROUP_LENGTH_ELEMENT = 12  # header (8) + UL value (4)

# Digits and dots, no empty component: never "..", "/" or "\\", so safe in a path. Leading
# zeros in a component break PS3.5 §9.1 but are common in the field, so they pass here;
# `aiodicom.core.uids` is the strict check for where that matters.
_UID = re.compile(rb"[0-9]+(?:\.[0-9]+)*")
_MAX_UID = 64
# AE titles follow `aiodicom.core.ae_titles`.
# LO/AE: printable ISO 646 (the default repertoire, PS3.5 §6.1.2) without "\\", which
# separates values (PS3.5 §6.2) and these elements hold one value.
_PRINTABLE = bytes(b for b in range(0x20, 0x7F) if b != 0x5C)
_TO_PRINTABLE = bytes(b if b in _PRINTABLE else 0x3F for b in range(256))


def _name(tag: int) -> str:
    entry = COMMAND_ELEMENTS.get(tag)
    keyword = entry[0] if entry else "unknown element"
    return f"(0000,{tag:04X}) {keyword}"


# -- encoding ------------------------------------------------------------------------------


def _encode_string(tag: int, vr: VR, value: object) -> bytes:
    if isinstance(value, str) and len(value) <= _MAX_UID:
        return _encode_string_cached(tag, vr, value)
    return _encode_string_checked(tag, vr, value)


@functools.lru_cache(maxsize=1024)
def _encode_string_cached(tag: int, vr: VR, value: str) -> bytes:
    """SOP class UIDs and AE titles repeat in every message: validate and pad them once."""
    return _encode_string_checked(tag, vr, value)


def _encode_string_checked(tag: int, vr: VR, value: object) -> bytes:
    if not isinstance(value, str):
        raise DimseError(f"{_name(tag)} must be a str, not {type(value).__name__}")
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError:
        raise DimseError(f"{_name(tag)} must be ASCII, got {value!r}") from None
    if vr is VR.UI:
        if len(raw) > _MAX_UID or not _UID.fullmatch(raw):
            raise DimseError(f"{_name(tag)} is not a UID (digits and dots, 1-64): {value!r}")
        return raw + b"\0" if len(raw) % 2 else raw
    if raw.translate(None, _PRINTABLE):
        raise DimseError(f"{_name(tag)} has non-printable characters or '\\': {value!r}")
    if vr is VR.AE and not is_valid_ae_title(value):
        raise DimseError(f"{_name(tag)} must be 1-16 characters, not all spaces: {value!r}")
    return raw + b" " if len(raw) % 2 else raw


def _encode_value(tag: int, vr: VR, value: object) -> bytes:
    if vr is VR.US or vr is VR.UL:
        limit = 0xFFFF if vr is VR.US else 0xFFFFFFFF
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
            raise DimseError(f"{_name(tag)} must be an int in 0..{limit:#x}, not {value!r}")
        return (_U16 if vr is VR.US else _U32).pack(value)
    if vr is VR.AT:
        if not isinstance(value, tuple) or not value:
            raise DimseError(f"{_name(tag)} must be a non-empty tuple of tags, not {value!r}")
        parts = []
        for item in value:
            if not isinstance(item, int) or isinstance(item, bool) or not 0 <= item <= 0xFFFFFFFF:
                raise DimseError(f"{_name(tag)}: {item!r} is not a 32-bit tag")
            parts.append(struct.pack("<HH", item >> 16, item & 0xFFFF))
        return b"".join(parts)
    return _encode_string(tag, vr, value)


def encode_command_set(elements: Mapping[int, CommandValue]) -> bytes:
    """Encode command elements (tag -> value) as Implicit VR Little Endian (PS3.7 §6.3.1).

    (0000,0000) CommandGroupLength is computed and written first, the rest follow in
    ascending tag order. UI values are padded with NUL, AE/LO with a space. Raises
    `DimseError` for a tag not in `COMMAND_ELEMENTS` or a value its VR cannot hold.
    """
    parts: list[bytes] = []
    for tag in sorted(elements):
        if tag == 0x0000:
            continue
        entry = COMMAND_ELEMENTS.get(tag)
        if entry is None:
            raise DimseError(f"(0000,{tag:04X}) is not a command element (PS3.7 Table E.1-1)")
        raw = _encode_value(tag, entry[1], elements[tag])
        parts.append(_ELEMENT_HEADER.pack(0x0000, tag, len(raw)))
        parts.append(raw)
    body = b"".join(parts)
    header = _ELEMENT_HEADER.pack(0x0000, 0x0000, 4) + _U32.pack(len(body))
    return header + body


# -- decoding ------------------------------------------------------------------------------


def _decode_string(tag: int, vr: VR, raw: memoryview) -> str:
    data = bytes(raw)
    if len(data) <= _MAX_UID + 2:
        return _decode_string_cached(tag, vr, data)
    return _decode_string_checked(tag, vr, data)


@functools.lru_cache(maxsize=1024)
def _decode_string_cached(tag: int, vr: VR, data: bytes) -> str:
    """The same UIDs and AE titles arrive in every message: check and strip them once."""
    return _decode_string_checked(tag, vr, data)


def _decode_string_checked(tag: int, vr: VR, data: bytes) -> str:
    if vr is VR.UI:
        data = data.rstrip(b"\0 ").lstrip(b" ")
        if data and (len(data) > _MAX_UID or not _UID.fullmatch(data)):
            raise DimseError(f"{_name(tag)} is not a valid UID: {data[:80]!r}")
        return data.decode("ascii")
    data = data.rstrip(b"\0 ").lstrip(b" ")
    if vr is VR.AE:
        if data and not is_valid_ae_title(data.decode("latin-1")):  # empty: absent
            raise DimseError(f"{_name(tag)} is not a valid AE title: {data[:80]!r}")
        return data.decode("ascii")
    # LO (ErrorComment): informational text; keep it printable rather than refuse it.
    return data.translate(_TO_PRINTABLE).decode("ascii")


def _decode_value(tag: int, vr: VR, raw: memoryview) -> CommandValue:
    length = len(raw)
    if vr is VR.US:
        if length != 2:
            raise DimseError(f"{_name(tag)} (US) has length {length}, expected 2")
        return int(_U16.unpack_from(raw)[0])
    if vr is VR.UL:  # pragma: no cover - (0000,0000) is the only UL, read before the loop
        if length != 4:
            raise DimseError(f"{_name(tag)} (UL) has length {length}, expected 4")
        return int(_U32.unpack_from(raw)[0])
    if vr is VR.AT:
        if length == 0 or length % 4:
            raise DimseError(f"{_name(tag)} (AT) has length {length}, not a multiple of 4")
        pairs = struct.iter_unpack("<HH", raw)
        return tuple((group << 16) | element for group, element in pairs)
    return _decode_string(tag, vr, raw)


def decode_command_set(
    data: ReadableBuffer, *, max_length: int = MAX_COMMAND_SET_LENGTH
) -> dict[int, CommandValue]:
    """Decode an Implicit VR Little Endian command set into tag -> value.

    The group length is required first; its value is not checked (the PDV framing ends
    the command set) and not returned. Tags may arrive in any order (PS3.7 asks for
    ascending order; order carries no meaning) but at most once. Raises `DimseError` on
    anything malformed.
    """
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.ndim != 1 or view.format != "B":
        view = view.cast("B")
    total = len(view)
    if total > max_length:
        raise DimseError(f"command set of {total} bytes is over the limit of {max_length}")
    if total < _GROUP_LENGTH_ELEMENT:
        raise DimseError(f"command set of {total} bytes is too short for its group length")
    group, element, length = _ELEMENT_HEADER.unpack_from(view, 0)
    if (group, element, length) != (0x0000, 0x0000, 4):
        raise DimseError(
            f"command set must start with (0000,0000) CommandGroupLength of length 4, "
            f"found ({group:04X},{element:04X}) of length {length}"
        )
    # (0000,0000)'s value is redundant with the PDV framing, which ends the command set:
    # one that disagrees is advice we do not follow (DCMTK and pynetdicom answer it too).
    elements: dict[int, CommandValue] = {}
    pos = _GROUP_LENGTH_ELEMENT
    while pos < total:
        if total - pos < _ELEMENT_HEADER.size:
            raise DimseError(f"truncated element header at offset {pos}")
        group, element, length = _ELEMENT_HEADER.unpack_from(view, pos)
        pos += _ELEMENT_HEADER.size
        if group != 0x0000:
            raise DimseError(
                f"element ({group:04X},{element:04X}) at offset {pos - 8} is not in group "
                "0000: a command set holds command elements only (PS3.7 §6.3.1)"
            )
        if length > total - pos:
            raise DimseError(
                f"{_name(element)} at offset {pos - 8} claims {length} bytes "
                f"but only {total - pos} remain"
            )
        if element in elements or element == 0x0000:
            raise DimseError(f"{_name(element)} occurs more than once")
        entry = COMMAND_ELEMENTS.get(element)
        if entry is not None:
            elements[element] = _decode_value(element, entry[1], view[pos : pos + length])
        pos += length
    return elements
