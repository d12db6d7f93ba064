"""aiodicom: asyncio DICOM networking (PS3.8 upper layer, PS3.7 DIMSE) over mutual TLS.

The names most programs need are here; `aiodicom.core` is the sans-I/O core, and
`aiodicom.aio.tls` builds PS3.15 TLS contexts.
"""

from __future__ import annotations

__version__ = "0.1.0"

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.client import ClientAssociation, connect, open_association
from aiodicom.aio.requests import EchoRequest, StoreRequest
from aiodicom.aio.server import Server
from aiodicom.core.dimse import Status, StatusCategory
from aiodicom.core.negotiation import AcceptorPolicy
from aiodicom.errors import (
    AcseTimeout,
    AssociationAborted,
    AssociationError,
    AssociationRejected,
    CertificateRejected,
    ConfigurationError,
    ConnectError,
    DicomError,
    DicomTimeout,
    DimseError,
    DimseTimeout,
    InvalidPDU,
    LocalProtocolError,
    NetworkTimeout,
    NoPresentationContext,
    ProtocolError,
    RemoteProtocolError,
    TLSError,
    TransportError,
)
from aiodicom.settings import AssociationSettings, Limits, Timeouts

__all__ = [
    "AcceptorPolicy",
    "AcseTimeout",
    "AssociationAborted",
    "AssociationError",
    "AssociationInfo",
    "AssociationRejected",
    "AssociationSettings",
    "CertificateRejected",
    "ClientAssociation",
    "ConfigurationError",
    "ConnectError",
    "DicomError",
    "DicomTimeout",
    "DimseError",
    "DimseTimeout",
    "EchoRequest",
    "InvalidPDU",
    "Limits",
    "LocalProtocolError",
    "NetworkTimeout",
    "NoPresentationContext",
    "ProtocolError",
    "RemoteProtocolError",
    "Server",
    "Status",
    "StatusCategory",
    "StoreRequest",
    "TLSError",
    "Timeouts",
    "TransportError",
    "__version__",
    "connect",
    "open_association",
]
