"""Notifications a `Server` gives an optional observer (metrics, audit trail, logs).

The observer is a plain callable run synchronously on the loop: it must be quick and must
not raise (an exception is logged and ignored, so a broken exporter never drops DICOM).

`RequestCompleted` is built per DIMSE message only if the observer wants it: an observer
with a false ``wants_requests`` attribute never sees one (`wants_requests`, read per
request, so a log observer's follows its logger's level at run time). One without the
attribute sees every event. Building the event for nobody was ~17,000 instructions of a
C-ECHO's ~147,000 (issue 18).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiodicom.aio.association import AssociationInfo
from aiodicom.core.pdu import AAssociateRJ

__all__ = [
    "AssociationAccepted",
    "AssociationEnded",
    "AssociationRefused",
    "FanOut",
    "HandshakeFailed",
    "Observer",
    "RequestCompleted",
    "ServerEvent",
    "wants_requests",
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


def wants_requests(observer: Observer | None) -> bool:
    """Whether ``observer`` consumes `RequestCompleted`: its ``wants_requests`` attribute
    (a bool, or a property read now), True when it has none; False for no observer."""
    if observer is None:
        return False
    return bool(getattr(observer, "wants_requests", True))


class FanOut:
    """One observer calling several in order; one that raises is logged and the others
    still run. `RequestCompleted` goes only to those that want it now (read per event: a
    log observer's wish follows its logger's level at run time)."""

    __slots__ = ("_log", "observers")

    def __init__(self, observers: Iterable[Observer], log: logging.Logger) -> None:
        self.observers = tuple(observers)
        self._log = log

    @property
    def wants_requests(self) -> bool:
        return any(map(wants_requests, self.observers))

    def __call__(self, event: ServerEvent) -> None:
        requests = type(event) is RequestCompleted
        for observer in self.observers:
            if requests and not wants_requests(observer):
                continue
            try:
                observer(event)
            except Exception:  # one broken sink must not starve the others
                self._log.exception("%s failed on %s", type(observer).__name__,
                                    type(event).__name__)
