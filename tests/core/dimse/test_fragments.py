"""Fragmentation into P-DATA-TF PDUs and reassembly (PS3.8 Annex E), zero-copy."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.buffer import ReadableBuffer
from aiodicom.core.dimse import (
    UNLIMITED_FRAGMENT_LENGTH,
    CEchoRQ,
    CommandReceived,
    CStoreRQ,
    DatasetFragment,
    Message,
    MessageAssembler,
    encode_message,
    encode_message_pdus,
    fragment_command,
    fragment_dataset,
    fragment_length,
)
from aiodicom.core.pdu import PDataTF, PresentationDataValue, decode_pdu_bytes
from aiodicom.errors import DimseError
from tests.dimse_strategies import dataset_chunks, messages

MAX_PDU = st.one_of(
    st.just(0), st.integers(8, 12), st.integers(13, 300), st.integers(301, 70000)
)


def _parse(pdu: list[ReadableBuffer]) -> tuple[PresentationDataValue, list[memoryview]]:
    """Check one PDU's header against its payload; return its PDV and the payload views."""
    header, *parts = pdu
    assert isinstance(header, bytes) and len(header) == 12
    pdu_type, pdu_length, item_length, context_id, control = struct.unpack(">BxLLBB", header)
    size = sum(len(p) for p in parts)
    assert pdu_type == 0x04
    assert pdu_length == size + 6 and item_length == size + 2
    assert control & ~0x03 == 0
    views = []
    for part in parts:
        assert isinstance(part, memoryview)
        views.append(part)
    data: ReadableBuffer = views[0] if len(views) == 1 else b"".join(views)
    pdv = PresentationDataValue(
        context_id=context_id, is_command=bool(control & 1), is_last=bool(control & 2), data=data
    )
    return pdv, views


def _pdata(pdu: list[ReadableBuffer]) -> PDataTF:
    return PDataTF(pdvs=(_parse(pdu)[0],))


def test_fragment_length() -> None:
    assert fragment_length(0) == UNLIMITED_FRAGMENT_LENGTH
    assert fragment_length(8) == 2
    assert fragment_length(9) == 2
    assert fragment_length(16384) == 16378
    assert fragment_length(16385) == 16378
    assert fragment_length(1 << 40) % 2 == 0
    for bad in (1, 6, 7):
        with pytest.raises(DimseError, match="at least 8"):
            fragment_length(bad)


def test_wire_bytes_decode_with_the_pdu_codec() -> None:
    msg = CStoreRQ(message_id=3, affected_sop_class_uid="1.2.3", affected_sop_instance_uid="4.5")
    data = bytes(range(200)) * 5
    pdus = list(encode_message_pdus(7, msg, data, 128))
    decoded = [decode_pdu_bytes(b"".join(pdu)) for pdu in pdus]
    pdvs = [pdv for pdu in decoded for pdv in pdu.pdvs]  # type: ignore[union-attr]
    command = [p for p in pdvs if p.is_command]
    dataset = [p for p in pdvs if not p.is_command]
    assert [p.is_last for p in command] == [False] * (len(command) - 1) + [True]
    assert [p.is_last for p in dataset] == [False] * (len(dataset) - 1) + [True]
    assert b"".join(bytes(p.data) for p in command) == encode_message(msg)
    assert b"".join(bytes(p.data) for p in dataset) == data
    assert all(p.context_id == 7 for p in pdvs)
    assert pdvs.index(dataset[0]) == len(command)


def _check_stream(
    pdus: list[list[ReadableBuffer]],
    expected: bytes,
    max_pdu: int,
    sources: list[object],
    *,
    is_command: bool,
) -> None:
    limit = max_pdu - 6 if max_pdu else UNLIMITED_FRAGMENT_LENGTH
    joined = []
    for index, pdu in enumerate(pdus):
        pdv, views = _parse(pdu)
        size = len(pdv.data)
        assert size <= limit
        assert size % 2 == 0, "PS3.8 Annex E.1: fragments have an even length"
        assert pdv.is_command is is_command
        assert pdv.is_last is (index == len(pdus) - 1)
        assert index == len(pdus) - 1 or size == limit - limit % 2
        for view in views:
            assert any(view.obj is source for source in sources), "a fragment was copied"
        joined.append(bytes(pdv.data))
    assert b"".join(joined) == expected


@settings(max_examples=300, deadline=None)
@given(dataset_chunks(), MAX_PDU, st.booleans())
def test_dataset_fragmentation(
    chunked: tuple[bytes, list[bytes]], max_pdu: int, whole: bool
) -> None:
    data, chunks = chunked
    if whole:
        source = bytearray(data)
        pdus = list(fragment_dataset(1, source, max_pdu))
        sources: list[object] = [source]
    else:
        pdus = list(fragment_dataset(1, iter(chunks), max_pdu))
        sources = list(chunks)
    _check_stream(pdus, data, max_pdu, sources, is_command=False)


@settings(max_examples=200, deadline=None)
@given(messages(), MAX_PDU)
def test_command_fragmentation(msg: Message, max_pdu: int) -> None:
    command = encode_message(msg)
    pdus = fragment_command(5, command, max_pdu)
    _check_stream(pdus, command, max_pdu, [command], is_command=True)


def test_iterator_is_read_lazily_with_one_chunk_of_lookahead() -> None:
    pulled = []

    def chunks() -> Iterator[bytes]:
        for i in range(10):
            pulled.append(i)
            yield bytes(100)

    pdus = fragment_dataset(1, chunks(), 106)
    first = next(pdus)
    assert len(pulled) == 2  # the fragment's chunk, plus one to know it is not the last
    assert not _parse(first)[0].is_last
    rest = list(pdus)
    assert len(rest) == 9 and _parse(rest[-1])[0].is_last


def test_large_dataset_with_no_peer_limit() -> None:
    data = bytes(2 * UNLIMITED_FRAGMENT_LENGTH + 10)
    pdus = list(fragment_dataset(1, data, 0))
    assert [len(_parse(p)[0].data) for p in pdus] == [
        UNLIMITED_FRAGMENT_LENGTH,
        UNLIMITED_FRAGMENT_LENGTH,
        10,
    ]


def test_empty_dataset_is_one_empty_last_fragment() -> None:
    for dataset in (b"", iter(()), iter([b"", b""])):
        (pdu,) = list(fragment_dataset(3, dataset, 100))
        pdv, _ = _parse(pdu)
        assert pdv.is_last and not pdv.is_command and len(pdv.data) == 0


def test_odd_dataset_is_refused() -> None:
    with pytest.raises(DimseError, match="odd length"):
        fragment_dataset(1, b"abc", 100)
    pdus = fragment_dataset(1, iter([b"ab", b"cde", b"fg"]), 10)
    assert not _parse(next(pdus))[0].is_last
    with pytest.raises(DimseError, match="odd length"):
        list(pdus)


def test_encode_message_pdus_checks_has_dataset() -> None:
    with pytest.raises(DimseError, match="announces a data set"):
        encode_message_pdus(1, CStoreRQ(message_id=1, affected_sop_class_uid="1",
                                        affected_sop_instance_uid="2"), None, 0)
    with pytest.raises(DimseError, match="has_dataset=False"):
        encode_message_pdus(1, CEchoRQ(message_id=1), b"xx", 0)
    pdus = list(encode_message_pdus(1, CEchoRQ(message_id=1), None, 0))
    assert len(pdus) == 1 and _parse(pdus[0])[0].is_last


def _feed_all(assembler: MessageAssembler, pdus: Iterable[list[ReadableBuffer]]) -> list[object]:
    events: list[object] = []
    for pdu in pdus:
        events.extend(assembler.feed(_pdata(pdu)))
    return events


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(messages(), dataset_chunks(max_size=600)), min_size=1, max_size=4),
    MAX_PDU,
    st.booleans(),
    st.sampled_from([1, 3, 255]),
)
def test_reassembly_round_trip(
    items: list[tuple[Message, tuple[bytes, list[bytes]]]],
    max_pdu: int,
    whole: bool,
    context_id: int,
) -> None:
    assembler = MessageAssembler()
    for msg, (data, chunks) in items:
        dataset: bytes | Iterator[bytes] | None = None
        if msg.has_dataset:
            dataset = data if whole else iter(chunks)
        events = _feed_all(assembler, encode_message_pdus(context_id, msg, dataset, max_pdu))
        assert events[0] == CommandReceived(context_id=context_id, message=msg)
        fragments = [e for e in events[1:] if isinstance(e, DatasetFragment)]
        assert len(fragments) == len(events) - 1
        if msg.has_dataset:
            assert [e.is_last for e in fragments] == [False] * (len(fragments) - 1) + [True]
            assert b"".join(bytes(e.data) for e in fragments) == data
            assert all(e.context_id == context_id for e in fragments)
        else:
            assert fragments == []
        assert assembler.idle and not assembler.expecting_dataset


def test_dataset_fragments_are_the_received_views() -> None:
    body = bytearray(b"\x01\x02" * 50)
    view = memoryview(body)[10:30]
    assembler = MessageAssembler()
    msg = CStoreRQ(message_id=1, affected_sop_class_uid="1.2", affected_sop_instance_uid="1.3")
    _feed_all(assembler, fragment_command(1, encode_message(msg), 0))
    assert assembler.expecting_dataset and not assembler.idle
    (event,) = assembler.feed(
        PDataTF(pdvs=(PresentationDataValue(context_id=1, is_command=False, is_last=True,
                                            data=view),))
    )
    assert isinstance(event, DatasetFragment)
    assert event.data.obj is body and event.is_last
    body[10] = 0xFF
    assert event.data[0] == 0xFF  # the same memory, not a copy


def _pdv(context_id: int, *, command: bool, last: bool, data: bytes = b"") -> PDataTF:
    return PDataTF(pdvs=(PresentationDataValue(context_id=context_id, is_command=command,
                                               is_last=last, data=data),))


STORE = encode_message(
    CStoreRQ(message_id=1, affected_sop_class_uid="1.2", affected_sop_instance_uid="1.3")
)
ECHO = encode_message(CEchoRQ(message_id=2))


@pytest.mark.parametrize(
    ("steps", "match"),
    [
        ([_pdv(1, command=False, last=True, data=b"xx")], "no data set is expected"),
        ([_pdv(1, command=True, last=True, data=ECHO), _pdv(1, command=False, last=True)],
         "no data set is expected"),
        ([_pdv(1, command=True, last=True, data=STORE), _pdv(3, command=False, last=True)],
         "presentation context 3"),
        ([_pdv(1, command=True, last=True, data=STORE), _pdv(1, command=True, last=True,
                                                             data=ECHO)],
         "data set of the previous message is incomplete"),
        ([_pdv(1, command=True, last=False, data=STORE[:10]), _pdv(1, command=False, last=True)],
         "before the last command fragment"),
        ([_pdv(1, command=True, last=False, data=STORE[:10]),
          _pdv(3, command=True, last=True, data=STORE[10:])], "context 1 is incomplete"),
        ([_pdv(1, command=True, last=True, data=b"\x00" * 12)], "CommandGroupLength"),
    ],
)
def test_protocol_faults(steps: list[PDataTF], match: str) -> None:
    assembler = MessageAssembler()
    with pytest.raises(DimseError, match=match):
        for pdata in steps:
            assembler.feed(pdata)


def test_command_size_limit() -> None:
    assembler = MessageAssembler(max_command_length=100)
    assembler.feed(_pdv(1, command=True, last=False, data=bytes(60)))
    with pytest.raises(DimseError, match="limit of 100"):
        assembler.feed(_pdv(1, command=True, last=False, data=bytes(60)))


def test_several_pdvs_in_one_pdu_and_a_following_message() -> None:
    assembler = MessageAssembler()
    pdvs = [
        PresentationDataValue(context_id=1, is_command=True, is_last=False, data=STORE[:20]),
        PresentationDataValue(context_id=1, is_command=True, is_last=True, data=STORE[20:]),
        PresentationDataValue(context_id=1, is_command=False, is_last=False, data=b"ab"),
        PresentationDataValue(context_id=1, is_command=False, is_last=True, data=b"cd"),
    ]
    events = assembler.feed(PDataTF(pdvs=tuple(pdvs)))
    assert [type(e) for e in events] == [CommandReceived, DatasetFragment, DatasetFragment]
    (echo,) = assembler.feed(_pdv(3, command=True, last=True, data=ECHO))
    assert echo == CommandReceived(context_id=3, message=CEchoRQ(message_id=2))
