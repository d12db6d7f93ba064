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

Before that loop, `_decode_request` reads the two requests an SCP sees most, C-ECHO-RQ and
C-STORE-RQ, in their canonical element order (what DCMTK, pynetdicom and we write) with one
struct unpack per run of fixed-size elements and integer compares of each element's tag and
length as a single 64-bit field; any other byte (another element, order or length) declines
to the loop, which is then left with the two responses (the requests in any other shape go
to the general decoder). The messages are built with ``object.__new__`` and slot setters: the frozen
dataclass ``__init__`` costs several times more, and the object is the same (class, fields,
equality, immutability).
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
# The US elements a response carries (each mandatory, PS3.7 Tables 9.3-2, 9.3-13;
# CommandDataSetType too). UIDs are checked per message below.
_RSP = frozenset({0x0100, 0x0120, 0x0800, 0x0900})
_PRIORITIES = (Priority.MEDIUM, Priority.HIGH, Priority.LOW)

# -- the canonical requests, straight-line ---------------------------------------------------
# An element header (group 0000, element, 32-bit length) read as one little-endian 64-bit
# integer: element << 16 | length << 32.
_HEAD = struct.Struct("<QLQ")  # (0000,0000) UL 4 header, its value, (0000,0002)'s header
_GROUP_LENGTH_Q = 4 << 32
_SOP_CLASS_Q = 0x0002 << 16  # | length << 32
_ECHO_TAIL = struct.Struct("<QHQHQH")  # (0100) (0110) (0800), each US of length 2
_STORE_TAIL = struct.Struct("<QHQHQHQHQ")  # (0100) (0110) (0700) (0800), (1000)'s header
_US_Q = 2 << 32
_COMMAND_FIELD_Q = 0x0100 << 16 | _US_Q
_MESSAGE_ID_Q = 0x0110 << 16 | _US_Q
_PRIORITY_Q = 0x0700 << 16 | _US_Q
_DATASET_TYPE_Q = 0x0800 << 16 | _US_Q
_INSTANCE_Q = 0x1000 << 16

_UID_CHARS = b"0123456789."
_new_object = object.__new__
_ECHO_SET = tuple(CEchoRQ.__dict__[n].__set__ for n in (
    "message_id", "affected_sop_class_uid", "has_dataset"))
_STORE_SET = tuple(CStoreRQ.__dict__[n].__set__ for n in (
    "message_id", "affected_sop_class_uid", "affected_sop_instance_uid", "priority",
    "move_originator_ae_title", "move_originator_message_id", "has_dataset"))


def _decode_request(view: memoryview, total: int) -> Message | None:
    """C-ECHO-RQ or C-STORE-RQ in canonical order, or None (then the loop below decides)."""
    if total < 30:
        return None
    head_q, _, class_q = _HEAD.unpack_from(view, 0)
    class_len = class_q >> 32
    if head_q != _GROUP_LENGTH_Q or class_q & 0xFFFFFFFF != _SOP_CLASS_Q or not class_len:
        return None
    at = 20 + class_len
    left = total - at
    if left == 30:
        q1, command, q2, message_id, q3, dataset_type = _ECHO_TAIL.unpack_from(view, at)
        if (command != 0x0030 or q1 != _COMMAND_FIELD_Q or q2 != _MESSAGE_ID_Q
                or q3 != _DATASET_TYPE_Q):
            return None
        raw_class = view[20:at]
        sop_class = _UIDS.get(raw_class.tobytes()) or _uid(0x0002, raw_class)  # a hit inline
        if sop_class is None:
            return None
        echo: CEchoRQ = _new_object(CEchoRQ)
        set_id, set_class, set_dataset = _ECHO_SET
        set_id(echo, message_id)
        set_class(echo, sop_class)
        set_dataset(echo, dataset_type != DATASET_ABSENT)
        return echo
    if left <= 48:
        return None
    (q1, command, q2, message_id, q3, priority, q4, dataset_type,
     q5) = _STORE_TAIL.unpack_from(view, at)
    if (command != 0x0001 or q1 != _COMMAND_FIELD_Q or q2 != _MESSAGE_ID_Q
            or q3 != _PRIORITY_Q or q4 != _DATASET_TYPE_Q or q5 != _INSTANCE_Q | (left - 48) << 32):
        return None
    raw_class = view[20:at]
    sop_class = _UIDS.get(raw_class.tobytes()) or _uid(0x0002, raw_class)  # a hit inline
    instance = _instance_uid(view[at + 48 : total])
    if sop_class is None or instance is None:
        return None
    store: CStoreRQ = _new_object(CStoreRQ)
    s_id, s_class, s_instance, s_priority, s_ae, s_origin_id, s_dataset = _STORE_SET
    s_id(store, message_id)
    s_class(store, sop_class)
    s_instance(store, instance)
    s_priority(store, _PRIORITIES[priority] if priority < 3 else priority)
    s_ae(store, None)
    s_origin_id(store, None)
    s_dataset(store, dataset_type != DATASET_ABSENT)
    return store


def _instance_uid(raw: memoryview) -> str | None:
    """A SOP instance UID as the general decoder reads it (PS3.5 §9.1, padding stripped),
    or None if empty or malformed. Not cached: each instance has its own."""
    data = raw.tobytes().rstrip(b"\0 ").lstrip(b" ")
    # `_UID.fullmatch` (digits, dots, no empty component) without the regex engine; find,
    # not `in`: bytes.__contains__ first tries the operand as an int and raises inside
    if (not data or len(data) > 64 or data.translate(None, _UID_CHARS) or data[0] == 0x2E
            or data[-1] == 0x2E or data.find(b"..") != -1):
        return None
    return data.decode("ascii")


def decode_common(data: ReadableBuffer) -> Message | None:
    """The message, if ``data`` is one of the four common command sets in the usual shape;
    None otherwise (then `decode_message`'s general decoder takes it). Never raises."""
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.ndim != 1 or view.format != "B":
        return None
    total = len(view)
    if total > MAX_COMMAND_SET_LENGTH:
        return None
    try:
        message = _decode_request(view, total)
    except DimseError:  # a malformed SOP class UID: the general decoder words the refusal
        return None
    if message is not None:
        return message
    if total < 12 or view[:8] != _GROUP_LENGTH:
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
    if command == 0x0030 or command == 0x0001:
        # C-ECHO-RQ, C-STORE-RQ: the only order and elements this loop would take are the
        # canonical ones, which `_decode_request` reads (and declines exactly when this
        # would); what is left here is for the general decoder.
        return None
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
