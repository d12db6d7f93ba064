"""User-information sub-items (PS3.8 Annex D, PS3.7 Annex D.3.3): the data model.

`aiodicom.core.pdu` encodes and decodes them. `UserInformation` holds them by meaning
rather than as a list, so negotiation code never searches for an item by type.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "AsyncOperationsWindow",
    "RoleSelection",
    "SOPClassCommonExtendedNegotiation",
    "SOPClassExtendedNegotiation",
    "UserIdentityAC",
    "UserIdentityRQ",
    "UserIdentityType",
    "UserInformation",
]


class UserIdentityType(enum.IntEnum):
    """User identity type of sub-item 0x58 (PS3.7 Table D.3-14)."""

    USERNAME = 1
    USERNAME_AND_PASSCODE = 2
    KERBEROS = 3
    SAML = 4
    JWT = 5


@dataclass(frozen=True, slots=True, kw_only=True)
class AsyncOperationsWindow:
    """Sub-item 0x53: 0 means unlimited, 1/1 is the synchronous default (PS3.7 D.3.3.3)."""

    max_operations_invoked: int
    max_operations_performed: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleSelection:
    """Sub-item 0x54: the SCU/SCP roles proposed (RQ) or accepted (AC) for a SOP class."""

    sop_class_uid: str
    scu_role: bool
    scp_role: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class SOPClassExtendedNegotiation:
    """Sub-item 0x56: service-class-specific application information, opaque here."""

    sop_class_uid: str
    application_information: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class SOPClassCommonExtendedNegotiation:
    """Sub-item 0x57 (RQ only; its byte 2 is a sub-item version, 0)."""

    sop_class_uid: str
    service_class_uid: str
    related_general_sop_classes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class UserIdentityRQ:
    """Sub-item 0x58 (PS3.7 D.3.3.7.1)."""

    identity_type: UserIdentityType
    positive_response_requested: bool
    primary_field: bytes
    secondary_field: bytes = b""
    """The passcode for type 2; empty otherwise."""


@dataclass(frozen=True, slots=True, kw_only=True)
class UserIdentityAC:
    """Sub-item 0x59 (PS3.7 D.3.3.7.2): may be empty (types 1, 2)."""

    server_response: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class UserInformation:
    """Item 0x50 and its sub-items, by meaning.

    Encoded in the order 0x51, 0x52, 0x53, 0x54*, 0x55, 0x56*, 0x57*, 0x58/0x59 (the
    order of PS3.7 Annex D). Unrecognized sub-items are skipped on receipt (PS3.7 D.1).
    """

    maximum_length: int | None = None
    """Sub-item 0x51: the largest P-DATA-TF variable field the item's sender receives;
    0 = no limit."""
    implementation_class_uid: str | None = None
    """Sub-item 0x52 (mandatory per PS3.7 D.3.3.2; tolerated missing on receipt)."""
    implementation_version_name: str | None = None
    """Sub-item 0x55: 1-16 characters."""
    async_operations_window: AsyncOperationsWindow | None = None
    role_selections: tuple[RoleSelection, ...] = ()
    extended_negotiations: tuple[SOPClassExtendedNegotiation, ...] = ()
    common_extended_negotiations: tuple[SOPClassCommonExtendedNegotiation, ...] = ()
    user_identity_rq: UserIdentityRQ | None = None
    user_identity_ac: UserIdentityAC | None = None
