"""UpperLayer: two state machines wired in memory; the clock is injected, nothing sleeps."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.fsm import State
from aiodicom.core.items import PresentationContextAC, PresentationContextRQ, PresentationResult
from aiodicom.core.pdu import (
    PDU,
    AAbort,
    AAssociateAC,
    AAssociateRJ,
    AAssociateRQ,
    AReleaseRP,
    AReleaseRQ,
    PDataTF,
    PresentationDataValue,
    decode_pdu,
    encode_pdu,
)
from aiodicom.core.primitives import (
    AbortIndication,
    AssociateAccepted,
    AssociateIndication,
    AssociateRejected,
    ConnectionClosed,
    DataIndication,
    Primitive,
    ReleaseConfirmed,
    ReleaseIndication,
)
from aiodicom.core.upper_layer import UpperLayer
from aiodicom.core.user_items import UserInformation
from aiodicom.errors import AbortReason, InvalidPDU, LocalProtocolError, RemoteProtocolError

VERIFICATION, IMPLICIT = "1.2.840.10008.1.1", "1.2.840.10008.1.2"
UI = UserInformation(maximum_length=16384, implementation_class_uid="1.2.826.0.1.3680043.9.1")
RQ = AAssociateRQ(
    called_ae_title="STORE-SCP",
    calling_ae_title="STORE-SCU",
    presentation_contexts=(
        PresentationContextRQ(
            context_id=1, abstract_syntax=VERIFICATION, transfer_syntaxes=(IMPLICIT,)
        ),
    ),
    user_information=UI,
)
AC = AAssociateAC(
    called_ae_title="STORE-SCP",
    calling_ae_title="STORE-SCU",
    presentation_contexts=(
        PresentationContextAC(
            context_id=1, result=PresentationResult.ACCEPTANCE, transfer_syntax=IMPLICIT
        ),
    ),
    user_information=UI,
)
RJ = AAssociateRJ(result=1, source=1, reason=7)


def pdata(payload: bytes, *, command: bool = True) -> PDataTF:
    pdv = PresentationDataValue(context_id=1, is_command=command, is_last=True, data=payload)
    return PDataTF(pdvs=(pdv,))


def events(ul: UpperLayer) -> list[Primitive]:
    out = []
    while (event := ul.next_event()) is not None:
        out.append(event)
    return out


def sent(ul: UpperLayer) -> bytes:
    return b"".join(bytes(b) for b in ul.data_to_send())


def sent_pdus(ul: UpperLayer) -> list[PDU]:
    data, pdus, pos = sent(ul), [], 0
    while pos < len(data):
        length = int.from_bytes(data[pos + 2 : pos + 6], "big")
        pdus.append(decode_pdu(data[pos], memoryview(data)[pos + 6 : pos + 6 + length]))
        pos += 6 + length
    return pdus


def deliver(src: UpperLayer, dst: UpperLayer, now: float = 0.0) -> list[Primitive]:
    dst.receive_data(sent(src), now)
    return events(dst)


def associated(now: float = 0.0) -> tuple[UpperLayer, UpperLayer]:
    """A requestor and an acceptor in Sta6, all queues drained."""
    scu, scp = UpperLayer(requestor=True), UpperLayer(requestor=False)
    scu.request_association(RQ)
    scp.connection_made(now)
    scu.connection_made(now)
    assert deliver(scu, scp, now) == [AssociateIndication(request=RQ)]
    scp.accept(AC)
    assert deliver(scp, scu, now) == [AssociateAccepted(response=AC)]
    assert scu.state is State.STA6 and scp.state is State.STA6
    return scu, scp


def test_full_conversation_associate_data_both_ways_release() -> None:
    scu, scp = UpperLayer(requestor=True), UpperLayer(requestor=False)
    scu.request_association(RQ)
    assert scu.state is State.STA4 and scu.data_to_send() == []
    scp.connection_made(10.0)
    assert scp.state is State.STA2 and scp.get_timer() == 40.0
    scu.connection_made(10.0)
    assert scu.state is State.STA5 and scu.get_timer() is None
    assert deliver(scu, scp, 11.0) == [AssociateIndication(request=RQ)]
    assert scp.state is State.STA3 and scp.get_timer() is None
    scp.accept(AC)
    assert deliver(scp, scu) == [AssociateAccepted(response=AC)]

    scu.send_pdata(pdata(b"echo-rq"))
    assert deliver(scu, scp) == [DataIndication(pdata=pdata(b"echo-rq"))]
    header, body = b"\x04\x00\x00\x00\x00\x0d\x00\x00\x00\x09\x01\x03", memoryview(b"rsp-cmd")
    scp.send_data([header[:6], header[6:], body])
    out = scp.data_to_send()
    assert out[2] is body  # queued as given: no copy, no re-encoding
    scu.receive_data(b"".join(bytes(b) for b in out), 12.0)
    assert events(scu) == [DataIndication(pdata=pdata(b"rsp-cmd"))]

    scu.release_request()
    assert scu.state is State.STA7
    assert deliver(scu, scp) == [ReleaseIndication()]
    assert scp.state is State.STA8
    scp.send_pdata(pdata(b"late", command=False))  # AR-7, then AR-6 on the other side
    assert deliver(scp, scu) == [DataIndication(pdata=pdata(b"late", command=False))]
    assert scu.state is State.STA7
    scp.release_response(20.0)
    assert scp.state is State.STA13 and scp.get_timer() == 50.0
    assert deliver(scp, scu) == [ReleaseConfirmed(), ConnectionClosed()]
    assert scu.state is State.STA1 and scu.close_requested
    assert not scp.close_requested
    scp.connection_lost(21.0)  # AR-5
    assert events(scp) == [ConnectionClosed()]
    assert scp.state is State.STA1 and scp.get_timer() is None
    scu.connection_lost(21.0)  # after our own close: harmless
    assert events(scu) == [] and scu.state is State.STA1


def test_reject() -> None:
    scu, scp = UpperLayer(requestor=True), UpperLayer(requestor=False)
    scu.request_association(RQ)
    scp.connection_made(0.0)
    scu.connection_made(0.0)
    deliver(scu, scp)
    scp.reject(RJ, 5.0)
    assert scp.state is State.STA13 and scp.get_timer() == 35.0
    assert deliver(scp, scu) == [AssociateRejected(response=RJ), ConnectionClosed()]
    assert scu.state is State.STA1 and scu.close_requested
    scp.connection_lost(6.0)
    assert events(scp) == [ConnectionClosed()] and scp.state is State.STA1


def test_pdus_after_the_end_in_the_same_chunk_are_dropped() -> None:
    scu = _in(State.STA5)
    scu.receive_data(encode_pdu(RJ) + encode_pdu(pdata(b"x")) + b"\x09" * 20, 1.0)
    assert events(scu) == [AssociateRejected(response=RJ), ConnectionClosed()]
    assert scu.data_to_send() == [] and scu.state is State.STA1


def test_provider_rejects_unsupported_protocol_version() -> None:
    """AE-6 'otherwise': RJ (permanent, ACSE provider, protocol version) and ARTIM."""
    scp = UpperLayer(requestor=False)
    scp.connection_made(0.0)
    bad = AAssociateRQ(
        called_ae_title="A",
        calling_ae_title="B",
        presentation_contexts=RQ.presentation_contexts,
        user_information=UI,
        protocol_version=2,
    )
    scp.receive_data(encode_pdu(bad), 1.0)
    assert events(scp) == []
    assert sent_pdus(scp) == [AAssociateRJ(result=1, source=2, reason=2)]
    assert scp.state is State.STA13 and scp.get_timer() == 31.0


@pytest.mark.parametrize("who", ["requestor", "acceptor"])
def test_abort_in_sta6(who: str) -> None:
    scu, scp = associated()
    me, peer = (scu, scp) if who == "requestor" else (scp, scu)
    me.abort(3.0)
    assert me.state is State.STA13 and me.get_timer() == 33.0 and events(me) == []
    got = deliver(me, peer)
    assert got == [AbortIndication(source=0, reason=0, error=None, local=False), ConnectionClosed()]
    assert peer.state is State.STA1 and peer.close_requested
    me.connection_lost(4.0)
    assert events(me) == [ConnectionClosed()] and me.state is State.STA1


def test_acceptor_aborts_before_answering() -> None:
    scu, scp = UpperLayer(requestor=True), UpperLayer(requestor=False)
    scu.request_association(RQ)
    scp.connection_made(0.0)
    scu.connection_made(0.0)
    deliver(scu, scp)
    scp.abort(1.0)
    assert deliver(scp, scu)[0] == AbortIndication(source=0, reason=0, error=None, local=False)


def test_abort_while_connecting_just_closes() -> None:
    scu = UpperLayer(requestor=True)
    scu.request_association(RQ)
    scu.abort(0.0)  # AA-2
    assert scu.state is State.STA1 and scu.close_requested
    assert scu.data_to_send() == [] and events(scu) == [ConnectionClosed()]


@pytest.mark.parametrize("state", [State.STA4, State.STA6])
def test_transport_lost_is_a_provider_abort(state: State) -> None:
    if state is State.STA4:
        ul = UpperLayer(requestor=True)
        ul.request_association(RQ)
    else:
        ul, _ = associated()
    ul.connection_lost(1.0)  # AA-4
    assert events(ul) == [
        AbortIndication(source=2, reason=0, error=None, local=True),
        ConnectionClosed(),
    ]
    assert ul.state is State.STA1


@pytest.mark.parametrize("first", ["requestor", "acceptor"])
def test_release_collision(first: str) -> None:
    scu, scp = associated()
    scu.release_request()
    scp.release_request()
    rq_from_scu, rq_from_scp = sent(scu), sent(scp)
    order = [(scp, rq_from_scu), (scu, rq_from_scp)]
    for ul, data in order if first == "requestor" else order[::-1]:
        ul.receive_data(data, 1.0)
    assert events(scu) == [ReleaseIndication(collision=True)] and scu.state is State.STA9
    assert events(scp) == [ReleaseIndication(collision=True)] and scp.state is State.STA10
    with pytest.raises(LocalProtocolError):  # the acceptor answers after its confirmation
        scp.release_response(1.0)
    assert scp.state is State.STA10 and scp.data_to_send() == []
    scu.release_response(2.0)  # AR-9
    assert scu.state is State.STA11 and scu.get_timer() is None
    assert deliver(scu, scp) == [ReleaseConfirmed()]  # AR-10
    assert scp.state is State.STA12
    scp.release_response(3.0)  # AR-4
    assert scp.state is State.STA13 and scp.get_timer() == 33.0
    assert deliver(scp, scu) == [ReleaseConfirmed(), ConnectionClosed()]  # AR-3
    assert scu.state is State.STA1 and scu.close_requested
    scp.connection_lost(4.0)
    assert events(scp) == [ConnectionClosed()]


def test_artim_expires_in_sta2_when_no_rq_arrives() -> None:
    scp = UpperLayer(requestor=False, artim_timeout=5.0)
    scp.connection_made(100.0)
    assert scp.get_timer() == 105.0
    scp.handle_timer(104.999)
    assert scp.state is State.STA2 and events(scp) == []
    scp.handle_timer(105.0)  # Evt18 -> AA-2
    assert scp.state is State.STA1 and scp.close_requested and scp.get_timer() is None
    assert events(scp) == [ConnectionClosed()] and scp.data_to_send() == []


def test_artim_expires_in_sta13_when_peer_never_closes() -> None:
    scu, scp = associated()
    scu.abort(7.0)
    sent(scu)
    assert scu.get_timer() == 37.0
    scu.handle_timer(36.0)
    assert scu.state is State.STA13
    scu.handle_timer(37.5)
    assert scu.state is State.STA1 and scu.close_requested and scu.get_timer() is None
    assert events(scu) == [ConnectionClosed()]
    scu.receive_data(encode_pdu(AReleaseRQ()), 38.0)  # late bytes are dropped
    scu.connection_lost(39.0)
    assert events(scu) == [] and scu.data_to_send() == []
    scu.handle_timer(1e9)
    assert scu.state is State.STA1


def _in(state: State) -> UpperLayer:
    """An UpperLayer brought to ``state`` through its public API, queues drained."""
    if state is State.STA2:
        ul = UpperLayer(requestor=False)
        ul.connection_made(0.0)
        return ul
    if state is State.STA3:
        ul = UpperLayer(requestor=False)
        ul.connection_made(0.0)
        ul.receive_data(encode_pdu(RQ), 0.0)
    elif state is State.STA5:
        ul = UpperLayer(requestor=True)
        ul.request_association(RQ)
        ul.connection_made(0.0)
    else:
        scu, scp = associated()
        ul = scu
        if state is State.STA7:
            ul.release_request()
        elif state is State.STA8:
            ul.receive_data(encode_pdu(AReleaseRQ()), 0.0)
        elif state is State.STA13:
            ul.abort(0.0)
    ul.data_to_send()
    events(ul)
    assert ul.state is state
    return ul


UNEXPECTED = [
    (State.STA2, pdata(b"x")),
    (State.STA2, AReleaseRQ()),
    (State.STA3, pdata(b"x")),
    (State.STA3, RQ),
    (State.STA5, RQ),
    (State.STA5, AReleaseRP()),
    (State.STA6, RQ),
    (State.STA6, AC),
    (State.STA6, RJ),
    (State.STA6, AReleaseRP()),
    (State.STA7, AC),
    (State.STA8, pdata(b"x")),
]


@pytest.mark.parametrize(("state", "pdu"), UNEXPECTED, ids=lambda v: str(v)[:20])
def test_unexpected_pdu_is_answered_with_a_provider_abort(state: State, pdu: PDU) -> None:
    ul = _in(state)
    ul.receive_data(encode_pdu(pdu), 50.0)
    assert sent_pdus(ul) == [AAbort(source=2, reason=AbortReason.UNEXPECTED_PDU)]
    (ind,) = events(ul)
    assert isinstance(ind, AbortIndication) and ind.local
    assert (ind.source, ind.reason) == (2, AbortReason.UNEXPECTED_PDU)
    assert type(ind.error) is RemoteProtocolError and "unexpected" in str(ind.error)
    assert ul.state is State.STA13 and ul.get_timer() == 80.0 and not ul.close_requested


def test_sta13_ignores_pdus_but_answers_rq_with_abort() -> None:
    ul = _in(State.STA13)
    deadline = ul.get_timer()
    for pdu in (pdata(b"x"), AC, RJ, AReleaseRQ(), AReleaseRP()):  # AA-6
        ul.receive_data(encode_pdu(pdu), 1.0)
    assert ul.data_to_send() == [] and events(ul) == []
    ul.receive_data(encode_pdu(RQ), 2.0)  # AA-7
    assert sent_pdus(ul) == [AAbort(source=2, reason=AbortReason.UNEXPECTED_PDU)]
    ul.receive_data(b"\x09\x00\x00\x00\x00\x00", 3.0)  # Evt19 -> AA-7
    assert sent_pdus(ul) == [AAbort(source=2, reason=AbortReason.UNRECOGNIZED_PDU)]
    assert events(ul) == [] and ul.state is State.STA13 and ul.get_timer() == deadline
    ul.receive_data(encode_pdu(AAbort(source=0)), 4.0)  # AA-2
    assert ul.state is State.STA1 and ul.close_requested and events(ul) == [ConnectionClosed()]


def test_abort_received_in_sta2_closes_without_indication() -> None:
    ul = _in(State.STA2)
    ul.receive_data(encode_pdu(AAbort(source=0)), 1.0)
    assert events(ul) == [ConnectionClosed()] and ul.close_requested


MALFORMED = [
    b"\x07\x00\x00\x00\x00\x02\x00\x00",  # A-ABORT of length 2
    b"\x04\x00\x00\x00\x00\x05\x00\x00\x00\x01\x01",  # PDV item length 1
    b"\x09\x00\x00\x00\x00\x04\x00\x00\x00\x00",  # unknown PDU type
]


@pytest.mark.parametrize("data", MALFORMED, ids=["abort-len", "pdv-len", "type-9"])
@pytest.mark.parametrize("state", [State.STA2, State.STA6])
def test_malformed_pdu_aborts_with_the_decoders_reason(state: State, data: bytes) -> None:
    with pytest.raises(InvalidPDU) as info:
        decode_pdu(data[0], memoryview(data)[6:])
    reason = info.value.reason
    ul = _in(state)
    ul.receive_data(data, 1.0)
    assert sent_pdus(ul) == [AAbort(source=2, reason=reason)]
    (ind,) = events(ul)
    assert isinstance(ind, AbortIndication) and isinstance(ind.error, InvalidPDU)
    assert ind.reason == reason and ind.local and ul.state is State.STA13


def test_huge_length_aborts_and_allocates_nothing() -> None:
    ul = _in(State.STA6)
    tracemalloc.start()
    try:
        ul.receive_data(b"\x04\x00\xff\xff\xff\xff" + b"\x00" * 100, 1.0)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 256 * 1024
    assert sent_pdus(ul) == [AAbort(source=2, reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)]
    (ind,) = events(ul)
    assert isinstance(ind, AbortIndication) and isinstance(ind.error, InvalidPDU)
    assert ul.state is State.STA13
    # The stream cannot be framed any more: everything after is dropped unread.
    ul.receive_data(encode_pdu(RQ) + b"\x09" * 50, 2.0)
    assert len(ul.get_buffer()) <= 4096
    ul.buffer_updated(10, 2.0)
    assert ul.data_to_send() == [] and events(ul) == []
    ul.connection_lost(3.0)
    assert events(ul) == [ConnectionClosed()]


def test_max_pdu_length_is_ours_to_choose() -> None:
    ul = UpperLayer(requestor=False, max_pdu_length=100)
    ul.connection_made(0.0)
    ul.receive_data(encode_pdu(RQ), 1.0)  # 166-byte body
    assert sent_pdus(ul) == [AAbort(source=2, reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)]


# -- chunk invariance ------------------------------------------------------------------------

BIG = bytes(range(256)) * 80  # larger than the staging area: goes through body storage
STREAM = b"".join(
    encode_pdu(p)
    for p in (AC, pdata(b"cmd"), pdata(BIG, command=False), pdata(b"x" * 4090), AReleaseRQ())
)
BAD_STREAM = STREAM[: -10] + b"\x04\x00\xff\xff\xff\xff" + encode_pdu(pdata(b"after"))


def _normal(event: Primitive) -> object:
    if isinstance(event, AbortIndication):  # exceptions compare by identity
        return (event.source, event.reason, event.local, type(event.error), str(event.error))
    return event


def _run(stream: bytes, feed: Callable[[UpperLayer, bytes], None]) -> tuple[list[object], bytes]:
    ul = UpperLayer(requestor=True, staging_size=512)
    ul.request_association(RQ)
    ul.connection_made(0.0)
    ul.data_to_send()
    feed(ul, stream)
    return [_normal(e) for e in events(ul)], sent(ul)


def _by_buffer(ul: UpperLayer, data: bytes, sizes: list[int]) -> None:
    pos, k = 0, 0
    while pos < len(data):
        view = ul.get_buffer(-1)
        n = min(len(view), len(data) - pos, sizes[k % len(sizes)] if sizes else len(data))
        view[:n] = data[pos : pos + n]
        ul.buffer_updated(n, 0.0)
        pos, k = pos + n, k + 1


@pytest.mark.parametrize("stream", [STREAM, BAD_STREAM], ids=["good", "bad"])
def test_whole_and_byte_by_byte_give_the_same_events(stream: bytes) -> None:
    whole = _run(stream, lambda ul, d: ul.receive_data(d, 0.0))
    per_byte = _run(
        stream, lambda ul, d: [ul.receive_data(d[i : i + 1], 0.0) for i in range(len(d))]
    )
    buffered = _run(stream, lambda ul, d: _by_buffer(ul, d, []))
    assert whole == per_byte == buffered
    kinds = [type(e).__name__ for e in whole[0]]
    if stream is STREAM:
        assert kinds == ["AssociateAccepted"] + ["DataIndication"] * 3 + ["ReleaseIndication"]
        assert whole[1] == b""
    else:
        assert kinds[-1] == "tuple" and whole[1][:1] == b"\x07"


@settings(max_examples=40, deadline=None)
@given(
    stream=st.sampled_from([STREAM, BAD_STREAM]),
    cuts=st.lists(st.integers(0, len(BAD_STREAM)), max_size=12),
    sizes=st.lists(st.integers(1, 700), min_size=1, max_size=6),
)
def test_random_splits_give_the_same_events(
    stream: bytes, cuts: list[int], sizes: list[int]
) -> None:
    bounds = [0, *sorted(c for c in cuts if c <= len(stream)), len(stream)]

    def split(ul: UpperLayer, data: bytes) -> None:
        for a, b in zip(bounds, bounds[1:], strict=False):
            ul.receive_data(data[a:b], 0.0)

    whole = _run(stream, lambda ul, d: ul.receive_data(d, 0.0))
    assert _run(stream, split) == whole
    assert _run(stream, lambda ul, d: _by_buffer(ul, d, sizes)) == whole


# -- local requests invalid in the current state -----------------------------------------------

INVALID: list[tuple[State | None, bool, Callable[[UpperLayer], object]]] = [
    (None, False, lambda ul: ul.accept(AC)),
    (None, False, lambda ul: ul.request_association(RQ)),  # the acceptor never requests
    (None, True, lambda ul: ul.connection_made(0.0)),  # requestor: request first
    (None, False, lambda ul: ul.receive_data(b"\x05", 0.0)),  # no connection yet
    (None, False, lambda ul: ul.get_buffer()),
    (State.STA2, False, lambda ul: ul.abort(0.0)),
    (State.STA2, False, lambda ul: ul.send_pdata(pdata(b"x"))),
    (State.STA3, False, lambda ul: ul.release_request()),
    (State.STA5, True, lambda ul: ul.send_data([b"\x04"])),
    (State.STA5, True, lambda ul: ul.request_association(RQ)),
    (State.STA6, True, lambda ul: ul.release_response(0.0)),
    (State.STA6, True, lambda ul: ul.reject(RJ, 0.0)),
    (State.STA6, True, lambda ul: ul.accept(AC)),
    (State.STA7, True, lambda ul: ul.send_data([b"\x04"])),
    (State.STA7, True, lambda ul: ul.release_request()),
    (State.STA8, True, lambda ul: ul.release_request()),
    (State.STA13, True, lambda ul: ul.abort(0.0)),
    (State.STA13, True, lambda ul: ul.send_pdata(pdata(b"x"))),
]


@pytest.mark.parametrize(("state", "requestor", "call"), INVALID)
def test_invalid_local_request_raises_and_changes_nothing(
    state: State | None, requestor: bool, call: Callable[[UpperLayer], object]
) -> None:
    ul = UpperLayer(requestor=requestor) if state is None else _in(state)
    before = (ul.state, ul.get_timer(), ul.close_requested)
    with pytest.raises(LocalProtocolError):
        call(ul)
    assert (ul.state, ul.get_timer(), ul.close_requested) == before
    assert ul.data_to_send() == [] and events(ul) == []


def test_a_finished_upper_layer_refuses_everything() -> None:
    ul = _in(State.STA2)
    ul.handle_timer(1e6)
    events(ul)
    for call in (
        lambda: ul.connection_made(0.0),
        lambda: ul.release_request(),
        lambda: ul.abort(0.0),
        lambda: ul.send_data([b""]),
    ):
        with pytest.raises(LocalProtocolError, match="finished"):
            call()
    assert ul.state is State.STA1 and events(ul) == []
