"""Encode and decode the items and sub-items of A-ASSOCIATE-RQ/AC (PS3.8 §9.3.2-9.3.3, PS3.7 D).

Private helpers of `aiodicom.core.pdu`. Decoders read through a `Reader` whose offsets count
from the PDU start and raise only `InvalidPDU`, with the A-ABORT reason PS3.8 §9.3.1 and
Table 9-26 call for: a known item in the wrong place, repeated or missing ->
unexpected-PDU-parameter (5); a bad value or length -> invalid-PDU-parameter-value (6). An
item or sub-item of a type we do not know is ignored and skipped (PS3.8 §9.3.1: "items of
unrecognized types shall be ignored and skipped"), wherever it appears. Encoders validate our
own values (ValueError).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Final, NoReturn

from aiodicom.core._context_fastpath import context_rq_common
from aiodicom.core._uid_cache import uid_bytes, wire_uid
from aiodicom.core.ae_titles import (
    AE_TITLE_FIELD_LENGTH,
    decode_ae_title_field,
    encode_ae_title_field,
)
from aiodicom.core.buffer import Reader, Writer
from aiodicom.core.items import (
    ItemType,
    PresentationContextAC,
    PresentationContextRQ,
    PresentationResult,
)
from aiodicom.core.user_items import (
    AsyncOperationsWindow,
    RoleSelection,
    SOPClassCommonExtendedNegotiation,
    SOPClassExtendedNegotiation,
    UserIdentityAC,
    UserIdentityRQ,
    UserIdentityType,
    UserInformation,
)
from aiodicom.errors import AbortReason, InvalidPDU

UNEXPECTED: Final = AbortReason.UNEXPECTED_PDU_PARAMETER
INVALID: Final = AbortReason.INVALID_PDU_PARAMETER_VALUE

_KNOWN_ITEM_TYPES: Final = frozenset(int(t) for t in ItemType)
_ABSTRACT: Final = int(ItemType.ABSTRACT_SYNTAX)
_TRANSFER: Final = int(ItemType.TRANSFER_SYNTAX)
_ACCEPTANCE: Final = int(PresentationResult.ACCEPTANCE)
_ITEM_HEADER: Final = struct.Struct(">BxH")
_CONTEXT_AC: Final = struct.Struct(">BxHBxBxBxH")
"""Item 0x21 up to its one 0x40 sub-item's value: type, length, ID, result, 0x40, length."""
_CONTEXT_RQ: Final = struct.Struct(">BxHBxxxBxH")
"""Item 0x20 up to its 0x30 sub-item's value: type, length, ID, 0x30, length."""
_ROLE_HEADER: Final = struct.Struct(">BxHH")
_MAX_LENGTH: Final = struct.Struct(">BxHL")
_WINDOW: Final = struct.Struct(">BxHHH")

# Refusal texts are built only on the failure path: decoding a well-formed A-ASSOCIATE-RQ
# formats no message at all (the `what` arguments passed on the success path are literals).


# -- values: UIDs, AE titles, implementation version names ------------------------------------


def decode_uid(r: Reader, n: int, what: str) -> str:
    """A UID of ``n`` bytes under the wire rule (`aiodicom.core.uids.uid_from_wire`)."""
    raw = bytes(r.take(n, what))
    uid = wire_uid(raw)
    if uid is None:
        shown = raw[:-1] if raw[-1:] == b"\0" else raw
        raise InvalidPDU(
            f"{what} is not a valid UID: {shown[:80]!r}", offset=r.offset - n, reason=INVALID
        )
    return uid


def check_uid(uid: str, what: str) -> bytes:
    """The UID's bytes, or ValueError if it breaks the wire rule (`is_uid_syntax`)."""
    raw = uid_bytes(uid)
    if raw is None:
        raise ValueError(f"{what} {uid!r} is not a UID (1-64 digits and dots)")
    return raw


def decode_ae_title(r: Reader, what: str, *, strict: bool) -> str:
    """A 16-byte AE title, stripped of its non-significant spaces (PS3.8 §9.3.2, PS3.5 AE).

    ``strict`` (A-ASSOCIATE-RQ): the rule of `aiodicom.core.ae_titles`. Otherwise
    (A-ASSOCIATE-AC, whose AE fields are not tested on receipt) any bytes decode as latin-1.
    """
    raw = bytes(r.take(AE_TITLE_FIELD_LENGTH, what))
    return ae_title_value(raw, what, r.offset - AE_TITLE_FIELD_LENGTH, strict=strict)


def ae_title_value(raw: bytes, what: str, offset: int, *, strict: bool) -> str:
    """The title in the 16-byte AE field ``raw`` found at ``offset``, as `decode_ae_title`."""
    if not strict:
        return raw.decode("latin-1").strip(" \0")
    try:
        return decode_ae_title_field(raw, what)
    except ValueError as exc:
        raise InvalidPDU(str(exc), offset=offset, reason=INVALID) from None


def encode_ae_title(title: str, what: str) -> bytes:
    """The title padded with spaces to 16 bytes; ValueError if it is not a valid AE title."""
    return encode_ae_title_field(title, what)


_VERSION_NAME_BYTES: Final = bytes(range(0x20, 0x7F))


def _check_version_name(raw: bytes) -> bool:
    return 1 <= len(raw) <= 16 and not raw.translate(None, _VERSION_NAME_BYTES)


# -- item framing ---------------------------------------------------------------------------


def read_item(r: Reader, what: str) -> tuple[int, Reader]:
    """Item type and a reader over its value (bounded by its 16-bit length).

    The item itself starts at `item_start` of that reader. The 4-byte header is read as one
    32-bit field (type, reserved, length); a short header is worded by `_short_item_header`.
    """
    left = r.remaining - 4
    if left < 0:
        _short_item_header(r, what)
    header = r.u32()
    length = header & 0xFFFF
    if length > left:
        raise InvalidPDU(
            f"{what} 0x{header >> 24:02X} declares {length} bytes but only {left} remain",
            offset=r.offset - 2,
            reason=INVALID,
        )
    return header >> 24, r.sub(length)


def item_start(value: Reader) -> int:
    """Offset of the item whose value `read_item` returned (its 4-byte header's first byte)."""
    return value.base - 4


def _short_item_header(r: Reader, what: str) -> NoReturn:
    """Refuse an item header cut short, naming the first field that does not fit."""
    r.u8(f"{what} type")
    r.skip(1, f"{what} reserved byte")
    r.u16(f"{what} length")
    raise AssertionError("unreachable: fewer than 4 bytes remained")  # pragma: no cover


def end_of(r: Reader, what: str) -> None:
    """Refuse bytes left over after a fixed-layout (sub-)item's fields."""
    if not r.at_end():
        raise InvalidPDU(
            f"{what} has {r.remaining} bytes after its last field", offset=r.offset, reason=INVALID
        )


def misplaced_item(item_type: int, offset: int, where: str, cid: int | None = None) -> None:
    """Skip an item of an unrecognized type (PS3.8 §9.3.1); refuse a known one out of place.

    ``where`` names the enclosing item; with ``cid`` it is presentation context ``cid``
    (worded only when refusing).
    """
    if item_type in _KNOWN_ITEM_TYPES:
        if cid is not None:
            where = f"{where} {cid}"
        raise InvalidPDU(
            f"item 0x{item_type:02X} may not appear in {where}", offset=offset, reason=UNEXPECTED
        )


def _context_id(r: Reader) -> int:
    cid = r.u8("presentation context context ID")
    if not cid & 1:
        raise InvalidPDU(
            f"presentation context context ID {cid} is not odd (1-255)",
            offset=r.offset - 1,
            reason=INVALID,
        )
    return cid


# -- presentation contexts (items 0x20, 0x21) -------------------------------------------------


CONTEXT_FAST_PATH = True
"""Off only in tests and fuzz_pdu's differential check (fast path vs general decoder)."""


def decode_context_rq(r: Reader) -> PresentationContextRQ:
    """Item 0x20: context ID, 3 reserved, one 0x30 and one or more 0x40 (PS3.8 §9.3.2.2)."""
    if CONTEXT_FAST_PATH:
        pc = context_rq_common(r)
        if pc is not None:
            return pc
    return _decode_context_rq_general(r)


def _decode_context_rq_general(r: Reader) -> PresentationContextRQ:
    end = r.offset + r.remaining
    cid = _context_id(r)
    r.skip(3, "presentation context reserved bytes")
    abstract: str | None = None
    transfer: list[str] = []
    while not r.at_end():
        item_type, sub = read_item(r, "presentation context sub-item")
        if item_type == _ABSTRACT:
            if abstract is not None:
                raise InvalidPDU(
                    f"presentation context {cid} has two abstract syntaxes",
                    offset=item_start(sub),
                    reason=UNEXPECTED,
                )
            abstract = decode_uid(sub, sub.remaining, "abstract syntax")
        elif item_type == _TRANSFER:
            transfer.append(decode_uid(sub, sub.remaining, "transfer syntax"))
        else:
            misplaced_item(item_type, item_start(sub), "presentation context", cid)
    if abstract is None or not transfer:
        missing = "abstract syntax" if abstract is None else "transfer syntax"
        raise InvalidPDU(
            f"presentation context {cid} has no {missing} sub-item", offset=end, reason=UNEXPECTED
        )
    return PresentationContextRQ(
        context_id=cid, abstract_syntax=abstract, transfer_syntaxes=tuple(transfer)
    )


def decode_context_ac(r: Reader) -> PresentationContextAC:
    """Item 0x21: context ID, reserved, result, reserved, one 0x40 (PS3.8 §9.3.3.2).

    The transfer syntax of a context not accepted is not tested: absent, empty or not a UID
    gives None.
    """
    end = r.offset + r.remaining
    cid = _context_id(r)
    r.skip(1, "presentation context reserved byte")
    at = r.offset
    value = r.u8("presentation context result")
    r.skip(1, "presentation context reserved byte")
    if value > 4:
        raise InvalidPDU(
            f"presentation context {cid} has result/reason {value} (0-4)", offset=at, reason=INVALID
        )
    result = PresentationResult(value)
    accepted = result == PresentationResult.ACCEPTANCE
    transfer: str | None = None
    seen = False
    while not r.at_end():
        item_type, sub = read_item(r, "presentation context sub-item")
        if item_type != _TRANSFER:
            misplaced_item(item_type, item_start(sub), "presentation context", cid)
            continue
        if seen:
            raise InvalidPDU(
                f"presentation context {cid} answers two transfer syntaxes",
                offset=item_start(sub),
                reason=UNEXPECTED,
            )
        seen = True
        if accepted:
            transfer = decode_uid(sub, sub.remaining, "accepted transfer syntax")
        else:
            try:
                transfer = decode_uid(sub, sub.remaining, "transfer syntax")
            except InvalidPDU:
                transfer = None
    if accepted and transfer is None:
        raise InvalidPDU(
            f"accepted presentation context {cid} has no transfer syntax",
            offset=end,
            reason=UNEXPECTED,
        )
    return PresentationContextAC(context_id=cid, result=result, transfer_syntax=transfer)


def _check_context_id(cid: int) -> None:
    if not (0 < cid < 256 and cid & 1):
        raise ValueError(f"presentation context ID {cid} is not an odd number 1-255")


def _uid_item(w: Writer, item_type: int, uid: bytes) -> None:
    w.buf += _ITEM_HEADER.pack(item_type, len(uid))
    w.buf += uid


def encode_context_rq(w: Writer, pc: PresentationContextRQ) -> None:
    """Item 0x20: its header and abstract syntax in one pack, then the transfer syntaxes."""
    _check_context_id(pc.context_id)
    if not pc.transfer_syntaxes:
        raise ValueError(f"presentation context {pc.context_id} proposes no transfer syntax")
    abstract = check_uid(pc.abstract_syntax, "abstract syntax")
    pos = len(w.buf)
    w.buf += _CONTEXT_RQ.pack(
        ItemType.PRESENTATION_CONTEXT_RQ, 0, pc.context_id, ItemType.ABSTRACT_SYNTAX, len(abstract)
    )
    w.buf += abstract
    for ts in pc.transfer_syntaxes:
        _uid_item(w, _TRANSFER, check_uid(ts, "transfer syntax"))
    w.patch_u16(pos + 2)


def encode_context_ac(w: Writer, pc: PresentationContextAC) -> None:
    """Item 0x21 in one pack; a context without a transfer syntax gets an empty 0x40 sub-item."""
    _check_context_id(pc.context_id)
    result = pc.result if type(pc.result) is PresentationResult else PresentationResult(pc.result)
    if result == _ACCEPTANCE and pc.transfer_syntax is None:
        raise ValueError(f"accepted presentation context {pc.context_id} needs a transfer syntax")
    ts = b"" if pc.transfer_syntax is None else check_uid(pc.transfer_syntax, "transfer syntax")
    n = len(ts)  # at most 64 (check_uid): the item's length always fits
    w.buf += _CONTEXT_AC.pack(
        ItemType.PRESENTATION_CONTEXT_AC, n + 8, pc.context_id, result, _TRANSFER, n
    )
    w.buf += ts


# -- user information (item 0x50) and its sub-items -------------------------------------------


class _UserInfo:
    """Mutable accumulator while decoding item 0x50."""

    __slots__ = (
        "async_window",
        "class_uid",
        "common_ext",
        "ext",
        "identity_ac",
        "identity_rq",
        "max_length",
        "roles",
        "seen",
        "version_name",
    )

    def __init__(self) -> None:
        self.max_length: int | None = None
        self.class_uid: str | None = None
        self.async_window: AsyncOperationsWindow | None = None
        self.roles: list[RoleSelection] = []
        self.version_name: str | None = None
        self.ext: list[SOPClassExtendedNegotiation] = []
        self.common_ext: list[SOPClassCommonExtendedNegotiation] = []
        self.identity_rq: UserIdentityRQ | None = None
        self.identity_ac: UserIdentityAC | None = None
        self.seen: set[int] = set()


def _sub_max_length(r: Reader, u: _UserInfo) -> None:
    u.max_length = r.u32("maximum length")
    end_of(r, "maximum length sub-item")


def _sub_class_uid(r: Reader, u: _UserInfo) -> None:
    u.class_uid = decode_uid(r, r.remaining, "implementation class UID")


def _sub_async_window(r: Reader, u: _UserInfo) -> None:
    invoked = r.u16("maximum operations invoked")
    performed = r.u16("maximum operations performed")
    end_of(r, "asynchronous operations window sub-item")
    u.async_window = AsyncOperationsWindow(
        max_operations_invoked=invoked, max_operations_performed=performed
    )


def _flag(r: Reader, what: str) -> bool:
    at = r.offset
    value = r.u8(what)
    if value > 1:
        raise InvalidPDU(f"{what} is {value}, not 0 or 1", offset=at, reason=INVALID)
    return value == 1


def _sub_role(r: Reader, u: _UserInfo) -> None:
    uid = decode_uid(r, r.u16("SOP class UID length"), "role selection SOP class UID")
    scu = _flag(r, "SCU role")
    scp = _flag(r, "SCP role")
    end_of(r, "role selection sub-item")
    u.roles.append(RoleSelection(sop_class_uid=uid, scu_role=scu, scp_role=scp))


def _sub_version_name(r: Reader, u: _UserInfo) -> None:
    at = r.offset
    raw = bytes(r.rest())
    if not _check_version_name(raw):
        raise InvalidPDU(
            f"implementation version name {raw[:40]!r} is not 1-16 ISO 646 characters",
            offset=at,
            reason=INVALID,
        )
    u.version_name = raw.decode("ascii")


def _sub_ext(r: Reader, u: _UserInfo) -> None:
    uid = decode_uid(r, r.u16("SOP class UID length"), "extended negotiation SOP class UID")
    info = bytes(r.rest())
    u.ext.append(SOPClassExtendedNegotiation(sop_class_uid=uid, application_information=info))


def _sub_common_ext(r: Reader, u: _UserInfo) -> None:
    sop = decode_uid(r, r.u16("SOP class UID length"), "common extended SOP class UID")
    service = decode_uid(r, r.u16("service class UID length"), "service class UID")
    related_length = r.u16("related general SOP class identification length")
    related_r = r.sub(related_length, "related general SOP class identification")
    related: list[str] = []
    while not related_r.at_end():
        n = related_r.u16("related general SOP class UID length")
        related.append(decode_uid(related_r, n, "related general SOP class UID"))
    end_of(r, "SOP class common extended negotiation sub-item")
    u.common_ext.append(
        SOPClassCommonExtendedNegotiation(
            sop_class_uid=sop, service_class_uid=service, related_general_sop_classes=tuple(related)
        )
    )


def _sub_identity_rq(r: Reader, u: _UserInfo) -> None:
    """Sub-item 0x58; an identity type we do not know is ignored like an unknown sub-item."""
    kind = r.u8("user identity type")
    positive = _flag(r, "positive response requested")
    primary = bytes(r.take(r.u16("primary field length"), "primary field"))
    secondary = bytes(r.take(r.u16("secondary field length"), "secondary field"))
    end_of(r, "user identity sub-item")
    if 1 <= kind <= 5:
        u.identity_rq = UserIdentityRQ(
            identity_type=UserIdentityType(kind),
            positive_response_requested=positive,
            primary_field=primary,
            secondary_field=secondary,
        )


def _sub_identity_ac(r: Reader, u: _UserInfo) -> None:
    response = bytes(r.take(r.u16("server response length"), "server response"))
    end_of(r, "user identity response sub-item")
    u.identity_ac = UserIdentityAC(server_response=response)


_SubDecoder = Callable[[Reader, _UserInfo], None]

_SUB_DECODERS: Final[dict[int, _SubDecoder]] = {
    ItemType.MAXIMUM_LENGTH: _sub_max_length,
    ItemType.IMPLEMENTATION_CLASS_UID: _sub_class_uid,
    ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW: _sub_async_window,
    ItemType.ROLE_SELECTION: _sub_role,
    ItemType.IMPLEMENTATION_VERSION_NAME: _sub_version_name,
    ItemType.SOP_CLASS_EXTENDED_NEGOTIATION: _sub_ext,
    ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION: _sub_common_ext,
    ItemType.USER_IDENTITY_RQ: _sub_identity_rq,
    ItemType.USER_IDENTITY_AC: _sub_identity_ac,
}
"""Decoder per user-information sub-item type (PS3.7 Annex D.3.3)."""

_REPEATABLE: Final = frozenset(
    {
        ItemType.ROLE_SELECTION,
        ItemType.SOP_CLASS_EXTENDED_NEGOTIATION,
        ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION,
    }
)
_IGNORED_IN_RQ: Final = frozenset({ItemType.USER_IDENTITY_AC})
_IGNORED_IN_AC: Final = frozenset(
    {ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION, ItemType.USER_IDENTITY_RQ}
)


def decode_user_information(r: Reader, *, is_rq: bool) -> UserInformation:
    """Item 0x50. Unknown sub-items, and the other direction's ones, are skipped (PS3.7 D.1)."""
    u = _UserInfo()
    ignored = _IGNORED_IN_RQ if is_rq else _IGNORED_IN_AC
    while not r.at_end():
        item_type, sub = read_item(r, "user information sub-item")
        decoder = _SUB_DECODERS.get(item_type)
        if decoder is None or item_type in ignored:
            continue
        if item_type in u.seen and item_type not in _REPEATABLE:
            raise InvalidPDU(
                f"user information has two 0x{item_type:02X} sub-items",
                offset=item_start(sub),
                reason=UNEXPECTED,
            )
        u.seen.add(item_type)
        decoder(sub, u)
    return UserInformation(
        maximum_length=u.max_length,
        implementation_class_uid=u.class_uid,
        implementation_version_name=u.version_name,
        async_operations_window=u.async_window,
        role_selections=tuple(u.roles),
        extended_negotiations=tuple(u.ext),
        common_extended_negotiations=tuple(u.common_ext),
        user_identity_rq=u.identity_rq,
        user_identity_ac=u.identity_ac,
    )


def _sub_header(w: Writer, item_type: int) -> int:
    pos = len(w.buf)
    w.buf += _ITEM_HEADER.pack(item_type, 0)
    return pos + 2


def _u16_uid(w: Writer, uid: str, what: str) -> None:
    raw = check_uid(uid, what)
    w.u16(len(raw))
    w.write(raw)


def _u16_bytes(w: Writer, value: bytes, what: str) -> None:
    if len(value) > 0xFFFF:
        raise ValueError(f"{what} of {len(value)} bytes does not fit a 16-bit length")
    w.u16(len(value))
    w.write(value)


def _check_u16(value: int, what: str) -> int:
    if not 0 <= value <= 0xFFFF:
        raise ValueError(f"{what} {value} does not fit 16 bits")
    return value


def encode_user_information(w: Writer, ui: UserInformation, *, is_rq: bool) -> None:
    """Item 0x50, sub-items in ascending type order, as DCMTK sends them (PS3.7 D.3.3)."""
    if is_rq and ui.user_identity_ac is not None:
        raise ValueError("user identity response (0x59) belongs in A-ASSOCIATE-AC")
    if not is_rq and (ui.user_identity_rq is not None or ui.common_extended_negotiations):
        raise ValueError("user identity (0x58) and common extended negotiation (0x57) are RQ-only")
    outer = _sub_header(w, ItemType.USER_INFORMATION)
    if ui.maximum_length is not None:
        if not 0 <= ui.maximum_length <= 0xFFFFFFFF:
            raise ValueError(f"maximum length {ui.maximum_length} does not fit 32 bits")
        w.buf += _MAX_LENGTH.pack(ItemType.MAXIMUM_LENGTH, 4, ui.maximum_length)
    if ui.implementation_class_uid is not None:
        raw = check_uid(ui.implementation_class_uid, "implementation class UID")
        _uid_item(w, ItemType.IMPLEMENTATION_CLASS_UID, raw)
    window = ui.async_operations_window
    if window is not None:
        w.buf += _WINDOW.pack(
            ItemType.ASYNCHRONOUS_OPERATIONS_WINDOW,
            4,
            _check_u16(window.max_operations_invoked, "maximum operations invoked"),
            _check_u16(window.max_operations_performed, "maximum operations performed"),
        )
    for role in ui.role_selections:
        raw = check_uid(role.sop_class_uid, "role selection SOP class UID")
        w.buf += _ROLE_HEADER.pack(ItemType.ROLE_SELECTION, len(raw) + 4, len(raw))
        w.buf += raw
        w.u8(1 if role.scu_role else 0)
        w.u8(1 if role.scp_role else 0)
    if ui.implementation_version_name is not None:
        name = ui.implementation_version_name
        raw = name.encode("ascii", "replace")
        if not name.isascii() or not _check_version_name(raw):
            raise ValueError(
                f"implementation version name {name!r} is not "
                "1-16 ISO 646 characters"
            )
        _uid_item(w, ItemType.IMPLEMENTATION_VERSION_NAME, raw)
    for ext in ui.extended_negotiations:
        pos = _sub_header(w, ItemType.SOP_CLASS_EXTENDED_NEGOTIATION)
        _u16_uid(w, ext.sop_class_uid, "extended negotiation SOP class UID")
        w.write(ext.application_information)
        w.patch_u16(pos)
    for common in ui.common_extended_negotiations:
        pos = _sub_header(w, ItemType.SOP_CLASS_COMMON_EXTENDED_NEGOTIATION)
        _u16_uid(w, common.sop_class_uid, "common extended SOP class UID")
        _u16_uid(w, common.service_class_uid, "service class UID")
        related = w.reserve_u16()
        for uid in common.related_general_sop_classes:
            _u16_uid(w, uid, "related general SOP class UID")
        w.patch_u16(related)
        w.patch_u16(pos)
    identity = ui.user_identity_rq
    if identity is not None:
        pos = _sub_header(w, ItemType.USER_IDENTITY_RQ)
        w.u8(UserIdentityType(identity.identity_type))
        w.u8(1 if identity.positive_response_requested else 0)
        _u16_bytes(w, identity.primary_field, "primary field")
        _u16_bytes(w, identity.secondary_field, "secondary field")
        w.patch_u16(pos)
    if ui.user_identity_ac is not None:
        pos = _sub_header(w, ItemType.USER_IDENTITY_AC)
        _u16_bytes(w, ui.user_identity_ac.server_response, "server response")
        w.patch_u16(pos)
    w.patch_u16(outer)
