"""Frozen settings passed in by the caller: nothing in aiodicom reads module globals."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiodicom.core.ae_titles import validate_ae_title
from aiodicom.errors import ConfigurationError

__all__ = ["AssociationSettings", "Limits", "Timeouts"]

DEFAULT_MAX_PDU = 1 << 20
"""We advertise 1 MiB: a peer fragments to our value, and fewer PDUs is most of the speed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Every timeout in seconds; None disables one. All run on the loop's monotonic clock."""

    connect: float | None = 10.0
    """TCP connect (client)."""
    tls_handshake: float | None = 10.0
    """A handshake that stalls longer is dropped; it never holds up other connections."""
    acse: float | None = 30.0
    """Waiting for A-ASSOCIATE-AC/RJ or A-RELEASE-RP."""
    dimse: float | None = 60.0
    """Waiting for a DIMSE response (client) or the rest of a request's data set (server)."""
    network: float | None = 300.0
    """An established association with no traffic for this long is aborted."""
    artim: float = 30.0
    """PS3.8 ARTIM: waiting for the first RQ, and for the peer to close after RJ/RP/ABORT."""

    def __post_init__(self) -> None:
        for name in ("connect", "tls_handshake", "acse", "dimse", "network", "artim"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigurationError(f"timeout {name!r} must be positive, got {value!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """Resource limits; a peer can never make us go past these."""

    max_pdu_length: int = DEFAULT_MAX_PDU
    """Largest P-DATA-TF variable field we receive (and advertise). 0 advertises 'no limit'
    but we still never buffer more than `hard_max_pdu_length`."""
    hard_max_pdu_length: int = 16 << 20
    """The receive cap when we advertise 0, and for association PDUs."""
    max_associations: int = 10_000
    """Beyond it: A-ASSOCIATE-RJ transient, presentation provider, local limit exceeded."""
    max_operations_performed: int = 8
    """Asynchronous operations window we grant as acceptor (PS3.7 D.3.3.3)."""
    receive_staging: int = 4096
    """Per-connection staging area for PDU headers and small PDUs."""

    def __post_init__(self) -> None:
        if self.max_pdu_length != 0 and not 4096 <= self.max_pdu_length <= self.hard_max_pdu_length:
            raise ConfigurationError(
                f"max_pdu_length must be 0 or between 4096 and {self.hard_max_pdu_length}, "
                f"got {self.max_pdu_length}"
            )
        if self.max_associations < 1:
            raise ConfigurationError("max_associations must be at least 1")
        if self.max_operations_performed < 1:
            raise ConfigurationError("max_operations_performed must be at least 1")

    @property
    def receive_cap(self) -> int:
        """The largest PDU body we buffer, whatever we advertised."""
        body = self.max_pdu_length or self.hard_max_pdu_length
        return max(body, 64 * 1024)


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociationSettings:
    """What one side of an association uses, as requestor or acceptor."""

    ae_title: str = "AIODICOM"
    timeouts: Timeouts = field(default_factory=Timeouts)
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        try:
            validate_ae_title(self.ae_title, "AssociationSettings.ae_title")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
