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

Run: ``python fuzz/fuzz_pdu.py [libFuzzer flags] fuzz/corpus/fuzz_pdu``
(``-dict=fuzz/dicom.dict`` helps). Replay: ``fuzz_pdu.one_input(data)``.
"""

from __future__ import annotations

import dataclasses
import sys

from fuzz_reader import instrumented, run_fuzzer

with instrumented():
    from aiodicom.core import _item_codec
    from aiodicom.core.pdu import (
        PDU,
        AAssociateAC,
        AAssociateRQ,
        PDataTF,
        decode_pdu,
        decode_pdu_bytes,
        encode_pdu,
    )
    from aiodicom.errors import InvalidPDU


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


def one_input(data: bytes) -> None:
    """One fuzz case; raises AssertionError (or anything unexpected) on a bug."""
    if data[:1] == b"\x01":
        fast, general = outcome(data), without_fast_path(data)
        assert fast == general, (fast, general)
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
