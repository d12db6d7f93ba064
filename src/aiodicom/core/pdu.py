"""The seven PDUs of PS3.8 §9.3: data model, `decode_pdu` and `encode_pdu`.

Decoding reads a memoryview through `Reader` and raises only `InvalidPDU` (with the offset
from the PDU start, header included, and the A-ABORT reason PS3.8 would send); encoding
back-patches lengths through `Writer` and raises ValueError for values PS3.8 cannot carry.
P-DATA-TF is the hot path: its PDV values stay views of the received body, and the
`encode_pdata_header`/`encode_pdv_header` helpers let a sender write headers and data-set
fragments with ``writelines`` without joining them.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from aiodicom.core._item_codec import (
    INVALID,
    UNEXPECTED,
    ae_title_value,
    check_uid,
    decode_ae_title,
    decode_context_ac,
    decode_context_rq,
    decode_uid,
    decode_user_information,
    encode_ae_title,
    encode_context_ac,
    encode_context_rq,
    encode_user_information,
    item_start,
    misplaced_item,
    read_item,
)
from aiodicom.core.buffer import PDU_HEADER_LENGTH, ReadableBuffer, Reader, Writer
from aiodicom.core.items import (
    APPLICATION_CONTEXT_NAME,
    ItemType,
    PresentationContextAC,
    PresentationContextRQ,
)
from aiodicom.core.user_items import UserInformation
from aiodicom.errors import AbortReason, InvalidPDU

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
    "decode_pdu",
    "decode_pdu_bytes",
    "encode_pdata_header",
    "encode_pdata_pdv_header",
    "encode_pdu",
    "encode_pdv_header",
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


# -- decoding -----------------------------------------------------------------------------

_P_DATA_TF: Final = 0x04
"""`PDUType.P_DATA_TF` as a plain int: an enum member lookup costs ~950 instructions on 3.11."""
_HEADER: Final = struct.Struct(">BxL")
_PDV_HEADER: Final = struct.Struct(">LBB")
_PDATA_PDV_HEADER: Final = struct.Struct(">BxLLBB")
_RELEASE_RQ: Final = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
_RELEASE_RP: Final = b"\x06\x00\x00\x00\x00\x04\x00\x00\x00\x00"
_ASSOCIATE_FIXED: Final = struct.Struct(">BxLHxx16s16s32xBxH")
"""A-ASSOCIATE-RQ/AC up to the application context item's value: type, length (patched),
protocol version, called and calling AE titles, 32 reserved bytes, item 0x10's header."""
_FIXED_PART: Final = struct.Struct(">Hxx16s16s32x")
"""The 68 bytes of A-ASSOCIATE-RQ/AC before its items: version, reserved, AE titles, reserved."""
_APPLICATION_CONTEXT: Final = int(ItemType.APPLICATION_CONTEXT)
_USER_INFORMATION: Final = int(ItemType.USER_INFORMATION)


def _decode_associate(r: Reader, *, is_rq: bool) -> AAssociateRQ | AAssociateAC:
    """A-ASSOCIATE-RQ/AC (PS3.8 §9.3.2, §9.3.3): 68-byte fixed part, then items in any order.

    The protocol version is returned as received: a peer without bit 0 set is answered with
    A-ASSOCIATE-RJ (source 2, reason 2) by negotiation, not aborted here.
    """
    name = "A-ASSOCIATE-RQ" if is_rq else "A-ASSOCIATE-AC"
    if r.remaining < _FIXED_PART.size:  # refused field by field, naming the one cut short
        version = r.u16("protocol version")
        r.skip(2, "reserved bytes")
        called = decode_ae_title(r, "called AE title", strict=is_rq)
        calling = decode_ae_title(r, "calling AE title", strict=is_rq)
        r.skip(32, "reserved bytes")
    else:
        at = r.offset
        version, called_raw, calling_raw = _FIXED_PART.unpack(r.take(_FIXED_PART.size))
        called = ae_title_value(called_raw, "called AE title", at + 4, strict=is_rq)
        calling = ae_title_value(calling_raw, "calling AE title", at + 20, strict=is_rq)
    context_type = 0x20 if is_rq else 0x21  # ItemType.PRESENTATION_CONTEXT_RQ / _AC
    app_context: str | None = None
    user_info: UserInformation | None = None
    rq_contexts: list[PresentationContextRQ] = []
    ac_contexts: list[PresentationContextAC] = []
    ids: set[int] = set()
    while not r.at_end():
        item_type, sub = read_item(r, "item")
        if item_type == context_type:
            if is_rq:
                rq_contexts.append(decode_context_rq(sub))
                cid = rq_contexts[-1].context_id
            else:
                ac_contexts.append(decode_context_ac(sub))
                cid = ac_contexts[-1].context_id
            if cid in ids:
                raise InvalidPDU(
                    f"presentation context ID {cid} appears twice", offset=sub.base, reason=INVALID
                )
            ids.add(cid)
        elif item_type == _APPLICATION_CONTEXT and app_context is None:
            app_context = decode_uid(sub, sub.remaining, "application context name")
        elif item_type == _USER_INFORMATION and user_info is None:
            user_info = decode_user_information(sub, is_rq=is_rq)
        elif item_type in (_APPLICATION_CONTEXT, _USER_INFORMATION):
            raise InvalidPDU(
                f"{name} has two 0x{item_type:02X} items",
                offset=item_start(sub),
                reason=UNEXPECTED,
            )
        else:
            misplaced_item(item_type, item_start(sub), name)
    missing = (
        "application context item (0x10)"
        if app_context is None
        else "user information item (0x50)"
        if user_info is None
        else "presentation context item (0x20)"
        if is_rq and not rq_contexts
        else None
    )
    if missing is not None or app_context is None or user_info is None:
        raise InvalidPDU(f"{name} has no {missing}", offset=r.offset, reason=UNEXPECTED)
    if is_rq:
        return AAssociateRQ(
            called_ae_title=called,
            calling_ae_title=calling,
            presentation_contexts=tuple(rq_contexts),
            user_information=user_info,
            application_context=app_context,
            protocol_version=version,
        )
    return AAssociateAC(
        called_ae_title=called,
        calling_ae_title=calling,
        presentation_contexts=tuple(ac_contexts),
        user_information=user_info,
        application_context=app_context,
        protocol_version=version,
    )


def _decode_rq(r: Reader) -> PDU:
    return _decode_associate(r, is_rq=True)


def _decode_ac(r: Reader) -> PDU:
    return _decode_associate(r, is_rq=False)


def _fixed4(r: Reader, name: str) -> None:
    if r.remaining != 4:
        raise InvalidPDU(f"{name} has length {r.remaining}, not 4", offset=2, reason=INVALID)


def _decode_rj(r: Reader) -> PDU:
    """A-ASSOCIATE-RJ (§9.3.4); result, source and reason are reported as received."""
    _fixed4(r, "A-ASSOCIATE-RJ")
    r.skip(1)
    return AAssociateRJ(result=r.u8(), source=r.u8(), reason=r.u8())


_new_object = object.__new__
_set_pdv_context_id = PresentationDataValue.__dict__["context_id"].__set__
_set_pdv_is_command = PresentationDataValue.__dict__["is_command"].__set__
_set_pdv_is_last = PresentationDataValue.__dict__["is_last"].__set__
_set_pdv_data = PresentationDataValue.__dict__["data"].__set__
_set_pdata_pdvs = PDataTF.__dict__["pdvs"].__set__


def _pdv(context_id: int, control: int, data: memoryview) -> PresentationDataValue:
    """The PDV, built without the frozen ``__init__`` (its keyword call and one
    ``object.__setattr__`` per field cost three times this): same class, same fields."""
    pdv: PresentationDataValue = _new_object(PresentationDataValue)
    _set_pdv_context_id(pdv, context_id)
    _set_pdv_is_command(pdv, control & 1 != 0)
    _set_pdv_is_last(pdv, control & 2 != 0)
    _set_pdv_data(pdv, data)
    return pdv


def _pdata(pdvs: tuple[PresentationDataValue, ...]) -> PDataTF:
    pdata: PDataTF = _new_object(PDataTF)
    _set_pdata_pdvs(pdata, pdvs)
    return pdata


def _decode_pdata(body: memoryview) -> PDataTF:
    """P-DATA-TF (§9.3.5): PDV items of item-length (4), context ID, control header, value.

    The per-message hot path, so it unpacks each 6-byte PDV header in one go instead of
    going through `Reader`; every length is still checked against what remains. Reserved
    bits 2-7 of the message control header are not tested (PS3.8 Annex E.2). One valid
    PDV filling the PDU (what every sender we know sends) skips the loop: the loop would
    give the same single PDV.
    """
    end = len(body)
    if end >= 6:
        length, cid, control = _PDV_HEADER.unpack_from(body, 0)
        if length + 4 == end and cid & 1:  # _pdv and _pdata, inline
            pdv: PresentationDataValue = _new_object(PresentationDataValue)
            _set_pdv_context_id(pdv, cid)
            _set_pdv_is_command(pdv, control & 1 != 0)
            _set_pdv_is_last(pdv, control & 2 != 0)
            _set_pdv_data(pdv, body[6:end])
            pdata: PDataTF = _new_object(PDataTF)
            _set_pdata_pdvs(pdata, (pdv,))
            return pdata
    pdvs: list[PresentationDataValue] = []
    pos = 0
    while pos < end:
        at = PDU_HEADER_LENGTH + pos
        if end - pos < 6:
            raise InvalidPDU(
                f"PDV item needs at least 6 bytes but only {end - pos} remain",
                offset=at,
                reason=INVALID,
            )
        length, cid, control = _PDV_HEADER.unpack_from(body, pos)
        if length < 2 or length > end - pos - 4:
            raise InvalidPDU(
                f"PDV item length {length} is not within 2..{end - pos - 4}",
                offset=at,
                reason=INVALID,
            )
        if not cid & 1:
            raise InvalidPDU(f"PDV context ID {cid} is not odd", offset=at + 4, reason=INVALID)
        pdvs.append(_pdv(cid, control, body[pos + 6 : pos + 4 + length]))
        pos += 4 + length
    if not pdvs:
        raise InvalidPDU("P-DATA-TF carries no PDV item", offset=2, reason=UNEXPECTED)
    return _pdata(tuple(pdvs))


def _decode_release_rq(r: Reader) -> PDU:
    _fixed4(r, "A-RELEASE-RQ")
    return AReleaseRQ()


def _decode_release_rp(r: Reader) -> PDU:
    _fixed4(r, "A-RELEASE-RP")
    return AReleaseRP()


def _decode_abort(r: Reader) -> PDU:
    """A-ABORT (§9.3.8); source and reason are reported as received."""
    _fixed4(r, "A-ABORT")
    r.skip(2)
    return AAbort(source=r.u8(), reason=r.u8())


_DECODERS: Final[dict[int, Callable[[Reader], PDU]]] = {
    PDUType.A_ASSOCIATE_RQ: _decode_rq,
    PDUType.A_ASSOCIATE_AC: _decode_ac,
    PDUType.A_ASSOCIATE_RJ: _decode_rj,
    PDUType.A_RELEASE_RQ: _decode_release_rq,
    PDUType.A_RELEASE_RP: _decode_release_rp,
    PDUType.A_ABORT: _decode_abort,
}
"""Decoder per PDU type (PS3.8 Table 9-11); P-DATA-TF goes to `_decode_pdata` directly."""


def decode_pdu(pdu_type: int, body: ReadableBuffer) -> PDU:
    """Decode a PDU from its type byte and ``body``, the bytes after its 6-byte header.

    This is what `ReceiveBuffer` yields (`RawPDU`). Raises only `InvalidPDU`; offsets count
    from the PDU start (the header's 6 bytes included). P-DATA-TF values are views of
    ``body`` (no copy), so they live as long as it does.
    """
    if pdu_type == _P_DATA_TF:
        view = body if isinstance(body, memoryview) else memoryview(body)
        return _decode_pdata(view if view.format == "B" and view.ndim == 1 else view.cast("B"))
    decoder = _DECODERS.get(pdu_type)
    if decoder is None:
        raise InvalidPDU(
            f"unrecognized PDU type 0x{pdu_type:02X}",
            offset=0,
            reason=AbortReason.UNRECOGNIZED_PDU,
        )
    return decoder(Reader(body, base=PDU_HEADER_LENGTH))


def decode_pdu_bytes(data: ReadableBuffer) -> PDU:
    """Decode one whole PDU, header included; its length field must match the rest exactly."""
    view = data if isinstance(data, memoryview) else memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    if len(view) < PDU_HEADER_LENGTH:
        raise InvalidPDU(f"{len(view)} bytes are shorter than a PDU header", reason=INVALID)
    pdu_type, length = _HEADER.unpack_from(view, 0)
    if length != len(view) - PDU_HEADER_LENGTH:
        raise InvalidPDU(
            f"PDU length field says {length} but {len(view) - PDU_HEADER_LENGTH} bytes follow",
            offset=2,
            reason=INVALID,
        )
    return decode_pdu(pdu_type, view[PDU_HEADER_LENGTH:])


# -- encoding -----------------------------------------------------------------------------


def _encode_associate(pdu: AAssociateRQ | AAssociateAC) -> bytes:
    is_rq = isinstance(pdu, AAssociateRQ)
    if not 0 <= pdu.protocol_version <= 0xFFFF:
        raise ValueError(f"protocol version {pdu.protocol_version} does not fit 16 bits")
    ids = [pc.context_id for pc in pdu.presentation_contexts]
    if len(set(ids)) != len(ids):
        raise ValueError(f"presentation context IDs repeat: {ids}")
    if is_rq and not ids:
        raise ValueError("A-ASSOCIATE-RQ needs at least one presentation context")
    called = encode_ae_title(pdu.called_ae_title, "called AE title")
    calling = encode_ae_title(pdu.calling_ae_title, "calling AE title")
    app = check_uid(pdu.application_context, "application context name")
    w = Writer()
    w.buf += _ASSOCIATE_FIXED.pack(
        PDUType.A_ASSOCIATE_RQ if is_rq else PDUType.A_ASSOCIATE_AC,
        0,
        pdu.protocol_version,
        called,
        calling,
        _APPLICATION_CONTEXT,
        len(app),
    )
    w.buf += app
    if isinstance(pdu, AAssociateRQ):
        for rq in pdu.presentation_contexts:
            encode_context_rq(w, rq)
    else:
        for ac in pdu.presentation_contexts:
            encode_context_ac(w, ac)
    encode_user_information(w, pdu.user_information, is_rq=is_rq)
    w.patch_u32(2)
    return w.getvalue()


def _control(is_command: bool, is_last: bool) -> int:
    return (1 if is_command else 0) | (2 if is_last else 0)


def _nbytes(data: ReadableBuffer) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


def _encode_pdata(pdu: PDataTF) -> bytes:
    """P-DATA-TF in one join: headers and values, each value copied once."""
    if not pdu.pdvs:
        raise ValueError("P-DATA-TF needs at least one PDV")
    parts: list[ReadableBuffer] = [b""]
    total = 0
    for pdv in pdu.pdvs:
        n = _nbytes(pdv.data)
        parts.append(encode_pdv_header(n, pdv.context_id, pdv.is_command, pdv.is_last))
        parts.append(pdv.data)
        total += n + 6
    parts[0] = encode_pdata_header(total)
    return b"".join(parts)


def _byte(value: int, what: str) -> int:
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{what} {value} does not fit one byte")
    return value


def encode_pdu(pdu: PDU) -> bytes:
    """The PDU's bytes, header included; ValueError if a value cannot be encoded."""
    if isinstance(pdu, PDataTF):
        return _encode_pdata(pdu)
    if isinstance(pdu, AAssociateRQ | AAssociateAC):
        return _encode_associate(pdu)
    if isinstance(pdu, AAssociateRJ):
        return bytes(
            (3, 0, 0, 0, 0, 4, 0)
            + (_byte(pdu.result, "result"), _byte(pdu.source, "source"))
            + (_byte(pdu.reason, "reason"),)
        )
    if isinstance(pdu, AAbort):
        return bytes(
            (7, 0, 0, 0, 0, 4, 0, 0, _byte(pdu.source, "source"), _byte(pdu.reason, "reason"))
        )
    if isinstance(pdu, AReleaseRQ):
        return _RELEASE_RQ
    if isinstance(pdu, AReleaseRP):
        return _RELEASE_RP
    raise TypeError(f"not a PDU: {pdu!r}")


def encode_pdata_header(body_length: int) -> bytes:
    """The 6-byte P-DATA-TF header (type 0x04, reserved, 32-bit length).

    ``body_length`` is everything after this header: the sum over its PDV items of
    (4-byte item length + 2 + value length). For one PDV carrying ``n`` value bytes it is
    ``n + 6``.
    """
    if not 6 <= body_length <= 0xFFFFFFFF:
        raise ValueError(f"P-DATA-TF body length {body_length} is not within 6..2^32-1")
    return _HEADER.pack(_P_DATA_TF, body_length)


def encode_pdv_header(
    pdv_length_of_data: int, context_id: int, is_command: bool, is_last: bool
) -> bytes:
    """The 6 bytes before a PDV value: item length, context ID, message control header.

    ``pdv_length_of_data`` is the length of the value (the fragment) alone; the item length
    written is that plus 2, since it counts the context ID and control header bytes
    (PS3.8 §9.3.5.1, Annex E.2). The value itself follows, not included in the result.
    """
    if not (0 < context_id < 256 and context_id & 1):
        raise ValueError(f"presentation context ID {context_id} is not an odd number 1-255")
    if not 0 <= pdv_length_of_data <= 0xFFFFFFFF - 6:
        raise ValueError(f"PDV value of {pdv_length_of_data} bytes is too long")
    return _PDV_HEADER.pack(pdv_length_of_data + 2, context_id, _control(is_command, is_last))


def encode_pdata_pdv_header(
    data_length: int, context_id: int, is_command: bool, is_last: bool
) -> bytes:
    """The 12 bytes before the value of a P-DATA-TF that carries exactly one PDV.

    Equal to ``encode_pdata_header(data_length + 6) + encode_pdv_header(data_length, ...)``,
    in one pack: the fragmenter sends ``writelines([header, fragment_view])``.
    """
    if not (0 < context_id < 256 and context_id & 1):
        raise ValueError(f"presentation context ID {context_id} is not an odd number 1-255")
    if not 0 <= data_length <= 0xFFFFFFFF - 6:
        raise ValueError(f"PDV value of {data_length} bytes is too long")
    return _PDATA_PDV_HEADER.pack(
        _P_DATA_TF,
        data_length + 6,
        data_length + 2,
        context_id,
        _control(is_command, is_last),
    )
