"""The straight-line request decoder and the assembler's one-PDV shortcut agree with the
general code on every input (hypothesis differentials), and the usual requests take them.

`_decode_request` (core/dimse/_fastpath.py) reads C-ECHO-RQ and C-STORE-RQ in canonical
order; `MessageAssembler.feed` skips its PDV loop for a P-DATA-TF of one PDV. Both must give
exactly what the general path gives: the same message or event (type, fields, value types),
the same refusal (type and text), and the same assembler state afterwards.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.dimse import (
    CEchoRQ,
    CommandReceived,
    CStoreRQ,
    DatasetFragment,
    MessageAssembler,
    Priority,
    encode_message,
)
from aiodicom.core.dimse._fastpath import _decode_request, decode_common
from aiodicom.core.dimse.messages import _decode_general
from aiodicom.core.pdu import PDataTF, PresentationDataValue
from aiodicom.errors import DimseError
from tests.dimse_strategies import MESSAGE_STRATEGIES, messages

UID = "1.2.840.10008.5.1.4.1.1.2"


def _same(fast: Any, general: Any) -> None:
    assert type(fast) is type(general)
    assert fast == general
    assert repr(fast) == repr(general)
    for name in fast.__slots__:
        assert type(getattr(fast, name)) is type(getattr(general, name)), name


def _straight(data: bytes) -> Any:
    """`_decode_request`'s answer, or "raised" (decode_common turns that into None)."""
    view = memoryview(data)
    try:
        return _decode_request(view, len(view))
    except DimseError:
        return "raised"


def _check_request(data: bytes) -> Any:
    fast = _straight(data)
    try:
        general = _decode_general(data)
    except DimseError:
        assert fast is None or fast == "raised"
        assert decode_common(data) is None
        return None
    if fast is not None and fast != "raised":
        _same(fast, general)
    return fast


@settings(max_examples=400, deadline=None)
@given(st.one_of(MESSAGE_STRATEGIES[CEchoRQ], MESSAGE_STRATEGIES[CStoreRQ]))
def test_canonical_requests_take_the_straight_line(msg: Any) -> None:
    fast = _check_request(encode_message(msg))
    if getattr(msg, "move_originator_ae_title", None) is None and getattr(
        msg, "move_originator_message_id", None
    ) is None:
        assert fast is not None and fast != "raised"


@st.composite
def _mutated_requests(draw: st.DrawFn) -> bytes:
    msg = draw(st.one_of(MESSAGE_STRATEGIES[CEchoRQ], MESSAGE_STRATEGIES[CStoreRQ]))
    data = bytearray(encode_message(msg))
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["set", "cut", "insert"]))
        at = draw(st.integers(0, len(data) - 1)) if data else 0
        if kind == "set" and data:
            data[at] = draw(st.sampled_from([0, 1, 2, 0x20, 0x2E, 0x30, 0x41, 0xFF]))
        elif kind == "cut":
            del data[at : at + draw(st.integers(1, 4))]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=6))
    return bytes(data)


@settings(max_examples=1500, deadline=None)
@given(st.one_of(_mutated_requests(), messages().map(encode_message), st.binary(max_size=120)))
def test_straight_line_agrees_with_the_general_decoder(data: bytes) -> None:
    _check_request(data)


def test_straight_line_values() -> None:
    echo = _straight(encode_message(CEchoRQ(message_id=0xFFFF, has_dataset=True)))
    assert echo == CEchoRQ(message_id=0xFFFF, has_dataset=True)
    store = CStoreRQ(message_id=3, affected_sop_class_uid=UID,
                     affected_sop_instance_uid="1.2.3.4", priority=Priority.HIGH)
    got = _straight(encode_message(store))
    _same(got, store)
    assert type(got.priority) is Priority and got.has_dataset is True
    odd = encode_message(CStoreRQ(message_id=3, affected_sop_class_uid=UID,
                                  affected_sop_instance_uid="1.2.3.4", priority=9))
    assert _straight(odd).priority == 9 and type(_straight(odd).priority) is int
    bad_class = encode_message(CEchoRQ(message_id=1)).replace(b"1.2.840.10008.1.1",
                                                              b"1.2.840.10008.1.a")
    assert _straight(bad_class) == "raised" and decode_common(bad_class) is None
    blank_instance = encode_message(store).replace(b"1.2.3.4", b"  \0\0   ")
    assert _straight(blank_instance) is None
    blank_class = encode_message(CEchoRQ(message_id=1)).replace(b"1.2.840.10008.1.1\0",
                                                                b" " * 17 + b"\0")
    assert _check_request(blank_class) is None and decode_common(blank_class) is None


# -- MessageAssembler.feed vs PDV by PDV -----------------------------------------------------


def _pdv(cid: int, command: bool, last: bool, data: bytes) -> PresentationDataValue:
    return PresentationDataValue(context_id=cid, is_command=command, is_last=last, data=data)


@st.composite
def _pdvs(draw: st.DrawFn) -> PresentationDataValue:
    kind = draw(st.sampled_from(["command", "command", "data", "data", "junk"]))
    cid = draw(st.sampled_from([1, 1, 1, 3]))
    last = draw(st.booleans()) if kind != "command" else draw(st.sampled_from([True, True, False]))
    if kind == "command":
        msg = draw(st.one_of(MESSAGE_STRATEGIES[CEchoRQ], MESSAGE_STRATEGIES[CStoreRQ],
                             messages()))
        data = encode_message(msg)
        if not last:
            data = data[: draw(st.integers(0, len(data)))]
        return _pdv(cid, True, last, data)
    if kind == "data":
        return _pdv(cid, False, last, draw(st.binary(max_size=8)))
    return _pdv(cid, draw(st.booleans()), last, draw(st.binary(max_size=40)))


def _events(events: list[Any]) -> list[Any]:
    out = []
    for e in events:
        if isinstance(e, CommandReceived):
            out.append(("command", e.context_id, type(e.message), repr(e.message)))
        else:
            assert isinstance(e, DatasetFragment)
            out.append(("data", e.context_id, bytes(e.data), e.is_last, type(e.data)))
    return out


def _state(a: MessageAssembler) -> tuple[Any, ...]:
    return (a.idle, a.expecting_dataset, a._command_context, a._dataset_context,
            bytes(a._command))


def _step(assembler: MessageAssembler, pdus: PDataTF, by_pdv: bool) -> Any:
    try:
        if by_pdv:
            events = [e for e in (assembler.feed_pdv(p) for p in pdus.pdvs) if e is not None]
        else:
            events = assembler.feed(pdus)
    except DimseError as exc:
        return ("refused", str(exc))
    return _events(events)


@settings(max_examples=600, deadline=None)
@given(st.lists(st.lists(_pdvs(), min_size=1, max_size=3), min_size=1, max_size=6),
       st.sampled_from([65536, 40]))
def test_feed_agrees_with_pdv_by_pdv(stream: list[list[PresentationDataValue]],
                                     limit: int) -> None:
    fast = MessageAssembler(max_command_length=limit)
    ref = MessageAssembler(max_command_length=limit)
    for pdvs in stream:
        pdata = PDataTF(pdvs=tuple(pdvs))
        got, want = _step(fast, pdata, False), _step(ref, pdata, True)
        assert got == want
        assert _state(fast) == _state(ref)
        if isinstance(got, tuple):
            break  # after a refusal the stream is unusable


def test_feed_of_one_pdv_commands_and_fragments() -> None:
    echo = encode_message(CEchoRQ(message_id=5))
    a = MessageAssembler()
    (event,) = a.feed(PDataTF(pdvs=(_pdv(3, True, True, echo),)))
    assert type(event) is CommandReceived and event.context_id == 3
    assert event.message == CEchoRQ(message_id=5) and a.idle
    store = encode_message(CStoreRQ(message_id=6, affected_sop_class_uid=UID,
                                    affected_sop_instance_uid="1.2.3"))
    (event,) = a.feed(PDataTF(pdvs=(_pdv(1, True, True, bytearray(store)),)))
    assert a.expecting_dataset and not a.idle
    (frag,) = a.feed(PDataTF(pdvs=(_pdv(1, False, True, b"\x01\x02"),)))
    assert type(frag) is DatasetFragment and bytes(frag.data) == b"\x01\x02" and frag.is_last
    assert a.idle
    small = MessageAssembler(max_command_length=len(echo) - 1)
    try:
        small.feed(PDataTF(pdvs=(_pdv(1, True, True, echo),)))
    except DimseError as exc:
        assert "longer than our limit" in str(exc)
    else:  # pragma: no cover - the assertion is the point
        raise AssertionError("an over-long command was accepted")
    view_h = memoryview(struct.pack(f"<{len(echo) // 2}H", *struct.unpack(
        f"<{len(echo) // 2}H", echo))).cast("B").cast("H")
    (event,) = MessageAssembler().feed(PDataTF(pdvs=(_pdv(1, True, True, view_h),)))  # type: ignore[arg-type]
    assert event.message == CEchoRQ(message_id=5)


def _store_with_instance(raw: bytes) -> bytes:
    base = encode_message(CStoreRQ(message_id=1, affected_sop_class_uid=UID,
                                   affected_sop_instance_uid="1.2"))
    head = base[: -len(b"1.2\0") - 8]
    body = head[12:] + struct.pack("<HHL", 0, 0x1000, len(raw)) + raw
    return struct.pack("<HHLL", 0, 0, 4, len(body)) + body


@pytest.mark.parametrize(("raw", "accepted"), [
    (b"1.2", True), (b"1.2\0", True), (b" 1.2 ", True), (b" 1.20", True), (b"1.2.", False),
    (b".1.2", False), (b"1..2", False), (b"1.a2", False), (b"..", False), (b"  ", False),
    (b"01.2", True), (b"9" * 64, True), (b"9" * 65 + b"\0", False), (b"1/2.", False),
    (b"1.2\0\0\0\0", True), (b"\0\0", False), (b"1.2 ", True), (b"1\\.2", False),
])
def test_instance_uid_checks_as_the_general_decoder(raw: bytes, accepted: bool) -> None:
    data = _store_with_instance(raw)
    fast = _check_request(data)
    assert (fast is not None and fast != "raised") is accepted


@st.composite
def _well_formed(draw: st.DrawFn) -> list[list[PresentationDataValue]]:
    """Whole messages (a command, then its data-set fragments on the same context), the
    PDVs grouped into P-DATA-TFs of one to three, sometimes one PDV moved off its context."""
    pdvs: list[PresentationDataValue] = []
    for _ in range(draw(st.integers(1, 4))):
        cid = draw(st.sampled_from([1, 3]))
        msg = draw(st.one_of(MESSAGE_STRATEGIES[CEchoRQ], MESSAGE_STRATEGIES[CStoreRQ]))
        pdvs.append(_pdv(cid, True, True, encode_message(msg)))
        if msg.has_dataset:
            n = draw(st.integers(1, 3))
            pdvs += [_pdv(cid, False, i == n - 1, draw(st.binary(max_size=6))) for i in range(n)]
    if draw(st.booleans()):
        i = draw(st.integers(0, len(pdvs) - 1))
        p = pdvs[i]
        pdvs[i] = _pdv(p.context_id ^ 2, p.is_command, p.is_last, bytes(p.data))
    groups: list[list[PresentationDataValue]] = []
    while pdvs:
        take = draw(st.sampled_from([1, 1, 1, 2, 3]))
        groups.append(pdvs[:take])
        pdvs = pdvs[take:]
    return groups


@settings(max_examples=400, deadline=None)
@given(_well_formed())
def test_feed_agrees_with_pdv_by_pdv_on_whole_messages(
    stream: list[list[PresentationDataValue]],
) -> None:
    fast, ref = MessageAssembler(), MessageAssembler()
    for pdvs in stream:
        pdata = PDataTF(pdvs=tuple(pdvs))
        got, want = _step(fast, pdata, False), _step(ref, pdata, True)
        assert got == want
        assert _state(fast) == _state(ref)
        if isinstance(got, tuple):
            break
