"""A fixed-layout decoder for the commonest command sets: C-ECHO-RQ/RSP, C-STORE-RQ/RSP.

Nearly every command set an SCP sees is one of these four, written by every encoder we
know (DCMTK, pynetdicom, ours) in the same shape: (0000,0000) UL first, then a handful of
group 0000 elements in ascending order, each of the length its VR fixes. `decode_common`
reads exactly that shape in one pass, with no intermediate tag -> value dict and no
per-element VR dispatch, and returns None for anything else (another message, an element
it does not expect, a retired element, an odd length, an order PS3.7 does not ask for, a
malformed value): the caller then runs the general decoder, which decides, decodes or
raises. So the fast path never changes what is accepted or how a refusal reads; the
property tests (tests/core/dimse/test_fastpath.py) check that it agrees with the general
decoder on every input.
"""

from __future__ import annotations

import struct

from aiodicom.core.buffer import ReadableBuffer
from aiodicom.core.dimse.commands import MAX_COMMAND_SET_LENGTH, VR, _decode_string
from aiodicom.core.dimse.messages import (
    DATASET_ABSENT,
    CEchoRQ,
    CEchoRSP,
    CStoreRQ,
    CStoreRSP,
    Message,
    Priority,
)
from aiodicom.core.dimse.status import Status
from aiodicom.errors import DimseError

__all__ = ["decode_common"]

_HEADER = struct.Struct("<HHL")
_U16 = struct.Struct("<H")
_GROUP_LENGTH = b"\x00\x00\x00\x00\x04\x00\x00\x00"  # (0000,0000) UL, length 4
_US_TAGS = frozenset({0x0100, 0x0110, 0x0120, 0x0700, 0x0800, 0x0900})
# CommandField -> the US elements the message carries (each mandatory, PS3.7 Tables 9.3-1,
# 9.3-2, 9.3-12, 9.3-13; CommandDataSetType too). UIDs are checked per message below.
_ECHO_RQ = frozenset({0x0100, 0x0110, 0x0800})
_STORE_RQ = frozenset({0x0100, 0x0110, 0x0700, 0x0800})
_RSP = frozenset({0x0100, 0x0120, 0x0800, 0x0900})
_PRIORITIES = (Priority.MEDIUM, Priority.HIGH, Priority.LOW)


def decode_common(data: ReadableBuffer) -> Message | None:
    """The message, if ``data`` is one of the four common command sets in the usual shape;
    None otherwise (then `decode_message`'s general decoder takes it). Never raises."""
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.ndim != 1 or view.format != "B":
        return None
    total = len(view)
    if total > MAX_COMMAND_SET_LENGTH or total < 12 or view[:8] != _GROUP_LENGTH:
        return None
    unpack = _HEADER.unpack_from
    us: dict[int, int] = {}
    sop_class: memoryview | None = None
    instance: memoryview | None = None
    pos, last = 12, 0
    while pos < total:
        if total - pos < 8:
            return None
        group, element, length = unpack(view, pos)
        pos += 8
        if group or element <= last or length > total - pos:
            return None  # another group, out of order or repeated, or past the end
        last = element
        if element in _US_TAGS:
            if length != 2:
                return None
            us[element] = _U16.unpack_from(view, pos)[0]
        elif element == 0x0002:
            sop_class = view[pos : pos + length]
        elif element == 0x1000:
            instance = view[pos : pos + length]
        else:
            return None  # anything rarer (retired, move originator, error comment...)
        pos += length
    try:
        return _build(us, sop_class, instance)
    except DimseError:  # a malformed UID: the general decoder words the refusal
        return None


_UIDS: dict[bytes, str | None] = {}
"""Raw UID bytes -> checked value: SOP class UIDs repeat in every message. Bounded."""


def _uid(tag: int, raw: memoryview | None) -> str | None:
    """The UID, or None when absent or empty (the general decoder's "absent")."""
    if raw is None:
        return None
    key = raw.tobytes()
    value = _UIDS.get(key)
    if value is None:
        value = _decode_string(tag, VR.UI, raw) or None  # raises on a malformed UID
        if len(_UIDS) >= 256:
            _UIDS.clear()
        _UIDS[key] = value
    return value


def _build(us: dict[int, int], sop_class_raw: memoryview | None,
           instance_raw: memoryview | None) -> Message | None:
    command = us.get(0x0100)
    keys = us.keys()
    sop_class = _uid(0x0002, sop_class_raw)
    has_dataset = us.get(0x0800) != DATASET_ABSENT
    if command == 0x0030:
        if keys != _ECHO_RQ or sop_class is None or instance_raw is not None:
            return None
        return CEchoRQ(message_id=us[0x0110], affected_sop_class_uid=sop_class,
                       has_dataset=has_dataset)
    if command == 0x0001:
        instance = _uid(0x1000, instance_raw)
        if keys != _STORE_RQ or sop_class is None or instance is None:
            return None
        priority = us[0x0700]
        return CStoreRQ(message_id=us[0x0110], affected_sop_class_uid=sop_class,
                        affected_sop_instance_uid=instance,
                        priority=_PRIORITIES[priority] if priority < 3 else priority,
                        has_dataset=has_dataset)
    if keys != _RSP:
        return None
    if command == 0x8030:
        if instance_raw is not None:
            return None
        return CEchoRSP(message_id_being_responded_to=us[0x0120], status=Status(us[0x0900]),
                        affected_sop_class_uid=sop_class, has_dataset=has_dataset)
    if command == 0x8001:
        return CStoreRSP(message_id_being_responded_to=us[0x0120], status=Status(us[0x0900]),
                         affected_sop_class_uid=sop_class,
                         affected_sop_instance_uid=_uid(0x1000, instance_raw),
                         has_dataset=has_dataset)
    return None
