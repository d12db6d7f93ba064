"""DIMSE status codes: an `int` with a category and a meaning (PS3.7 Annex C).

A status is a value, never an exception: handlers return one, responses carry one. `Status`
subclasses `int` so it compares, hashes and encodes like the US value it is on the wire
(``Status(0xA700) == 0xA700``), while ``.category`` and ``.description`` answer the two
questions callers ask of it: did it work, and what does the code mean.
"""

from __future__ import annotations

import enum
from typing import ClassVar

__all__ = ["Status", "StatusCategory"]


class StatusCategory(enum.Enum):
    """The class of a status code (PS3.7 §C.1)."""

    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"
    CANCEL = "cancel"
    PENDING = "pending"


_WARNING_CODES = frozenset({0x0001, 0x0107, 0x0116})

# Exact codes (PS3.7 Annex C.4; C-STORE PS3.4 Table B.2-1; Q/R PS3.4 C.4.1-C.4.3).
_DESCRIPTIONS: dict[int, str] = {
    0x0000: "Success",
    0x0001: "Warning: requested optional attributes are not supported",
    0x0105: "Failure: no such attribute",
    0x0106: "Failure: invalid attribute value",
    0x0107: "Warning: attribute list error",
    0x0110: "Failure: processing failure",
    0x0111: "Failure: duplicate SOP instance",
    0x0112: "Failure: no such SOP instance",
    0x0113: "Failure: no such event type",
    0x0114: "Failure: no such argument",
    0x0115: "Failure: invalid argument value",
    0x0116: "Warning: attribute value out of range",
    0x0117: "Failure: invalid object instance",
    0x0118: "Failure: no such SOP class",
    0x0119: "Failure: class-instance conflict",
    0x0120: "Failure: missing attribute",
    0x0121: "Failure: missing attribute value",
    0x0122: "Refused: SOP class not supported",
    0x0123: "Failure: no such action",
    0x0124: "Refused: not authorized",
    0x0210: "Failure: duplicate invocation",
    0x0211: "Failure: unrecognized operation",
    0x0212: "Failure: mistyped argument",
    0x0213: "Failure: resource limitation",
    0xA700: "Refused: out of resources",
    0xA701: "Refused: out of resources, unable to calculate number of matches",
    0xA702: "Refused: out of resources, unable to perform sub-operations",
    0xA801: "Refused: move destination unknown",
    0xA900: "Error: data set or identifier does not match SOP class",
    0xB000: (
        "Warning: coercion of data elements (C-STORE), or sub-operations complete "
        "with one or more failures or warnings (C-GET/C-MOVE)"
    ),
    0xB006: "Warning: elements discarded",
    0xB007: "Warning: data set does not match SOP class",
    0xFE00: "Cancel: matching or sub-operations terminated by a C-CANCEL request",
    0xFF00: "Pending: matches are continuing or sub-operations are continuing",
    0xFF01: "Pending: matches are continuing, warning that optional keys were not supported",
}

# Ranges, checked in order after the exact codes: (low, high, meaning).
_RANGES: tuple[tuple[int, int, str], ...] = (
    (0xA700, 0xA7FF, "Refused: out of resources"),
    (0xA900, 0xA9FF, "Error: data set does not match SOP class"),
    (0xA000, 0xAFFF, "Failure"),
    (0xB000, 0xBFFF, "Warning"),
    (0xC000, 0xCFFF, "Error: cannot understand / unable to process"),
)


class Status(int):
    """A DIMSE status code (PS3.7 Annex C), usable wherever an ``int`` is.

    Out-of-range values are refused (`ValueError`): a status is a 16-bit US.
    """

    __slots__ = ()

    SUCCESS: ClassVar[Status]
    PENDING: ClassVar[Status]
    PENDING_WARNING: ClassVar[Status]
    CANCEL: ClassVar[Status]
    OUT_OF_RESOURCES: ClassVar[Status]
    DATASET_MISMATCH: ClassVar[Status]
    CANNOT_UNDERSTAND: ClassVar[Status]
    PROCESSING_FAILURE: ClassVar[Status]
    NO_SUCH_SOP_CLASS: ClassVar[Status]
    NOT_AUTHORIZED: ClassVar[Status]
    SOP_CLASS_NOT_SUPPORTED: ClassVar[Status]
    DUPLICATE_SOP_INSTANCE: ClassVar[Status]
    INVALID_ATTRIBUTE_VALUE: ClassVar[Status]
    MOVE_DESTINATION_UNKNOWN: ClassVar[Status]
    UNRECOGNIZED_OPERATION: ClassVar[Status]
    SUBOPERATIONS_FAILED: ClassVar[Status]
    SUBOPERATIONS_WARNING: ClassVar[Status]

    def __new__(cls, value: int) -> Status:
        code = int(value)
        if not 0 <= code <= 0xFFFF:
            raise ValueError(f"a DIMSE status is a 16-bit value, not {code}")
        return super().__new__(cls, code)

    @property
    def category(self) -> StatusCategory:
        """Success, warning, failure, cancel or pending (PS3.7 §C.1)."""
        code = int(self)
        if code == 0x0000:
            return StatusCategory.SUCCESS
        if code in (0xFF00, 0xFF01):
            return StatusCategory.PENDING
        if code == 0xFE00:
            return StatusCategory.CANCEL
        if code in _WARNING_CODES or 0xB000 <= code <= 0xBFFF:
            return StatusCategory.WARNING
        return StatusCategory.FAILURE

    @property
    def description(self) -> str:
        """The meaning of the code from PS3.7 Annex C and the service annexes of PS3.4."""
        code = int(self)
        text = _DESCRIPTIONS.get(code)
        if text is not None:
            return text
        for low, high, meaning in _RANGES:
            if low <= code <= high:
                return meaning
        return "Failure (unrecognized status code)"

    @property
    def is_success(self) -> bool:
        return int(self) == 0

    @property
    def is_pending(self) -> bool:
        return self.category is StatusCategory.PENDING

    @property
    def is_failure(self) -> bool:
        return self.category is StatusCategory.FAILURE

    def __repr__(self) -> str:
        return f"Status(0x{int(self):04X})"

    def __str__(self) -> str:
        return f"0x{int(self):04X} ({self.description})"


Status.SUCCESS = Status(0x0000)
Status.PENDING = Status(0xFF00)
Status.PENDING_WARNING = Status(0xFF01)
Status.CANCEL = Status(0xFE00)
Status.OUT_OF_RESOURCES = Status(0xA700)
Status.DATASET_MISMATCH = Status(0xA900)
Status.CANNOT_UNDERSTAND = Status(0xC000)
Status.PROCESSING_FAILURE = Status(0x0110)
Status.NO_SUCH_SOP_CLASS = Status(0x0118)
Status.NOT_AUTHORIZED = Status(0x0124)
Status.SOP_CLASS_NOT_SUPPORTED = Status(0x0122)
Status.DUPLICATE_SOP_INSTANCE = Status(0x0111)
Status.INVALID_ATTRIBUTE_VALUE = Status(0x0106)
Status.MOVE_DESTINATION_UNKNOWN = Status(0xA801)
Status.UNRECOGNIZED_OPERATION = Status(0x0211)
Status.SUBOPERATIONS_FAILED = Status(0xA702)
"""Refused: out of resources, unable to perform sub-operations (C-GET/C-MOVE, PS3.4 C.4.2.1.5)."""
Status.SUBOPERATIONS_WARNING = Status(0xB000)
"""Sub-operations complete with one or more failures or warnings (C-GET/C-MOVE)."""
