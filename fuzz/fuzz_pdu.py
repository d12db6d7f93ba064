"""Fuzz the PDU codec (PS3.8 §9.3): decode arbitrary bytes, re-encode what decodes.

Properties:

- `decode_pdu_bytes` returns a PDU or raises `InvalidPDU`; any other exception is a bug;
- canonical re-encode: whatever decodes must encode (`encode_pdu` may not refuse a value the
  decoder produced; see `sendable` for the one exception), decode back to an equal PDU, and
  encode again to the same bytes;
- `decode_pdu(type, body)` on a view of a bytearray (what `ReceiveBuffer` yields) agrees
  with `decode_pdu_bytes`;
- the lenient rules (issue 13): an item of an unrecognized type appended to an
  A-ASSOCIATE-RQ/AC is skipped (PS3.8 §9.3.1), and reserved bits 2-7 set in every PDV
  message control header are not tested (Annex E.2): both decode to the same PDU, whose
  canonical encoding drops them.
- the presentation-context fast path (issue 18) is invisible: an A-ASSOCIATE-RQ decodes to
  the same PDU, or is refused with the same text, offset and reason, with it off.
- the P-DATA-TF one-PDV shortcut and the PDVs built without ``__init__`` (issue 18) are
  invisible: a P-DATA-TF body decodes as `reference_pdata` (the PDV loop as it was) does, or
  is refused with the same text, offset and reason;
- `ReceiveBuffer` hands up P-DATA-TF bodies as views of its staging area: the input fed in
  two pieces, every body kept as the view it came in until the end, gives the same PDUs as
  one `feed` copied out at once (no view is overwritten by what arrives after it).

Run: ``python fuzz/fuzz_pdu.py [libFuzzer flags] fuzz/corpus/fuzz_pdu``
(``-dict=fuzz/dicom.dict`` helps). Replay: ``fuzz_pdu.one_input(data)``.
"""

from __future__ import annotations

import dataclasses
import struct
import sys

from fuzz_reader import instrumented, run_fuzzer

with instrumented():
    from aiodicom.core import _item_codec
    from aiodicom.core.buffer import ReceiveBuffer
    from aiodicom.core.pdu import (
        PDU,
        AAssociateAC,
        AAssociateRQ,
        PDataTF,
        PresentationDataValue,
        decode_pdu,
        decode_pdu_bytes,
        encode_pdu,
    )
    from aiodicom.errors import AbortReason, InvalidPDU


def decode_or_none(data: bytes) -> PDU | None:
    """The decoded PDU, or None when `InvalidPDU` says the bytes are malformed."""
    try:
        return decode_pdu_bytes(data)
    except InvalidPDU as exc:
        assert isinstance(exc.offset, int) and exc.offset >= 0, exc.offset
        return None


def sendable(pdu: PDU) -> PDU:
    """``pdu`` with placeholder AE titles if it is an A-ASSOCIATE-AC whose titles we would
    refuse to send: PS3.8 §9.3.3 says an AC's AE fields are not tested on receipt, so the
    decoder takes any bytes there (as latin-1) while the encoder stays strict (finding F1 of
    fuzz/README.md: by design). The rest of the AC must still round-trip."""
    if not isinstance(pdu, AAssociateAC):
        return pdu
    try:
        encode_pdu(pdu)
    except ValueError:
        return dataclasses.replace(pdu, called_ae_title="CALLED", calling_ae_title="CALLING")
    return pdu


_UNKNOWN_ITEM = b"\x7f\x00\x00\x03abc"


def lenient(data: bytes, pdu: PDU) -> None:
    """What the lenient rules add to bytes that decode must decode to the same PDU."""
    if isinstance(pdu, AAssociateRQ | AAssociateAC) and len(data) - 6 + 7 <= 0xFFFFFFFF:
        grown = bytearray(data[: 6 + int.from_bytes(data[2:6], "big")] + _UNKNOWN_ITEM)
        grown[2:6] = (len(grown) - 6).to_bytes(4, "big")
        assert decode_pdu_bytes(bytes(grown)) == pdu
    elif isinstance(pdu, PDataTF):
        marked = bytearray(data[: 6 + int.from_bytes(data[2:6], "big")])
        pos = 6
        while pos < len(marked):
            marked[pos + 5] |= 0xFC
            pos += 4 + int.from_bytes(marked[pos : pos + 4], "big")
        assert decode_pdu_bytes(bytes(marked)) == pdu


def outcome(data: bytes) -> object:
    """The decoded PDU, or the refusal's text, offset and reason."""
    try:
        return decode_pdu_bytes(data)
    except InvalidPDU as exc:
        return str(exc), exc.offset, exc.reason


def without_fast_path(data: bytes) -> object:
    _item_codec.CONTEXT_FAST_PATH = False
    try:
        return outcome(data)
    finally:
        _item_codec.CONTEXT_FAST_PATH = True


def reference_pdata(body: bytes) -> PDataTF:
    """P-DATA-TF decoding as it was before the one-PDV shortcut (the differential's side)."""
    invalid = AbortReason.INVALID_PDU_PARAMETER_VALUE
    pdvs: list[PresentationDataValue] = []
    end, pos = len(body), 0
    while pos < end:
        at = 6 + pos
        if end - pos < 6:
            raise InvalidPDU(f"PDV item needs at least 6 bytes but only {end - pos} remain",
                             offset=at, reason=invalid)
        length, cid, control = struct.unpack_from(">LBB", body, pos)
        if length < 2 or length > end - pos - 4:
            raise InvalidPDU(f"PDV item length {length} is not within 2..{end - pos - 4}",
                             offset=at, reason=invalid)
        if not cid & 1:
            raise InvalidPDU(f"PDV context ID {cid} is not odd", offset=at + 4, reason=invalid)
        pdvs.append(PresentationDataValue(context_id=cid, is_command=bool(control & 1),
                                          is_last=bool(control & 2),
                                          data=body[pos + 6 : pos + 4 + length]))
        pos += 4 + length
    if not pdvs:
        raise InvalidPDU("P-DATA-TF carries no PDV item", offset=2,
                         reason=AbortReason.UNEXPECTED_PDU_PARAMETER)
    return PDataTF(pdvs=tuple(pdvs))


def _pdata_outcome(decode: object, body: bytes) -> object:
    try:
        pdu = decode(body)  # type: ignore[operator]
    except InvalidPDU as exc:
        return str(exc), exc.offset, exc.reason
    assert isinstance(pdu, PDataTF)
    assert all(type(p) is PresentationDataValue and type(p.is_last) is bool for p in pdu.pdvs)
    return [(p.context_id, p.is_command, p.is_last, bytes(p.data)) for p in pdu.pdvs], pdu


def check_pdata(body: bytes) -> None:
    mine = _pdata_outcome(lambda b: decode_pdu(0x04, memoryview(bytearray(b))), body)
    theirs = _pdata_outcome(reference_pdata, body)
    assert mine == theirs, (mine, theirs)


def _stream(data: bytes, cut: int | None) -> list[tuple[int, bytes]]:
    """PDUs out of a `ReceiveBuffer` fed ``data`` (in two pieces at ``cut``, views kept until
    the end, then copied; or at once, copied at once). Stops at a framing error."""
    buf = ReceiveBuffer(max_body=1 << 16, staging_size=64)
    kept = []
    try:
        if cut is None:
            buf.feed(data)
            return [(raw.pdu_type, bytes(raw.body)) for raw in buf]
        buf.feed(data[:cut])
        kept.extend(buf)
        buf.feed(data[cut:])
    except InvalidPDU:
        pass
    kept.extend(buf)
    return [(raw.pdu_type, bytes(raw.body)) for raw in kept]


def check_stream(data: bytes) -> None:
    cut = data[-1] % (len(data) + 1)
    split, whole = _stream(data, cut), _stream(data, None)
    assert split == whole, (split, whole)


def one_input(data: bytes) -> None:
    """One fuzz case; raises AssertionError (or anything unexpected) on a bug."""
    if data[:1] == b"\x01":
        fast, general = outcome(data), without_fast_path(data)
        assert fast == general, (fast, general)
    if data[:1] == b"\x04":
        check_pdata(data[6:])
    if data:
        check_stream(data)
    pdu = decode_or_none(data)
    if len(data) >= 6:
        body = memoryview(bytearray(data[6:]))
        try:
            direct: PDU | None = decode_pdu(data[0], body)
        except InvalidPDU:
            direct = None
        if int.from_bytes(data[2:6], "big") == len(data) - 6:
            assert direct == pdu, (direct, pdu)
    if pdu is None:
        return
    lenient(data, pdu)
    pdu = sendable(pdu)
    encoded = encode_pdu(pdu)  # a ValueError here: the decoder accepted what cannot be sent
    again = decode_pdu_bytes(encoded)
    assert again == pdu, (again, pdu)
    assert encode_pdu(again) == encoded


def main(argv: list[str]) -> None:
    run_fuzzer(argv, one_input)


if __name__ == "__main__":
    main(sys.argv)
