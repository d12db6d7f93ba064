"""The service primitives the upper layer issues to its user (PS3.8 §7).

`UpperLayer.next_event()` returns these, in order. They are the indications and
confirmations of A-ASSOCIATE, P-DATA, A-RELEASE, A-ABORT and A-P-ABORT, plus
`ConnectionClosed`, always the last event of a connection. Requests and responses go the
other way as `UpperLayer` method calls.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiodicom.core.pdu import AAssociateAC, AAssociateRJ, AAssociateRQ, PDataTF
from aiodicom.errors import RemoteProtocolError

__all__ = [
    "AbortIndication",
    "AssociateAccepted",
    "AssociateIndication",
    "AssociateRejected",
    "ConnectionClosed",
    "DataIndication",
    "Primitive",
    "ReleaseConfirmed",
    "ReleaseIndication",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociateIndication:
    """A-ASSOCIATE indication (acceptor, now in Sta3): answer with `accept` or `reject`."""

    request: AAssociateRQ


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociateAccepted:
    """A-ASSOCIATE confirmation, accepted (requestor, now in Sta6: the association exists)."""

    response: AAssociateAC


@dataclass(frozen=True, slots=True, kw_only=True)
class AssociateRejected:
    """A-ASSOCIATE confirmation, rejected (requestor); the transport is being closed."""

    response: AAssociateRJ


@dataclass(frozen=True, slots=True, kw_only=True)
class DataIndication:
    """P-DATA indication: one received P-DATA-TF, its PDV values views over the PDU body."""

    pdata: PDataTF


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseIndication:
    """A-RELEASE indication: the peer asked to release; answer with `release_response`.

    In a release collision (PS3.8 §7.2, Sta9/Sta10) the association-requestor answers at
    once; the acceptor first waits for its `ReleaseConfirmed`, then answers.
    """

    collision: bool = False
    """True when we had asked for release ourselves (AR-8)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReleaseConfirmed:
    """A-RELEASE confirmation: the peer answered our A-RELEASE-RQ."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortIndication:
    """A-ABORT or A-P-ABORT indication: the association is gone (PS3.8 §7.3, §7.4).

    ``local`` is False when the peer sent A-ABORT; True when our own service provider
    aborted: the peer broke the protocol (``error`` says how; we sent A-ABORT with source 2
    and ``reason``) or the transport closed under an association (A-P-ABORT).
    """

    source: int
    """A-ABORT source (PS3.8 Table 9-26): 0 service-user, 2 service-provider."""
    reason: int
    """A-ABORT reason/diag (Table 9-26); meaningful only when the source is 2."""
    error: RemoteProtocolError | None
    """The peer's protocol violation that made us abort, if that was the cause."""
    local: bool
    """True when our own service provider aborted, False when the peer sent A-ABORT."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionClosed:
    """The transport connection is finished (closed by the peer, or by us: then the shell
    sees `UpperLayer.close_requested`). Always the last event; nothing follows it."""


Primitive = (
    AssociateIndication
    | AssociateAccepted
    | AssociateRejected
    | DataIndication
    | ReleaseIndication
    | ReleaseConfirmed
    | AbortIndication
    | ConnectionClosed
)
"""Any event `UpperLayer.next_event()` can return."""
