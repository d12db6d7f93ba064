"""The one exception hierarchy of aiodicom.

Codec functions raise only `InvalidPDU`; the upper layer turns peer faults into an
A-ABORT and raises only `LocalProtocolError` at its own caller (the h11 split). The
asyncio shell maps `OSError`/`ssl.SSLError` into `TransportError` subclasses with
``raise ... from exc``. DIMSE statuses are values, never exceptions.
"""

from __future__ import annotations

import enum
from typing import TypeVar

__all__ = [
    "AbortReason",
    "AbortSource",
    "AcseTimeout",
    "AssociationAborted",
    "AssociationError",
    "AssociationRejected",
    "CertificateRejected",
    "ConfigurationError",
    "ConnectError",
    "DicomError",
    "DicomTimeout",
    "DimseError",
    "DimseTimeout",
    "InvalidPDU",
    "LocalProtocolError",
    "NetworkTimeout",
    "NoPresentationContext",
    "ProtocolError",
    "RejectResult",
    "RejectSource",
    "RemoteProtocolError",
    "TLSError",
    "TransportError",
    "fresh_error",
]


class AbortSource(enum.IntEnum):
    """A-ABORT source (PS3.8 Table 9-26). 1 is reserved."""

    SERVICE_USER = 0
    RESERVED = 1
    SERVICE_PROVIDER = 2


class AbortReason(enum.IntEnum):
    """A-ABORT reason/diagnostic when the source is the service provider (PS3.8 Table 9-26)."""

    NOT_SPECIFIED = 0
    UNRECOGNIZED_PDU = 1
    UNEXPECTED_PDU = 2
    RESERVED = 3
    UNRECOGNIZED_PDU_PARAMETER = 4
    UNEXPECTED_PDU_PARAMETER = 5
    INVALID_PDU_PARAMETER_VALUE = 6


class RejectResult(enum.IntEnum):
    """A-ASSOCIATE-RJ result (PS3.8 Table 9-21)."""

    PERMANENT = 1
    TRANSIENT = 2


class RejectSource(enum.IntEnum):
    """A-ASSOCIATE-RJ source (PS3.8 Table 9-21)."""

    SERVICE_USER = 1
    SERVICE_PROVIDER_ACSE = 2
    SERVICE_PROVIDER_PRESENTATION = 3


_REJECT_REASONS: dict[tuple[int, int], str] = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognized",
    (1, 7): "called AE title not recognized",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}

_ABORT_REASONS: dict[int, str] = {
    0: "reason not specified",
    1: "unrecognized PDU",
    2: "unexpected PDU",
    4: "unrecognized PDU parameter",
    5: "unexpected PDU parameter",
    6: "invalid PDU parameter value",
}


def describe_reject(result: int, source: int, reason: int) -> str:
    """A sentence for humans from an A-ASSOCIATE-RJ triple."""
    kind = {1: "permanently", 2: "transiently"}.get(result, f"(result {result})")
    who = {
        1: "the called application",
        2: "the peer's ACSE provider",
        3: "the peer's presentation provider",
    }.get(source, f"source {source}")
    why = _REJECT_REASONS.get((source, reason), f"reason {reason}")
    return f"association {kind} rejected by {who}: {why}"


def describe_abort(source: int, reason: int) -> str:
    """A sentence for humans from an A-ABORT source and reason."""
    if source == AbortSource.SERVICE_PROVIDER:
        return f"aborted by the service provider: {_ABORT_REASONS.get(reason, f'reason {reason}')}"
    if source == AbortSource.SERVICE_USER:
        return "aborted by the peer application (service user)"
    return f"aborted (source {source}, reason {reason})"


class DicomError(Exception):
    """Base of every error aiodicom raises on purpose."""


class ProtocolError(DicomError):
    """A PS3.8 protocol rule was broken, locally or by the peer."""


class LocalProtocolError(ProtocolError):
    """Our own caller asked for something PS3.8 forbids in the current state."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; carries the A-ABORT source and reason we send for it."""

    def __init__(
        self,
        message: str,
        *,
        reason: AbortReason = AbortReason.NOT_SPECIFIED,
        source: AbortSource = AbortSource.SERVICE_PROVIDER,
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.source = source


class InvalidPDU(RemoteProtocolError):
    """Malformed bytes: says where (offset from the PDU start) and what was wrong.

    The only exception the PDU, item and command-set decoders raise.
    """

    def __init__(
        self,
        what: str,
        *,
        offset: int = 0,
        reason: AbortReason = AbortReason.INVALID_PDU_PARAMETER_VALUE,
    ) -> None:
        super().__init__(f"invalid PDU at offset {offset}: {what}", reason=reason)
        self.offset = offset
        self.what = what


class AssociationError(DicomError):
    """The association could not be used for what was asked."""


class AssociationRejected(AssociationError):
    """The peer answered A-ASSOCIATE-RJ."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        super().__init__(describe_reject(result, source, reason))
        self.result = result
        self.source = source
        self.reason = reason


class AssociationAborted(AssociationError):
    """The association ended by A-ABORT or A-P-ABORT (connection lost)."""

    def __init__(self, source: int, reason: int, message: str | None = None) -> None:
        super().__init__(message or describe_abort(source, reason))
        self.source = source
        self.reason = reason


class NoPresentationContext(AssociationError):
    """Nothing was accepted for this SOP class and transfer syntax."""


class DimseError(DicomError):
    """A malformed or unexpected DIMSE command set."""


class DicomTimeout(DicomError, TimeoutError):
    """A timeout that fired."""


class AcseTimeout(DicomTimeout):
    """No association answer (AC/RJ or release response) in time."""


class DimseTimeout(DicomTimeout):
    """No DIMSE response in time."""


class NetworkTimeout(DicomTimeout):
    """The connection was idle or stalled for too long."""


class TransportError(DicomError):
    """The connection failed below the upper layer."""


class ConnectError(TransportError):
    """The TCP connection could not be opened."""


class TLSError(TransportError):
    """The TLS handshake or record layer failed."""


class CertificateRejected(TLSError):
    """A certificate was refused: untrusted, expired, revoked or not matching."""


class ConfigurationError(DicomError, ValueError):
    """A setting is wrong; the message names it and says what is expected."""


_E = TypeVar("_E", bound=BaseException)


def fresh_error(exc: _E) -> _E:
    """The same error without its traceback, cause or context.

    An error kept by an object and raised in frames that hold that object (an association,
    its incoming data, its protocol) would carry those frames in its traceback: a cycle,
    freed only by a full collection (tests/aio/test_release_frees.py). Kept errors are
    raised, or kept, as copies. ``__init__`` is not called: the copy has the original's
    ``args`` and attributes (not ``__slots__`` ones; no aiodicom error has any).
    """
    fresh = type(exc).__new__(type(exc), *exc.args)
    fresh.__dict__.update(getattr(exc, "__dict__", {}))
    return fresh
