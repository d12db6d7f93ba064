"""The A-ASSOCIATE-RQ decode memo: the same body bytes give the same RQ object; nothing
malformed, oversized or carrying a user identity is kept; the memo is bounded."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from aiodicom.core import upper_layer
from aiodicom.core.negotiation import (
    EXPLICIT_VR_BIG_ENDIAN,
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    build_request,
)
from aiodicom.core.pdu import AAssociateRQ, decode_pdu, encode_pdu
from aiodicom.core.primitives import AbortIndication, AssociateIndication
from aiodicom.core.upper_layer import (
    RQ_MEMO_ENTRIES,
    RQ_MEMO_MAX_BODY,
    UpperLayer,
    decode_associate_rq_memo,
)
from aiodicom.core.user_items import UserIdentityRQ, UserIdentityType
from aiodicom.errors import InvalidPDU

VERIFICATION = "1.2.840.10008.1.1"


@pytest.fixture(autouse=True)
def empty_memo() -> Iterator[None]:
    upper_layer._RQ_MEMO.clear()
    upper_layer._RQ_HELD.clear()
    yield
    upper_layer._RQ_MEMO.clear()
    upper_layer._RQ_HELD.clear()


def rq_bytes(calling: str = "CT01", contexts: int = 1,
             identity: UserIdentityRQ | None = None) -> bytes:
    syntaxes = [IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_BIG_ENDIAN]
    rq = build_request(called_ae="AIODICOM", calling_ae=calling,
                       contexts=[(f"{VERIFICATION}.{i}.{'1' * 40}" if i else VERIFICATION,
                                  syntaxes) for i in range(contexts)],
                       max_pdu_length=16384, user_identity=identity)
    return encode_pdu(rq)


def indication(data: bytes) -> AAssociateRQ:
    ul = UpperLayer(requestor=False)
    ul.connection_made(0.0)
    ul.receive_data(data, 0.0)
    event = ul.next_event()
    assert isinstance(event, AssociateIndication)
    return event.request


def test_same_bytes_same_object_equal_to_a_plain_decode() -> None:
    data = rq_bytes()
    first, second = indication(data), indication(data)
    assert first is second
    assert first == decode_pdu(0x01, data[6:])
    other = indication(rq_bytes("CT02"))
    assert other is not first and other.calling_ae_title == "CT02"
    assert len(upper_layer._RQ_MEMO) == 2


def test_user_identity_is_never_kept() -> None:
    secret = UserIdentityRQ(identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
                            positive_response_requested=False, primary_field=b"alice",
                            secondary_field=b"pw")
    data = rq_bytes(identity=secret)
    first, second = indication(data), indication(data)
    assert first == second and first is not second
    assert first.user_information.user_identity_rq == secret
    assert upper_layer._RQ_MEMO == {}


def test_oversized_body_is_decoded_but_not_kept() -> None:
    data = rq_bytes(contexts=128)
    assert len(data) - 6 > RQ_MEMO_MAX_BODY
    first, second = indication(data), indication(data)
    assert first == second and first is not second and len(first.presentation_contexts) == 128
    assert upper_layer._RQ_MEMO == {}


def test_malformed_body_raises_every_time_and_is_not_kept() -> None:
    body = bytearray(rq_bytes()[6:])
    body[0:2] = b"\x00\x00"  # no protocol version bit: still decodes (AE-6 answers it)
    decode_associate_rq_memo(bytes(body))
    truncated = rq_bytes()[6:-3]
    for _ in range(2):
        with pytest.raises(InvalidPDU):
            decode_associate_rq_memo(truncated)
    assert len(upper_layer._RQ_MEMO) == 1
    ul = UpperLayer(requestor=False)
    ul.connection_made(0.0)
    data = rq_bytes()
    ul.receive_data(data[:2] + (len(data) - 9).to_bytes(4, "big") + data[6:-3], 0.0)
    assert isinstance(ul.next_event(), AbortIndication)


def test_bounded_least_recently_used_goes_first() -> None:
    keep = rq_bytes("KEEP")
    kept = indication(keep)
    for i in range(RQ_MEMO_ENTRIES + 5):
        indication(rq_bytes(f"AE{i}"))
        assert indication(keep) is kept  # used again: never the oldest
        assert len(upper_layer._RQ_MEMO) <= RQ_MEMO_ENTRIES
    assert len(upper_layer._RQ_MEMO) == RQ_MEMO_ENTRIES
    assert indication(rq_bytes("AE0")) is not None  # evicted long ago: decoded again


@pytest.mark.parametrize("identity_type", [0, 6, 255])
def test_user_identity_of_an_unknown_type_is_never_kept(identity_type: int) -> None:
    # The decoder ignores a 0x58 sub-item of a type it does not know (PS3.7 D.1): the RQ
    # value carries no identity, but the body bytes (the memo's key) still hold its secret.
    known = UserIdentityRQ(identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
                           positive_response_requested=False, primary_field=b"alice",
                           secondary_field=b"s3cret")
    data = bytearray(rq_bytes(identity=known))
    at = data.index(b"\x58\x00")
    assert data[at + 4] == UserIdentityType.USERNAME_AND_PASSCODE
    data[at + 4] = identity_type
    first = indication(bytes(data))
    assert first.user_information.user_identity_rq is None
    assert upper_layer._RQ_MEMO == {}
    assert not any(b"s3cret" in key for key in upper_layer._RQ_MEMO)


def test_memo_holds_only_what_it_will_give_back() -> None:
    # The shell memoizes negotiation by the RQ's identity only when this is True.
    kept = indication(rq_bytes("HELD"))
    assert upper_layer.rq_memo_holds(kept)
    assert not upper_layer.rq_memo_holds(indication(rq_bytes(contexts=128)))  # oversized
    assert not upper_layer.rq_memo_holds(decode_pdu(0x01, rq_bytes("HELD")[6:]))  # equal, not it
    for i in range(RQ_MEMO_ENTRIES):
        indication(rq_bytes(f"AE{i}"))
    assert not upper_layer.rq_memo_holds(kept)  # evicted: the next one is a new object
    assert len(upper_layer._RQ_HELD) == RQ_MEMO_ENTRIES
