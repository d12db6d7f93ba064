"""Hostile review: a command set's pending fragments are bounded by bytes, and a PDV adds
no more than its value: empty (or tiny) non-last command fragments must not pile up."""

from __future__ import annotations

import tracemalloc

from aiodicom.core.dimse.fragments import MessageAssembler
from aiodicom.core.dimse.messages import CEchoRQ, encode_message
from aiodicom.core.pdu import PDataTF, PresentationDataValue


def _pdv(data: bytes, *, last: bool) -> PDataTF:
    return PDataTF(pdvs=(PresentationDataValue(
        context_id=1, is_command=True, is_last=last, data=memoryview(bytearray(data))),))


def test_empty_command_fragments_hold_nothing() -> None:
    assembler = MessageAssembler()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(20_000):  # 12 bytes each on the wire, each decoded anew
            assert assembler.feed(_pdv(b"", last=False)) == []
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 64 * 1024, f"{held} bytes held for 20,000 empty command fragments"
    command = encode_message(CEchoRQ(message_id=7))
    (event,) = assembler.feed(_pdv(command, last=True))
    assert event.message == CEchoRQ(message_id=7)


def test_tiny_command_fragments_cost_their_bytes() -> None:
    assembler = MessageAssembler()
    command = encode_message(CEchoRQ(message_id=9))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for at in range(0, len(command) - 2, 2):
            assert assembler.feed(_pdv(command[at : at + 2], last=False)) == []
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 2 * len(command) + 256, f"{held} bytes held for a {len(command)}-byte command"
    (event,) = assembler.feed(_pdv(command[len(command) - 2 :], last=True))
    assert event.message == CEchoRQ(message_id=9)
