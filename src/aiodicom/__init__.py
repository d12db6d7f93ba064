"""aiodicom: asyncio DICOM networking (PS3.8 upper layer, PS3.7 DIMSE) over mutual TLS.

The names most programs need are here; `aiodicom.core` is the sans-I/O core, and
`aiodicom.aio.tls` builds PS3.15 TLS contexts.

The re-exports are lazy (PEP 562): a name is imported from its home module on first use.
Importing `aiodicom.core` runs this file first, and the sans-I/O core must not drag in
asyncio, ssl or socket through the shell's names (docs/design/layers.md).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from aiodicom.aio.admission import Admission
    from aiodicom.aio.association import AssociationInfo
    from aiodicom.aio.client import ClientAssociation, RemoteAE, connect, open_association
    from aiodicom.aio.requests import (
        EchoRequest,
        FindRequest,
        GetRequest,
        Handlers,
        MoveRequest,
        StoreRequest,
    )
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

_ERRORS = "aiodicom.errors"

_LAZY: dict[str, str] = {
    "Admission": "aiodicom.aio.admission",
    "AssociationInfo": "aiodicom.aio.association",
    "ClientAssociation": "aiodicom.aio.client",
    "RemoteAE": "aiodicom.aio.client",
    "connect": "aiodicom.aio.client",
    "open_association": "aiodicom.aio.client",
    "EchoRequest": "aiodicom.aio.requests",
    "FindRequest": "aiodicom.aio.requests",
    "GetRequest": "aiodicom.aio.requests",
    "Handlers": "aiodicom.aio.requests",
    "MoveRequest": "aiodicom.aio.requests",
    "StoreRequest": "aiodicom.aio.requests",
    "Server": "aiodicom.aio.server",
    "Status": "aiodicom.core.dimse",
    "StatusCategory": "aiodicom.core.dimse",
    "AcceptorPolicy": "aiodicom.core.negotiation",
    "AcseTimeout": _ERRORS,
    "AssociationAborted": _ERRORS,
    "AssociationError": _ERRORS,
    "AssociationRejected": _ERRORS,
    "CertificateRejected": _ERRORS,
    "ConfigurationError": _ERRORS,
    "ConnectError": _ERRORS,
    "DicomError": _ERRORS,
    "DicomTimeout": _ERRORS,
    "DimseError": _ERRORS,
    "DimseTimeout": _ERRORS,
    "InvalidPDU": _ERRORS,
    "LocalProtocolError": _ERRORS,
    "NetworkTimeout": _ERRORS,
    "NoPresentationContext": _ERRORS,
    "ProtocolError": _ERRORS,
    "RemoteProtocolError": _ERRORS,
    "TLSError": _ERRORS,
    "TransportError": _ERRORS,
    "AssociationSettings": "aiodicom.settings",
    "Limits": "aiodicom.settings",
    "Timeouts": "aiodicom.settings",
}
"""Public name -> the module that defines it; imported on first attribute access."""

__all__ = [
    "AcceptorPolicy",
    "AcseTimeout",
    "Admission",
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
    "FindRequest",
    "GetRequest",
    "Handlers",
    "InvalidPDU",
    "Limits",
    "LocalProtocolError",
    "MoveRequest",
    "NetworkTimeout",
    "NoPresentationContext",
    "ProtocolError",
    "RemoteAE",
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


def __getattr__(name: str) -> Any:
    """Import a re-exported name from its home module and cache it here (PEP 562)."""
    home = _LAZY.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's own globals plus every lazy name, so completion sees them (PEP 562)."""
    return sorted(set(globals()) | set(_LAZY))
