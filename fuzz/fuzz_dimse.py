"""Fuzz the DIMSE layer (PS3.7 §6.3, §9.3, §10.3; PS3.8 Annex E): command sets and reassembly.

The last input byte picks a mode (the rest is the payload):

- 0 ``command``: `decode_message` returns a `Message` or raises `DimseError`; what decodes
  encodes, decodes back equal and re-encodes to the same bytes; differential: the
  fixed-layout fast path (`_fastpath.decode_common`) returns None or exactly what the
  general decoder (`messages._decode_general`) returns on the same bytes (same types of
  every field too), never a message where the general decoder refuses, and
  `decode_message` gives the general decoder's answer; the same for its straight-line
  C-ECHO-RQ/C-STORE-RQ reader (`_fastpath._decode_request`, which may also raise
  `DimseError` on a malformed SOP class UID: `decode_common` then declines);
- 1 ``fragments``: the payload is a command set cut at fuzzer-chosen points into command
  PDVs; `MessageAssembler` must give what `decode_message` gives on the whole (the same
  message, or a `DimseError` for both);
- 2 ``stream``: the payload is a script of PDVs (see `parse_script`) grouped into
  P-DATA-TFs; `MessageAssembler` yields events or raises `DimseError`, its state follows
  its events, data-set fragments are the bytes sent, decoded commands round-trip;
  differential: `feed` (with its one-PDV shortcut) gives the same events, the same refusal
  text and the same state after every P-DATA-TF as a second assembler fed PDV by PDV
  (`feed_pdv`).

Run: ``python fuzz/fuzz_dimse.py [libFuzzer flags] fuzz/corpus/fuzz_dimse``.
Replay: ``fuzz_dimse.one_input(data)``.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from dataclasses import fields

from fuzz_reader import Provider, Tail, chunks, instrumented, provider, read_sizes, run_fuzzer

with instrumented():
    from aiodicom.core.dimse import (
        CommandReceived,
        DatasetFragment,
        Message,
        MessageAssembler,
        decode_message,
        encode_message,
    )
    from aiodicom.core.dimse._fastpath import _decode_request, decode_common
    from aiodicom.core.dimse.messages import _decode_general
    from aiodicom.core.pdu import PDataTF, PresentationDataValue
    from aiodicom.errors import DimseError

MODE_COMMAND, MODE_FRAGMENTS, MODE_STREAM = 0, 1, 2
_CONTEXTS = (1, 3, 5, 255)
_RECORD = struct.Struct(">BH")
"""Script record header: flags, value length (big endian)."""
_CMD, _LAST, _END_PDU = 0x01, 0x02, 0x10


def decode_or_none(data: bytes | memoryview) -> Message | None:
    try:
        return decode_message(data)
    except DimseError:
        return None


def check_round_trip(message: Message) -> None:
    """What decoded must encode, decode back equal, and re-encode identically."""
    encoded = encode_message(message)  # a DimseError here: decoded what we cannot send
    again = decode_message(encoded)
    assert again == message, (again, message)
    assert encode_message(again) == encoded


def check_same(fast: Message, general: Message) -> None:
    """Equal messages, down to each field's type (a Status or Priority, not a plain int)."""
    assert type(fast) is type(general), (fast, general)
    assert fast == general, (fast, general)
    for field in fields(general):
        mine, theirs = getattr(fast, field.name), getattr(general, field.name)
        assert type(mine) is type(theirs), (field.name, mine, theirs)
    assert repr(fast) == repr(general), (fast, general)


def _straight(payload: bytes) -> Message | None:
    try:
        return _decode_request(memoryview(payload), len(payload))
    except DimseError:
        return None


def _command(payload: bytes) -> None:
    fast = decode_common(payload)  # never raises: None declines
    straight = _straight(payload)
    try:
        general: Message | None = _decode_general(payload)
    except DimseError as exc:
        assert fast is None, f"fast path decoded what the general decoder refuses ({exc}): {fast!r}"
        assert straight is None, f"straight line decoded a refused command ({exc}): {straight!r}"
        general = None
    if fast is not None and general is not None:
        check_same(fast, general)
    if straight is not None and general is not None:
        check_same(straight, general)
    message = decode_or_none(payload)
    if general is None:
        assert message is None, message
        return
    assert message is not None
    check_same(message, general)
    check_round_trip(message)


def _fragments(fdp: Provider) -> None:
    sizes = read_sizes(fdp, largest=256)
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    expected = decode_or_none(payload)
    assembler = MessageAssembler()
    pieces = list(chunks(payload, sizes)) or [b""]
    events = []
    try:
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            pdv = PresentationDataValue(context_id=7, is_command=True, is_last=last, data=piece)
            events.extend(assembler.feed(PDataTF(pdvs=(pdv,))))
    except DimseError:
        assert expected is None, f"reassembly refused what decodes whole: {expected!r}"
        return
    assert len(events) == 1 and isinstance(events[0], CommandReceived), events
    assert events[0].message == expected, (events[0].message, expected)
    assert events[0].context_id == 7
    assert assembler.expecting_dataset == expected.has_dataset


def parse_script(payload: bytes) -> list[PDataTF]:
    """Records of (flags: u8, length: u16 BE, value); flags bit 0 command, bit 1 last,
    bits 2-3 pick the context ID (1, 3, 5, 255), bit 4 ends the current P-DATA-TF."""
    pdus: list[PDataTF] = []
    current: list[PresentationDataValue] = []
    pos = 0
    while len(payload) - pos >= _RECORD.size:
        flags, length = _RECORD.unpack_from(payload, pos)
        pos += _RECORD.size
        value = payload[pos : pos + length]
        pos += len(value)
        current.append(
            PresentationDataValue(
                context_id=_CONTEXTS[(flags >> 2) & 3],
                is_command=bool(flags & _CMD),
                is_last=bool(flags & _LAST),
                data=value,
            )
        )
        if flags & _END_PDU:
            pdus.append(PDataTF(pdvs=tuple(current)))
            current = []
    if current:
        pdus.append(PDataTF(pdvs=tuple(current)))
    return pdus


def script(pdvs: Sequence[tuple[int, bool, bool, bytes]], *, pdu_per_pdv: bool = True) -> bytes:
    """Inverse of `parse_script`: (context ID, is_command, is_last, value) per PDV."""
    out = bytearray()
    for context_id, is_command, is_last, value in pdvs:
        flags = _CONTEXTS.index(context_id) << 2
        flags |= (_CMD if is_command else 0) | (_LAST if is_last else 0)
        flags |= _END_PDU if pdu_per_pdv else 0
        out += _RECORD.pack(flags, len(value)) + value
    return bytes(out)


def _assembler_state(a: MessageAssembler) -> tuple[object, ...]:
    return (a.idle, a.expecting_dataset, a._command_context, a._dataset_context,
            bytes(a._command))


def _event_rows(events: Sequence[object]) -> list[tuple[object, ...]]:
    rows: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, CommandReceived):
            rows.append((e.context_id, type(e.message), repr(e.message)))
        else:
            assert isinstance(e, DatasetFragment)
            rows.append((e.context_id, type(e.data), bytes(e.data), e.is_last))
    return rows


def _by_pdv(assembler: MessageAssembler, pdata: PDataTF) -> object:
    try:
        events = [e for e in map(assembler.feed_pdv, pdata.pdvs) if e is not None]
    except DimseError as exc:
        return str(exc)
    return _event_rows(events)


def _stream(payload: bytes) -> None:
    assembler = MessageAssembler()
    reference = MessageAssembler()
    for pdata in parse_script(payload):
        expected = _by_pdv(reference, pdata)
        try:
            events = assembler.feed(pdata)
        except DimseError as exc:
            assert expected == str(exc), (expected, exc)
            assert _assembler_state(assembler) == _assembler_state(reference)
            return  # the stream is unusable now: the shell aborts the association
        assert _event_rows(events) == expected, (events, expected)
        assert _assembler_state(assembler) == _assembler_state(reference)
        sent = [pdv for pdv in pdata.pdvs if not pdv.is_command]
        fragments = [e for e in events if isinstance(e, DatasetFragment)]
        assert [bytes(f.data) for f in fragments] == [bytes(p.data) for p in sent]
        for event in events:
            if isinstance(event, CommandReceived):
                check_round_trip(event.message)
        if events:
            last = events[-1]
            if isinstance(last, DatasetFragment):
                assert assembler.expecting_dataset != last.is_last
            else:
                assert assembler.expecting_dataset == last.message.has_dataset
        assert not (assembler.idle and assembler.expecting_dataset)


def make_input(mode: int, payload: bytes, sizes: Sequence[int] = ()) -> bytes:
    """The fuzzer input for ``mode`` (and chunk ``sizes`` in fragments mode)."""
    tail = Tail().int(mode, 0, 255)
    if mode == MODE_FRAGMENTS:
        tail.int(len(sizes), 0, 15)
        for size in sizes:
            tail.int(size, 1, 256)
    return tail.build(payload)


def one_input(data: bytes) -> None:
    """One fuzz case; raises AssertionError (or anything unexpected) on a bug."""
    fdp = provider(data)
    mode = fdp.ConsumeIntInRange(0, 255) % 3
    if mode == MODE_FRAGMENTS:
        _fragments(fdp)
        return
    payload = fdp.ConsumeBytes(fdp.remaining_bytes())
    if mode == MODE_COMMAND:
        _command(payload)
    else:
        _stream(payload)


def main(argv: list[str]) -> None:
    run_fuzzer(argv, one_input)


if __name__ == "__main__":
    main(sys.argv)
