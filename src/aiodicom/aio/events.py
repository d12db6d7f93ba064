"""Notifications a `Server` gives an optional observer (metrics, audit trail, logs).

The observer is a plain callable run synchronously on the loop: it must be quick and must
not raise (an exception is logged and ignored, so a broken exporter never drops DICOM).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiodicom.aio.association import AssociationInfo
from aiodicom.core.pdu import AAssociateRJ

__all__ = [
    "AssociationAccepted",
    "AssociationEnded",
    "AssociationRefused",
    "HandshakeFailed",
    "Observer",
    "RequestCompleted",
    "ServerEvent",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociationAccepted:
    info: AssociationInfo


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociationRefused:
    """We answered A-ASSOCIATE-RJ; ``why`` is the sentence that was logged."""

    info: AssociationInfo
    response: AAssociateRJ
    why: str


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociationEnded:
    """Released (``aborted`` False) or aborted/dropped (``aborted`` True, ``reason`` says how)."""

    info: AssociationInfo | None
    peer_address: tuple[str, int] | None
    aborted: bool
    reason: str
    bytes_received: int
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestCompleted:
    """A DIMSE request we performed, with its final status and timing."""

    info: AssociationInfo
    service: str
    """"C-ECHO", "C-STORE", ..."""
    sop_class_uid: str
    sop_instance_uid: str | None
    status: int
    bytes: int
    duration: float


@dataclass(frozen=True, slots=True, kw_only=True)
class HandshakeFailed:
    """A connection to a TLS listener ended before its handshake completed (wrong or no
    client certificate, revoked, a plain client, a stall past the handshake timeout)."""

    count: int
    """Failures so far on this server."""


ServerEvent = (
    AssociationAccepted | AssociationRefused | AssociationEnded | RequestCompleted
    | HandshakeFailed
)
Observer = Callable[[ServerEvent], None]
