"""Presentation-layer items of A-ASSOCIATE PDUs (PS3.8 §9.3.2.2, §9.3.3.2).

The data model only; `aiodicom.core.pdu` encodes and decodes them.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "APPLICATION_CONTEXT_NAME",
    "ItemType",
    "PresentationContextAC",
    "PresentationContextRQ",
    "PresentationResult",
]

APPLICATION_CONTEXT_NAME = "1.2.840.10008.3.1.1.1"
"""The DICOM application context name (PS3.7 Annex A.2.1), the only one defined."""


class ItemType(enum.IntEnum):
    """Item and sub-item type bytes (PS3.8 Tables 9-12 and 9-16, PS3.7 Annex D)."""

    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    ASYNCHRONOUS_OPERATIONS_WINDOW = 0x53
    ROLE_SELECTION = 0x54
    IMPLEMENTATION_VERSION_NAME = 0x55
    SOP_CLASS_EXTENDED_NEGOTIATION = 0x56
    SOP_CLASS_COMMON_EXTENDED_NEGOTIATION = 0x57
    USER_IDENTITY_RQ = 0x58
    USER_IDENTITY_AC = 0x59


class PresentationResult(enum.IntEnum):
    """Result/reason of a presentation context in A-ASSOCIATE-AC (PS3.8 Table 9-18)."""

    ACCEPTANCE = 0
    USER_REJECTION = 1
    NO_REASON = 2
    ABSTRACT_SYNTAX_NOT_SUPPORTED = 3
    TRANSFER_SYNTAXES_NOT_SUPPORTED = 4


@dataclass(frozen=True, slots=True, kw_only=True)
class PresentationContextRQ:
    """A proposed presentation context (item 0x20)."""

    context_id: int
    """Odd, 1-255 (PS3.8 §9.3.2.2)."""
    abstract_syntax: str
    """The SOP class UID (sub-item 0x30)."""
    transfer_syntaxes: tuple[str, ...]
    """One or more transfer syntax UIDs (sub-items 0x40), in the requestor's preference order."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PresentationContextAC:
    """The acceptor's answer for one context (item 0x21)."""

    context_id: int
    result: PresentationResult
    transfer_syntax: str | None
    """The accepted transfer syntax; only meaningful when accepted (PS3.8 §9.3.3.2)."""
