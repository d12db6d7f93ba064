"""Query/Retrieve information models and identifiers (PS3.4 Annex C), without I/O.

Both roles use these: the SOP classes of the Patient Root and Study Root models, the
presentation contexts a Q/R SCU proposes, and the identifier codec (an identifier is a
small data set of query keys, encoded in the context's transfer syntax).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aiodicom.core._negotiation_model import EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN
from aiodicom.core.part10 import DatasetCodecError, decode_dataset, encode_dataset
from aiodicom.core.user_items import RoleSelection
from aiodicom.errors import DimseError

__all__ = [
    "MAX_IDENTIFIER",
    "MODELS",
    "UNCOMPRESSED_SYNTAXES",
    "InvalidIdentifier",
    "QRModel",
    "decode_identifier",
    "encode_identifier",
    "model_of",
    "qr_contexts",
    "retrieve_contexts",
]

QRModel = Literal["patient", "study"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSOPClasses:
    """The three SOP classes of one Q/R information model."""

    find: str
    move: str
    get: str


MODELS: Mapping[str, ModelSOPClasses] = {
    "patient": ModelSOPClasses(find="1.2.840.10008.5.1.4.1.2.1.1",
                               move="1.2.840.10008.5.1.4.1.2.1.2",
                               get="1.2.840.10008.5.1.4.1.2.1.3"),
    "study": ModelSOPClasses(find="1.2.840.10008.5.1.4.1.2.2.1",
                             move="1.2.840.10008.5.1.4.1.2.2.2",
                             get="1.2.840.10008.5.1.4.1.2.2.3"),
}
"""Patient Root and Study Root information models (PS3.4 C.6.1, C.6.2): their SOP classes."""

_MODEL_OF: Mapping[str, QRModel] = {
    uid: "patient" if name == "patient" else "study"
    for name, m in MODELS.items() for uid in (m.find, m.move, m.get)
}

UNCOMPRESSED_SYNTAXES = (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)
"""What a Q/R SCU proposes for identifiers, and the fallbacks proposed for stored objects."""

MAX_IDENTIFIER = 1 << 20
"""Largest identifier we decode: a query is a few keys, never megabytes."""


class InvalidIdentifier(DimseError, ValueError):
    """An identifier that is too large or does not decode (answered 0xA900 by an SCP)."""


def model_of(sop_class_uid: str) -> QRModel:
    """The information model a FIND/GET/MOVE SOP class belongs to (Study Root if unknown)."""
    return _MODEL_OF.get(sop_class_uid, "study")


def qr_contexts() -> list[tuple[str, list[str]]]:
    """Presentation contexts for FIND, GET and MOVE of both information models."""
    return [(uid, list(UNCOMPRESSED_SYNTAXES))
            for m in MODELS.values() for uid in (m.find, m.get, m.move)]


def retrieve_contexts(
    storage_sop_classes: Sequence[str],
) -> tuple[list[tuple[str, list[str]]], list[RoleSelection]]:
    """Contexts and role selections for a C-GET SCU: the Q/R classes, plus each storage
    class with us as SCP (PS3.4 C.4.3.1, PS3.7 D.3.3.4)."""
    contexts = qr_contexts() + [(uid, list(UNCOMPRESSED_SYNTAXES)) for uid in storage_sop_classes]
    roles = [RoleSelection(sop_class_uid=uid, scu_role=False, scp_role=True)
             for uid in storage_sop_classes]
    return contexts, roles


def decode_identifier(raw: bytes, transfer_syntax: str) -> Any:
    """An identifier as a pydicom Dataset, every element parsed now (not later in a handler).

    Raises `InvalidIdentifier` if it is larger than `MAX_IDENTIFIER` or does not parse.
    """
    if len(raw) > MAX_IDENTIFIER:
        raise InvalidIdentifier(f"identifier larger than {MAX_IDENTIFIER} bytes")
    try:
        return decode_dataset(raw, transfer_syntax, max_inflated_size=MAX_IDENTIFIER)
    except DatasetCodecError as exc:
        raise InvalidIdentifier(f"undecodable identifier: {exc}") from exc


def encode_identifier(ds: Any, transfer_syntax: str) -> bytes:
    """An identifier's bytes in ``transfer_syntax`` (query keys may hold wildcards and ranges
    that are not valid values of their VR, PS3.4 C.2.2.2: the codec allows them)."""
    return encode_dataset(ds, transfer_syntax)
