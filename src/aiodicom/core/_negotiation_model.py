"""Constants, the acceptor's policy and the negotiated outcome (the data of `negotiation`).

Kept apart from the functions so the acceptor and requestor halves share one model without
importing each other. Everything here is a frozen value; nothing does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from aiodicom.core.ae_titles import validate_ae_title
from aiodicom.core.items import PresentationResult
from aiodicom.core.uids import is_valid_uid
from aiodicom.core.user_items import SOPClassCommonExtendedNegotiation, UserIdentityRQ
from aiodicom.errors import ConfigurationError

IMPLEMENTATION_CLASS_UID = "2.25.285014153053108005350322381854065896692"
"""aiodicom's Implementation Class UID (PS3.7 D.3.3.2).

A UUID-derived UID (PS3.5 §B.2, root ``2.25``) drawn once from a random UUID and fixed
forever: it needs no registered organization root and lets peers recognise us in logs.
"""

IMPLEMENTATION_VERSION_NAME = "AIODICOM_010"
"""Implementation Version Name sent with the class UID (PS3.7 D.3.3.2.3, at most 16 chars)."""

DEFAULT_MAX_PDU_LENGTH = 1 << 20
"""The Maximum Length we advertise by default: 1 MiB of P-DATA-TF variable field.

Large enough that a data set crosses the wire in few PDUs (less per-PDU overhead), small
enough that our receive buffer stays bounded (PS3.8 D.1).
"""

MAX_PRESENTATION_CONTEXTS = 128
"""Odd context IDs 1-255 give at most 128 presentation contexts (PS3.8 §9.3.2.2)."""

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"
"""Verification SOP Class, the abstract syntax of C-ECHO (PS3.4 Annex A)."""

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
"""The default transfer syntax every DICOM application supports (PS3.5 §10.1)."""
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
"""Retired, but still offered by old modalities."""
JPEG_BASELINE_8BIT = "1.2.840.10008.1.2.4.50"
JPEG_EXTENDED_12BIT = "1.2.840.10008.1.2.4.51"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.57"
JPEG_LOSSLESS_SV1 = "1.2.840.10008.1.2.4.70"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_LS_NEAR_LOSSLESS = "1.2.840.10008.1.2.4.81"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
JPEG_2000 = "1.2.840.10008.1.2.4.91"
HTJ2K_LOSSLESS = "1.2.840.10008.1.2.4.201"
HTJ2K_LOSSLESS_RPCL = "1.2.840.10008.1.2.4.202"
HTJ2K = "1.2.840.10008.1.2.4.203"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

UNCOMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
    EXPLICIT_VR_BIG_ENDIAN,
)
"""Native encodings, in the order an acceptor usually prefers them."""

COMPRESSED_TRANSFER_SYNTAXES: tuple[str, ...] = (
    JPEG_BASELINE_8BIT,
    JPEG_EXTENDED_12BIT,
    JPEG_LOSSLESS,
    JPEG_LOSSLESS_SV1,
    JPEG_LS_LOSSLESS,
    JPEG_LS_NEAR_LOSSLESS,
    JPEG_2000_LOSSLESS,
    JPEG_2000,
    HTJ2K_LOSSLESS,
    HTJ2K_LOSSLESS_RPCL,
    HTJ2K,
    RLE_LOSSLESS,
)
"""Encapsulated encodings a storage SCP can keep as sent, without transcoding."""

_MAX_U16 = 0xFFFF
_MAX_U32 = 0xFFFFFFFF


def check_uid(uid: object, what: str) -> str:
    """Return ``uid`` if it is a valid UID (PS3.5 §9.1), else raise `ConfigurationError`."""
    if not isinstance(uid, str) or not is_valid_uid(uid):
        raise ConfigurationError(
            f"{what} must be a UID (digits and dots, no leading zeros, at most 64 "
            f"characters), got {uid!r}"
        )
    return uid


def check_ae_title(title: object, what: str) -> str:
    """Return ``title`` without padding if it is a valid AE title (`aiodicom.core.ae_titles`)."""
    try:
        return validate_ae_title(title, what)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def check_uid_tuple(uids: Iterable[str], what: str) -> tuple[str, ...]:
    """A non-empty tuple of UIDs; catches a bare string passed where a sequence is due."""
    if isinstance(uids, str):
        raise ConfigurationError(
            f"{what} must be a sequence of transfer syntax UIDs, not one string: "
            f"write ({uids!r},)"
        )
    result = tuple(check_uid(uid, what) for uid in uids)
    if not result:
        raise ConfigurationError(f"{what} must name at least one transfer syntax")
    return result


def check_range(value: object, low: int, high: int, what: str) -> int:
    """Return ``value`` if it is an int in ``[low, high]``."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigurationError(f"{what} must be an integer in {low}..{high}, got {value!r}")
    return value


def min_window(a: int, b: int) -> int:
    """The smaller of two window sizes where 0 means unlimited (PS3.7 D.3.3.3)."""
    if a == 0:
        return b
    if b == 0:
        return a
    return min(a, b)


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleSupport:
    """The roles an acceptor lets the requestor take for one SOP class (PS3.7 D.3.3.4).

    The acceptor's own role is the complement: SCP while the requestor is SCU, SCU while it
    is SCP (e.g. the C-STORE sub-operations of a C-GET). The default allows only the default
    roles, so a proposal to be SCP is refused unless the policy says otherwise.
    """

    requestor_scu: bool = True
    """Accept the requestor's proposal to act as SCU."""
    requestor_scp: bool = False
    """Accept the requestor's proposal to act as SCP (we then act as SCU)."""


DEFAULT_ROLE_SUPPORT = RoleSupport()


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptorPolicy:
    """What an acceptor accepts: the input of `negotiate_as_acceptor`.

    A frozen value built once from the server settings; user identity is not here because it
    is verified by the (asynchronous, pluggable) shell, whose verdict is passed per call.
    Invalid values raise `ConfigurationError` naming the field.
    """

    ae_title: str | None = None
    """Our AE title: a request calling another is rejected (case-sensitive, padding ignored).
    None or "" accepts any."""
    calling_ae_titles: frozenset[str] | None = None
    """The calling AE titles we know; None accepts any (PS3.8 Table 9-21, reason 3)."""
    abstract_syntaxes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """SOP class UID -> acceptable transfer syntaxes, in OUR order of preference."""
    accept_any_abstract_syntax: bool = False
    """Also accept every other abstract syntax with `default_transfer_syntaxes`
    (a storage SCP that takes everything)."""
    default_transfer_syntaxes: tuple[str, ...] = (
        EXPLICIT_VR_LITTLE_ENDIAN,
        IMPLICIT_VR_LITTLE_ENDIAN,
    )
    """Our preference order for abstract syntaxes accepted through `accept_any_abstract_syntax`."""
    max_pdu_length: int = DEFAULT_MAX_PDU_LENGTH
    """The Maximum Length we advertise: largest P-DATA-TF variable field we receive; 0 = no
    limit (PS3.8 D.1)."""
    max_operations_invoked: int = 1
    """Operations we invoke at once on the requestor (1-65535; never 0 = unlimited)."""
    max_operations_performed: int = 1
    """Operations we perform at once (1-65535): bounded even when the peer proposes 0."""
    role_selection: Mapping[str, RoleSupport] = field(default_factory=dict)
    """SOP class UID -> roles we let the requestor take; others get `RoleSupport()`."""
    extended_negotiation: Mapping[str, bytes] = field(default_factory=dict)
    """SOP class UID -> application information we answer with when the requestor sends a
    SOP Class Extended Negotiation item for it (PS3.7 D.3.3.5)."""
    implementation_class_uid: str = IMPLEMENTATION_CLASS_UID
    implementation_version_name: str | None = IMPLEMENTATION_VERSION_NAME

    def __post_init__(self) -> None:
        ae = self.ae_title.strip(" ") if self.ae_title is not None else ""
        setattr_ = object.__setattr__
        setattr_(self, "ae_title", check_ae_title(ae, "ae_title") if ae else None)
        if self.calling_ae_titles is not None:
            titles = frozenset(
                check_ae_title(t, "calling_ae_titles entry") for t in self.calling_ae_titles
            )
            setattr_(self, "calling_ae_titles", titles)
        syntaxes = {
            check_uid(sop, "abstract_syntaxes key"): check_uid_tuple(
                tss, f"abstract_syntaxes[{sop!r}]"
            )
            for sop, tss in self.abstract_syntaxes.items()
        }
        setattr_(self, "abstract_syntaxes", MappingProxyType(syntaxes))
        setattr_(
            self,
            "default_transfer_syntaxes",
            check_uid_tuple(self.default_transfer_syntaxes, "default_transfer_syntaxes"),
        )
        check_range(self.max_pdu_length, 0, _MAX_U32, "max_pdu_length")
        check_range(self.max_operations_invoked, 1, _MAX_U16, "max_operations_invoked")
        check_range(self.max_operations_performed, 1, _MAX_U16, "max_operations_performed")
        roles = {check_uid(k, "role_selection key"): v for k, v in self.role_selection.items()}
        setattr_(self, "role_selection", MappingProxyType(roles))
        ext = {
            check_uid(k, "extended_negotiation key"): bytes(v)
            for k, v in self.extended_negotiation.items()
        }
        setattr_(self, "extended_negotiation", MappingProxyType(ext))
        check_uid(self.implementation_class_uid, "implementation_class_uid")
        name = self.implementation_version_name
        if name is not None and not 1 <= len(name) <= 16:
            raise ConfigurationError(
                f"implementation_version_name must have 1-16 characters, got {name!r}"
            )

    def transfer_syntaxes_for(self, abstract_syntax: str) -> tuple[str, ...] | None:
        """Our preferred transfer syntaxes for an abstract syntax, or None if unsupported."""
        found = self.abstract_syntaxes.get(abstract_syntax)
        if found is None and self.accept_any_abstract_syntax and abstract_syntax:
            return self.default_transfer_syntaxes
        return found


@dataclass(frozen=True, slots=True, kw_only=True)
class AcceptedContext:
    """An accepted presentation context, with the roles of the LOCAL side.

    `scu_role` says we may invoke operations of this SOP class (send requests) on it,
    `scp_role` that we may perform them; the peer holds the complementary roles.
    """

    context_id: int
    abstract_syntax: str
    transfer_syntax: str
    scu_role: bool
    scp_role: bool


@dataclass(frozen=True, slots=True, kw_only=True)
class RejectedContext:
    """A proposed context the acceptor did not accept, kept for error messages."""

    context_id: int
    abstract_syntax: str
    result: PresentationResult
    """Why (PS3.8 Table 9-18); `NO_REASON` also when the AC omitted the context."""


@dataclass(frozen=True, slots=True, kw_only=True)
class NegotiatedAssociation:
    """The outcome of negotiation as one side sees it.

    `conclude_as_requestor` and `conclude_as_acceptor` build it from the same RQ and AC, so
    both ends agree: same contexts and transfer syntaxes, roles and windows mirrored.
    """

    is_requestor: bool
    """True on the side that sent the A-ASSOCIATE-RQ."""
    called_ae_title: str
    calling_ae_title: str
    contexts: Mapping[int, AcceptedContext]
    """Accepted contexts by context ID (possibly none: PS3.8 allows such an AC)."""
    rejected_contexts: Mapping[int, RejectedContext]
    our_max_pdu_length: int
    """The Maximum Length we advertised: P-DATA-TF we receive; 0 = no limit."""
    peer_max_pdu_length: int
    """The peer's Maximum Length: what WE must fragment P-DATA-TF to; 0 = no limit (an
    absent sub-item counts as 0). Senders should still cap PDUs at a sensible size."""
    max_operations_invoked: int
    """Operations we may have outstanding as invoker (1 = synchronous, PS3.7 D.3.3.3)."""
    max_operations_performed: int
    """Operations the peer may have outstanding with us, which we then perform."""
    peer_implementation_class_uid: str | None
    peer_implementation_version_name: str | None
    user_identity: UserIdentityRQ | None
    """The identity the requestor sent (PS3.7 D.3.3.7), unverified here."""
    user_identity_response: bytes | None
    """The acceptor's server response (sub-item 0x59), if one was sent."""
    requested_extended_negotiation: Mapping[str, bytes]
    """SOP class UID -> application information the requestor sent (PS3.7 D.3.3.5)."""
    extended_negotiation: Mapping[str, bytes]
    """SOP class UID -> application information the acceptor answered with."""
    common_extended_negotiation: tuple[SOPClassCommonExtendedNegotiation, ...]
    """The requestor's SOP Class Common Extended Negotiation items (no response exists)."""

    @property
    def local_ae_title(self) -> str:
        """Our AE title: calling on the requestor side, called on the acceptor side."""
        return self.calling_ae_title if self.is_requestor else self.called_ae_title

    @property
    def peer_ae_title(self) -> str:
        """The peer's AE title."""
        return self.called_ae_title if self.is_requestor else self.calling_ae_title
