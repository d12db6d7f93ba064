"""The DIMSE messages as frozen dataclasses, and their command-set codec (PS3.7 §9.3, §10.3).

Each class holds the command fields PS3.7 defines for one message, in snake_case; the data
set is not part of the message (it travels as fragments, see `fragments`), only whether
one follows (``has_dataset``: CommandDataSetType 0101H means none, PS3.7 §E.1). Optional
fields are None when absent. Every response also carries the status-related fields
(error comment, error ID, offending element; PS3.7 Annex C), all optional.

Decoding is table-driven: the field name gives the command element (`FIELD_TAGS`), the
element's VR gives the Python type, and ``_REQUIRED`` names the fields PS3.7 marks
mandatory (M) for the message, whose absence is a `DimseError`.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from aiodicom.core.buffer import ReadableBuffer
from aiodicom.core.dimse.commands import (
    COMMAND_ELEMENTS,
    CommandValue,
    decode_command_set,
    encode_command_set,
)
from aiodicom.core.dimse.status import Status
from aiodicom.errors import DimseError

__all__ = [
    "DATASET_ABSENT",
    "DATASET_PRESENT",
    "FIELD_TAGS",
    "MESSAGE_TYPES",
    "VERIFICATION_SOP_CLASS",
    "CCancelRQ",
    "CEchoRQ",
    "CEchoRSP",
    "CFindRQ",
    "CFindRSP",
    "CGetRQ",
    "CGetRSP",
    "CMoveRQ",
    "CMoveRSP",
    "CStoreRQ",
    "CStoreRSP",
    "Message",
    "NActionRQ",
    "NActionRSP",
    "NCreateRQ",
    "NCreateRSP",
    "NDeleteRQ",
    "NDeleteRSP",
    "NEventReportRQ",
    "NEventReportRSP",
    "NGetRQ",
    "NGetRSP",
    "NSetRQ",
    "NSetRSP",
    "Priority",
    "decode_message",
    "encode_message",
    "message_name",
]

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
DATASET_ABSENT = 0x0101
"""CommandDataSetType meaning "no data set" (PS3.7 §E.1); any other value means one follows."""
DATASET_PRESENT = 0x0001
"""The value we send when a data set follows (as pynetdicom does)."""


class Priority(enum.IntEnum):
    """(0000,0700) Priority (PS3.7 Table E.1-1)."""

    MEDIUM = 0x0000
    HIGH = 0x0001
    LOW = 0x0002


FIELD_TAGS: dict[str, int] = {
    "affected_sop_class_uid": 0x0002,
    "requested_sop_class_uid": 0x0003,
    "message_id": 0x0110,
    "message_id_being_responded_to": 0x0120,
    "move_destination": 0x0600,
    "priority": 0x0700,
    "status": 0x0900,
    "offending_element": 0x0901,
    "error_comment": 0x0902,
    "error_id": 0x0903,
    "affected_sop_instance_uid": 0x1000,
    "requested_sop_instance_uid": 0x1001,
    "event_type_id": 0x1002,
    "attribute_identifier_list": 0x1005,
    "action_type_id": 0x1008,
    "number_of_remaining_suboperations": 0x1020,
    "number_of_completed_suboperations": 0x1021,
    "number_of_failed_suboperations": 0x1022,
    "number_of_warning_suboperations": 0x1023,
    "move_originator_ae_title": 0x1030,
    "move_originator_message_id": 0x1031,
}
"""Message field name -> command element tag (group 0000)."""

_RQ = frozenset({"message_id"})
_RSP = frozenset({"message_id_being_responded_to", "status"})
_N_REQUESTED = _RQ | {"requested_sop_class_uid", "requested_sop_instance_uid"}


@dataclass(frozen=True, slots=True, kw_only=True)
class _Response:
    """Fields shared by every response: the request answered, the status, status details."""

    message_id_being_responded_to: int
    status: Status = Status.SUCCESS
    affected_sop_class_uid: str | None = None
    error_comment: str | None = None
    """(0000,0902): free text about a failure (PS3.7 §C.4)."""
    error_id: int | None = None
    """(0000,0903): implementation-specific error code."""
    offending_element: tuple[int, ...] | None = None
    """(0000,0901): tags (group << 16 | element) of the elements at fault."""
    has_dataset: bool = False


# -- composite services (PS3.7 §9.3) -------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CEchoRQ:
    """C-ECHO-RQ (PS3.7 §9.3.5.1, Table 9.3-12)."""

    COMMAND_FIELD: ClassVar[int] = 0x0030
    _REQUIRED: ClassVar[frozenset[str]] = _RQ | {"affected_sop_class_uid"}
    message_id: int
    affected_sop_class_uid: str = VERIFICATION_SOP_CLASS
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class CEchoRSP(_Response):
    """C-ECHO-RSP (PS3.7 §9.3.5.2, Table 9.3-13)."""

    COMMAND_FIELD: ClassVar[int] = 0x8030
    _REQUIRED: ClassVar[frozenset[str]] = _RSP


@dataclass(frozen=True, slots=True, kw_only=True)
class CStoreRQ:
    """C-STORE-RQ (PS3.7 §9.3.1.1, Table 9.3-1); the data set is mandatory."""

    COMMAND_FIELD: ClassVar[int] = 0x0001
    _REQUIRED: ClassVar[frozenset[str]] = _RQ | {
        "affected_sop_class_uid",
        "affected_sop_instance_uid",
        "priority",
    }
    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    priority: int = Priority.MEDIUM
    move_originator_ae_title: str | None = None
    """Set when the store is a sub-operation of a C-MOVE: the AE that asked for the move."""
    move_originator_message_id: int | None = None
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CStoreRSP(_Response):
    """C-STORE-RSP (PS3.7 §9.3.1.2, Table 9.3-2)."""

    COMMAND_FIELD: ClassVar[int] = 0x8001
    _REQUIRED: ClassVar[frozenset[str]] = _RSP
    affected_sop_instance_uid: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CFindRQ:
    """C-FIND-RQ (PS3.7 §9.3.2.1, Table 9.3-3); the identifier is the data set."""

    COMMAND_FIELD: ClassVar[int] = 0x0020
    _REQUIRED: ClassVar[frozenset[str]] = _RQ | {"affected_sop_class_uid", "priority"}
    message_id: int
    affected_sop_class_uid: str
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CFindRSP(_Response):
    """C-FIND-RSP (PS3.7 §9.3.2.2, Table 9.3-4); pending responses carry an identifier."""

    COMMAND_FIELD: ClassVar[int] = 0x8020
    _REQUIRED: ClassVar[frozenset[str]] = _RSP


@dataclass(frozen=True, slots=True, kw_only=True)
class CGetRQ:
    """C-GET-RQ (PS3.7 §9.3.3.1, Table 9.3-6)."""

    COMMAND_FIELD: ClassVar[int] = 0x0010
    _REQUIRED: ClassVar[frozenset[str]] = _RQ | {"affected_sop_class_uid", "priority"}
    message_id: int
    affected_sop_class_uid: str
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CGetRSP(_Response):
    """C-GET-RSP (PS3.7 §9.3.3.2, Table 9.3-7); sub-operation counts are conditional."""

    COMMAND_FIELD: ClassVar[int] = 0x8010
    _REQUIRED: ClassVar[frozenset[str]] = _RSP
    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CMoveRQ:
    """C-MOVE-RQ (PS3.7 §9.3.4.1, Table 9.3-9)."""

    COMMAND_FIELD: ClassVar[int] = 0x0021
    _REQUIRED: ClassVar[frozenset[str]] = _RQ | {
        "affected_sop_class_uid",
        "priority",
        "move_destination",
    }
    message_id: int
    affected_sop_class_uid: str
    move_destination: str
    priority: int = Priority.MEDIUM
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class CMoveRSP(_Response):
    """C-MOVE-RSP (PS3.7 §9.3.4.2, Table 9.3-10)."""

    COMMAND_FIELD: ClassVar[int] = 0x8021
    _REQUIRED: ClassVar[frozenset[str]] = _RSP
    number_of_remaining_suboperations: int | None = None
    number_of_completed_suboperations: int | None = None
    number_of_failed_suboperations: int | None = None
    number_of_warning_suboperations: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CCancelRQ:
    """C-CANCEL-RQ (PS3.7 §9.3.2.3, Table 9.3-5): cancels the operation with that message ID."""

    COMMAND_FIELD: ClassVar[int] = 0x0FFF
    _REQUIRED: ClassVar[frozenset[str]] = frozenset({"message_id_being_responded_to"})
    message_id_being_responded_to: int
    has_dataset: bool = False


# -- normalized services (PS3.7 §10.3) -----------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class NEventReportRQ:
    """N-EVENT-REPORT-RQ (PS3.7 §10.3.1, Table 10.3-1); event information is optional."""

    COMMAND_FIELD: ClassVar[int] = 0x0100
    _REQUIRED: ClassVar[frozenset[str]] = _RQ | {
        "affected_sop_class_uid",
        "affected_sop_instance_uid",
        "event_type_id",
    }
    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str
    event_type_id: int
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NEventReportRSP(_Response):
    """N-EVENT-REPORT-RSP (PS3.7 §10.3.1, Table 10.3-2)."""

    COMMAND_FIELD: ClassVar[int] = 0x8100
    _REQUIRED: ClassVar[frozenset[str]] = _RSP
    affected_sop_instance_uid: str | None = None
    event_type_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NGetRQ:
    """N-GET-RQ (PS3.7 §10.3.2, Table 10.3-3); no list means all attributes."""

    COMMAND_FIELD: ClassVar[int] = 0x0110
    _REQUIRED: ClassVar[frozenset[str]] = _N_REQUESTED
    message_id: int
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    attribute_identifier_list: tuple[int, ...] | None = None
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NGetRSP(_Response):
    """N-GET-RSP (PS3.7 §10.3.2, Table 10.3-4); the attribute list is the data set."""

    COMMAND_FIELD: ClassVar[int] = 0x8110
    _REQUIRED: ClassVar[frozenset[str]] = _RSP
    affected_sop_instance_uid: str | None = None
    attribute_identifier_list: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NSetRQ:
    """N-SET-RQ (PS3.7 §10.3.3, Table 10.3-5); the modification list is mandatory."""

    COMMAND_FIELD: ClassVar[int] = 0x0120
    _REQUIRED: ClassVar[frozenset[str]] = _N_REQUESTED
    message_id: int
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    has_dataset: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class NSetRSP(_Response):
    """N-SET-RSP (PS3.7 §10.3.3, Table 10.3-6)."""

    COMMAND_FIELD: ClassVar[int] = 0x8120
    _REQUIRED: ClassVar[frozenset[str]] = _RSP
    affected_sop_instance_uid: str | None = None
    attribute_identifier_list: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NActionRQ:
    """N-ACTION-RQ (PS3.7 §10.3.4, Table 10.3-7); action information is optional."""

    COMMAND_FIELD: ClassVar[int] = 0x0130
    _REQUIRED: ClassVar[frozenset[str]] = _N_REQUESTED | {"action_type_id"}
    message_id: int
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    action_type_id: int
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NActionRSP(_Response):
    """N-ACTION-RSP (PS3.7 §10.3.4, Table 10.3-8)."""

    COMMAND_FIELD: ClassVar[int] = 0x8130
    _REQUIRED: ClassVar[frozenset[str]] = _RSP
    affected_sop_instance_uid: str | None = None
    action_type_id: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NCreateRQ:
    """N-CREATE-RQ (PS3.7 §10.3.5, Table 10.3-9); the attribute list is optional."""

    COMMAND_FIELD: ClassVar[int] = 0x0140
    _REQUIRED: ClassVar[frozenset[str]] = _RQ | {"affected_sop_class_uid"}
    message_id: int
    affected_sop_class_uid: str
    affected_sop_instance_uid: str | None = None
    """None asks the SCP to assign the instance UID."""
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NCreateRSP(_Response):
    """N-CREATE-RSP (PS3.7 §10.3.5, Table 10.3-10)."""

    COMMAND_FIELD: ClassVar[int] = 0x8140
    _REQUIRED: ClassVar[frozenset[str]] = _RSP
    affected_sop_instance_uid: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class NDeleteRQ:
    """N-DELETE-RQ (PS3.7 §10.3.6, Table 10.3-11)."""

    COMMAND_FIELD: ClassVar[int] = 0x0150
    _REQUIRED: ClassVar[frozenset[str]] = _N_REQUESTED
    message_id: int
    requested_sop_class_uid: str
    requested_sop_instance_uid: str
    has_dataset: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class NDeleteRSP(_Response):
    """N-DELETE-RSP (PS3.7 §10.3.6, Table 10.3-12)."""

    COMMAND_FIELD: ClassVar[int] = 0x8150
    _REQUIRED: ClassVar[frozenset[str]] = _RSP
    affected_sop_instance_uid: str | None = None


Message = (
    CEchoRQ
    | CEchoRSP
    | CStoreRQ
    | CStoreRSP
    | CFindRQ
    | CFindRSP
    | CGetRQ
    | CGetRSP
    | CMoveRQ
    | CMoveRSP
    | CCancelRQ
    | NEventReportRQ
    | NEventReportRSP
    | NGetRQ
    | NGetRSP
    | NSetRQ
    | NSetRSP
    | NActionRQ
    | NActionRSP
    | NCreateRQ
    | NCreateRSP
    | NDeleteRQ
    | NDeleteRSP
)
"""Any DIMSE message."""

_ALL: tuple[type[Message], ...] = (
    CEchoRQ, CEchoRSP, CStoreRQ, CStoreRSP, CFindRQ, CFindRSP, CGetRQ, CGetRSP,
    CMoveRQ, CMoveRSP, CCancelRQ, NEventReportRQ, NEventReportRSP, NGetRQ, NGetRSP,
    NSetRQ, NSetRSP, NActionRQ, NActionRSP, NCreateRQ, NCreateRSP, NDeleteRQ, NDeleteRSP,
)  # fmt: skip

MESSAGE_TYPES: dict[int, type[Message]] = {cls.COMMAND_FIELD: cls for cls in _ALL}
"""CommandField (0000,0100) -> message class."""

# Per class: (field name, tag) for every command field, in declaration order.
_PLANS: dict[type[Message], tuple[tuple[str, int], ...]] = {
    cls: tuple(
        (f.name, FIELD_TAGS[f.name]) for f in dataclasses.fields(cls) if f.name != "has_dataset"
    )
    for cls in _ALL
}


def _label(cls: type[Message]) -> str:
    """``CEchoRQ`` -> ``C-ECHO-RQ``, ``NEventReportRSP`` -> ``N-EVENT-REPORT-RSP``."""
    name = cls.__name__
    suffix = "RSP" if name.endswith("RSP") else "RQ"
    words = re.sub(r"(?<!^)(?=[A-Z])", "-", name[1 : -len(suffix)])
    return f"{name[0]}-{words.upper()}-{suffix}"


_NAMES: dict[type[Message], str] = {cls: _label(cls) for cls in _ALL}


def message_name(msg: Message | type[Message]) -> str:
    """The PS3.7 name of a message or message class, e.g. ``"C-STORE-RQ"``."""
    cls = msg if isinstance(msg, type) else type(msg)
    return _NAMES[cls]


def _tag_name(tag: int) -> str:
    return f"(0000,{tag:04X}) {COMMAND_ELEMENTS[tag][0]}"


def encode_message(msg: Message) -> bytes:
    """Encode a message's command set (Implicit VR Little Endian, PS3.7 §6.3.1).

    Raises `DimseError` if a mandatory field is None or a value does not fit its VR.
    """
    cls = type(msg)
    plan = _PLANS.get(cls)
    if plan is None:
        raise DimseError(f"{cls.__name__} is not a DIMSE message")
    elements: dict[int, CommandValue] = {
        0x0100: cls.COMMAND_FIELD,
        0x0800: DATASET_PRESENT if msg.has_dataset else DATASET_ABSENT,
    }
    for name, tag in plan:
        value = getattr(msg, name)
        if value is None:
            if name in cls._REQUIRED:
                raise DimseError(f"{_NAMES[cls]} requires {name} ({_tag_name(tag)})")
            continue
        elements[tag] = value
    return encode_command_set(elements)


def decode_message(data: ReadableBuffer) -> Message:
    """Decode a complete command set into its message (PS3.7 §9.3, §10.3).

    Raises `DimseError` for malformed bytes, an unknown CommandField, a missing
    CommandDataSetType or a missing mandatory field. Empty strings count as absent.
    C-ECHO and C-STORE command sets in the usual layout take a fixed-layout fast path
    (`_fastpath.decode_common`, same result); everything else the general decoder below.
    """
    message = decode_common(data)
    if message is not None:
        return message
    return _decode_general(data)


def _decode_general(data: ReadableBuffer) -> Message:
    """`decode_message` for any command set (the fast path's reference)."""
    elements = decode_command_set(data)
    command_field = elements.get(0x0100)
    if not isinstance(command_field, int):
        raise DimseError("command set has no (0000,0100) CommandField")
    cls = MESSAGE_TYPES.get(command_field)
    if cls is None:
        raise DimseError(f"unknown DIMSE CommandField 0x{command_field:04X}")
    dataset_type = elements.get(0x0800)
    if dataset_type is None:
        raise DimseError(f"{_NAMES[cls]} has no (0000,0800) CommandDataSetType")
    kwargs: dict[str, object] = {"has_dataset": dataset_type != DATASET_ABSENT}
    for name, tag in _PLANS[cls]:
        value = elements.get(tag)
        if value is None or value == "":
            if name in cls._REQUIRED:
                raise DimseError(f"{_NAMES[cls]} lacks mandatory {_tag_name(tag)}")
            continue
        if name == "status":
            assert isinstance(value, int)
            value = Status(value)
        elif name == "priority" and value in (0, 1, 2):
            assert isinstance(value, int)
            value = Priority(value)
        kwargs[name] = value
    factory: Callable[..., Message] = cls
    return factory(**kwargs)




from aiodicom.core.dimse._fastpath import decode_common  # noqa: E402 - it needs the classes
