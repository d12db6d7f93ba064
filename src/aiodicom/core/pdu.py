"""The seven PDUs of PS3.8 §9.3: data model, `decode_pdu` and `encode_pdu`.

Decoding reads a memoryview through `Reader` and raises only `InvalidPDU` (with the offset
and the A-ABORT reason PS3.8 would send); encoding back-patches lengths through `Writer`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from aiodicom.core.buffer import ReadableBuffer
from aiodicom.core.items import (
    APPLICATION_CONTEXT_NAME,
    PresentationContextAC,
    PresentationContextRQ,
)
from aiodicom.core.user_items import UserInformation

__all__ = [
    "PDU",
    "AAbort",
    "AAssociateAC",
    "AAssociateRJ",
    "AAssociateRQ",
    "AReleaseRP",
    "AReleaseRQ",
    "PDUType",
    "PDataTF",
    "PresentationDataValue",
]


class PDUType(enum.IntEnum):
    """PDU type byte (PS3.8 Table 9-11)."""

    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


@dataclass(frozen=True, slots=True, kw_only=True)
class AAssociateRQ:
    """A-ASSOCIATE-RQ (PS3.8 §9.3.2). AE titles are held without padding."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextRQ, ...]
    user_information: UserInformation
    application_context: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class AAssociateAC:
    """A-ASSOCIATE-AC (PS3.8 §9.3.3). The AE fields echo the RQ and are not tested on receipt."""

    called_ae_title: str
    calling_ae_title: str
    presentation_contexts: tuple[PresentationContextAC, ...]
    user_information: UserInformation
    application_context: str = APPLICATION_CONTEXT_NAME
    protocol_version: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class AAssociateRJ:
    """A-ASSOCIATE-RJ (PS3.8 §9.3.4): result, source, reason as in Table 9-21."""

    result: int
    source: int
    reason: int


@dataclass(frozen=True, slots=True, kw_only=True)
class PresentationDataValue:
    """One PDV item of a P-DATA-TF (PS3.8 §9.3.5.1, Annex E).

    ``data`` is a memoryview over the received PDU body when decoded: no copy.
    """

    context_id: int
    is_command: bool
    is_last: bool
    data: ReadableBuffer = field(compare=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class PDataTF:
    """P-DATA-TF (PS3.8 §9.3.5): one or more PDVs."""

    pdvs: tuple[PresentationDataValue, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class AReleaseRQ:
    """A-RELEASE-RQ (PS3.8 §9.3.6)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AReleaseRP:
    """A-RELEASE-RP (PS3.8 §9.3.7)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AAbort:
    """A-ABORT (PS3.8 §9.3.8): source and reason/diag as in Table 9-26."""

    source: int
    reason: int = 0


PDU = AAssociateRQ | AAssociateAC | AAssociateRJ | PDataTF | AReleaseRQ | AReleaseRP | AAbort
