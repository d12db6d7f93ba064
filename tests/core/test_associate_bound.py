"""The pre-association PDU bound: before Sta6 a peer may not make us hold a long PDU.

An unauthenticated peer (any TCP connection on the plain port, any TLS peer before its
A-ASSOCIATE-RQ is admitted) could otherwise fill ``max_pdu_length`` bytes per connection for
the whole ARTIM timeout (issue 17, item 10).
"""

from __future__ import annotations

import pytest

from aiodicom.core.buffer import ReceiveBuffer
from aiodicom.core.fsm import State
from aiodicom.core.pdu import AAbort, AAssociateRQ, encode_pdu
from aiodicom.core.primitives import AssociateIndication
from aiodicom.core.upper_layer import UpperLayer
from aiodicom.errors import AbortReason
from tests.core.test_upper_layer import AC, RQ, events, pdata, sent, sent_pdus


def test_receive_buffer_limit_can_change_between_pdus() -> None:
    rx = ReceiveBuffer(16)
    assert rx.max_body == 16
    rx.max_body = 64
    rx.feed(b"\x04\x00" + (40).to_bytes(4, "big") + b"x" * 40)
    assert rx.next_pdu() is not None
    with pytest.raises(ValueError):
        rx.max_body = 3


def _padded_rq(length: int) -> bytes:
    """An A-ASSOCIATE-RQ whose body is `length` bytes (an unknown user sub-item pads it)."""
    body = bytearray(encode_pdu(RQ))
    pad = length - (len(body) - 6)
    assert pad >= 4
    # Append a reserved-type item to the variable items: length field patched below.
    body += b"\x99\x00" + (pad - 4).to_bytes(2, "big") + b"\x00" * (pad - 4)
    body[2:6] = (len(body) - 6).to_bytes(4, "big")
    return bytes(body)


def test_association_request_longer_than_the_bound_is_aborted() -> None:
    ul = UpperLayer(requestor=False, max_pdu_length=1 << 20, max_associate_length=4096)
    ul.connection_made(0.0)
    ul.receive_data(_padded_rq(5000)[:100], 1.0)  # the header alone is refused
    assert sent_pdus(ul) == [AAbort(source=2, reason=AbortReason.INVALID_PDU_PARAMETER_VALUE)]
    assert ul.state is State.STA13


def test_association_request_within_the_bound_then_large_pdus_once_associated() -> None:
    ul = UpperLayer(requestor=False, max_pdu_length=1 << 20, max_associate_length=4096)
    ul.connection_made(0.0)
    ul.receive_data(encode_pdu(RQ), 1.0)
    (ind,) = events(ul)
    assert isinstance(ind, AssociateIndication) and isinstance(ind.request, AAssociateRQ)
    ul.accept(AC)
    sent(ul)
    assert ul.state is State.STA6
    ul.receive_data(encode_pdu(pdata(b"y" * 100_000)), 2.0)  # 25x the association bound
    assert [type(e).__name__ for e in events(ul)] == ["DataIndication"]
    assert sent(ul) == b""
