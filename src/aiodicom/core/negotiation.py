"""Association negotiation, pure: PS3.8 §9.3.2-9.3.4 and PS3.7 Annex D.3.3.

Theory of operation
-------------------
The requestor builds its A-ASSOCIATE-RQ with `build_request`. The acceptor answers it with
`negotiate_as_acceptor(rq, policy)`, which returns the A-ASSOCIATE-AC or -RJ to send (or
raises `RemoteProtocolError` on a malformed RQ, which the shell turns into A-ABORT). Both
sides then derive one `NegotiatedAssociation` from the same RQ and AC -- the requestor with
`conclude_as_requestor`, which also validates the peer's AC, the acceptor with
`conclude_as_acceptor` -- so they agree on contexts, transfer syntaxes, PDU lengths, roles
and the asynchronous operations window, each seen from its own side. `find_context` picks
the context to send a request on.

Nothing here does I/O, reads a clock or calls user code: the user identity is verified by
the shell (asynchronously, by a pluggable check) and comes in as ``identity_accepted`` and
``identity_response``. The policy is a frozen `AcceptorPolicy`; nothing is global.
"""

from __future__ import annotations

from aiodicom.core._negotiation_acceptor import (
    negotiate_as_acceptor,
    reject,
    reject_application_context_not_supported,
    reject_called_ae_not_recognized,
    reject_calling_ae_not_recognized,
    reject_local_limit_exceeded,
    reject_no_reason,
    reject_protocol_version_not_supported,
    reject_temporary_congestion,
)
from aiodicom.core._negotiation_model import (
    COMPRESSED_TRANSFER_SYNTAXES,
    DEFAULT_MAX_PDU_LENGTH,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    HTJ2K,
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    IMPLICIT_VR_LITTLE_ENDIAN,
    JPEG_2000,
    JPEG_2000_LOSSLESS,
    JPEG_BASELINE_8BIT,
    JPEG_EXTENDED_12BIT,
    JPEG_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    MAX_PRESENTATION_CONTEXTS,
    RLE_LOSSLESS,
    UNCOMPRESSED_TRANSFER_SYNTAXES,
    VERIFICATION_SOP_CLASS,
    AcceptedContext,
    AcceptorPolicy,
    NegotiatedAssociation,
    RejectedContext,
    RoleSupport,
)
from aiodicom.core._negotiation_requestor import (
    build_request,
    conclude_as_acceptor,
    conclude_as_requestor,
    find_context,
)

__all__ = [
    "COMPRESSED_TRANSFER_SYNTAXES",
    "DEFAULT_MAX_PDU_LENGTH",
    "DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN",
    "EXPLICIT_VR_BIG_ENDIAN",
    "EXPLICIT_VR_LITTLE_ENDIAN",
    "HTJ2K",
    "HTJ2K_LOSSLESS",
    "HTJ2K_LOSSLESS_RPCL",
    "IMPLEMENTATION_CLASS_UID",
    "IMPLEMENTATION_VERSION_NAME",
    "IMPLICIT_VR_LITTLE_ENDIAN",
    "JPEG_2000",
    "JPEG_2000_LOSSLESS",
    "JPEG_BASELINE_8BIT",
    "JPEG_EXTENDED_12BIT",
    "JPEG_LOSSLESS",
    "JPEG_LOSSLESS_SV1",
    "JPEG_LS_LOSSLESS",
    "JPEG_LS_NEAR_LOSSLESS",
    "MAX_PRESENTATION_CONTEXTS",
    "RLE_LOSSLESS",
    "UNCOMPRESSED_TRANSFER_SYNTAXES",
    "VERIFICATION_SOP_CLASS",
    "AcceptedContext",
    "AcceptorPolicy",
    "NegotiatedAssociation",
    "RejectedContext",
    "RoleSupport",
    "build_request",
    "conclude_as_acceptor",
    "conclude_as_requestor",
    "find_context",
    "negotiate_as_acceptor",
    "reject",
    "reject_application_context_not_supported",
    "reject_called_ae_not_recognized",
    "reject_calling_ae_not_recognized",
    "reject_local_limit_exceeded",
    "reject_no_reason",
    "reject_protocol_version_not_supported",
    "reject_temporary_congestion",
]
