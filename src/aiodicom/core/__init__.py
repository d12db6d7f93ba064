"""aiodicom.core: the sans-I/O DICOM networking core (no asyncio, ssl, socket or time).

Bytes go in through `UpperLayer` (or `ReceiveBuffer` + `decode_pdu`), PDUs and service
primitives come out; DIMSE messages are built and taken apart by `aiodicom.core.dimse`;
`negotiation` turns an A-ASSOCIATE-RQ and a policy into an AC or RJ. The clock is always
an argument.
"""

from __future__ import annotations

from aiodicom.core.buffer import RawPDU, Reader, ReceiveBuffer, Writer
from aiodicom.core.fsm import Action, Event, State, step
from aiodicom.core.items import PresentationContextAC, PresentationContextRQ, PresentationResult
from aiodicom.core.negotiation import (
    AcceptedContext,
    AcceptorPolicy,
    NegotiatedAssociation,
    build_request,
    conclude_as_acceptor,
    conclude_as_requestor,
    find_context,
    negotiate_as_acceptor,
)
from aiodicom.core.pdu import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PDUType,
    PresentationDataValue,
    decode_pdu,
    decode_pdu_bytes,
    encode_pdu,
)
from aiodicom.core.primitives import (
    AbortIndication,
    AssociateAccepted,
    AssociateIndication,
    AssociateRejected,
    ConnectionClosed,
    DataIndication,
    Primitive,
    ReleaseConfirmed,
    ReleaseIndication,
)
from aiodicom.core.upper_layer import UpperLayer
from aiodicom.core.user_items import UserIdentityRQ, UserInformation

__all__ = [
    "PDU",
    "AAbort",
    "AAssociateAC",
    "AAssociateRJ",
    "AAssociateRQ",
    "AReleaseRP",
    "AReleaseRQ",
    "AbortIndication",
    "AcceptedContext",
    "AcceptorPolicy",
    "Action",
    "AssociateAccepted",
    "AssociateIndication",
    "AssociateRejected",
    "ConnectionClosed",
    "DataIndication",
    "Event",
    "NegotiatedAssociation",
    "PDUType",
    "PDataTF",
    "PresentationContextAC",
    "PresentationContextRQ",
    "PresentationDataValue",
    "PresentationResult",
    "Primitive",
    "RawPDU",
    "Reader",
    "ReceiveBuffer",
    "ReleaseConfirmed",
    "ReleaseIndication",
    "State",
    "UpperLayer",
    "UserIdentityRQ",
    "UserInformation",
    "Writer",
    "build_request",
    "conclude_as_acceptor",
    "conclude_as_requestor",
    "decode_pdu",
    "decode_pdu_bytes",
    "encode_pdu",
    "find_context",
    "negotiate_as_acceptor",
    "step",
]
