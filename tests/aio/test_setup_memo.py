"""The acceptor's set-up memo gives what the plain path gives, byte for byte, and never
carries a per-call or per-peer verdict from one association to another.

The plain path is the one before the memo: `decode_pdu` of the RQ body,
`negotiate_as_acceptor`, the "no limit" maximum length replaced by the hard cap, then
`encode_pdu` and `conclude_as_acceptor`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiodicom.aio import _setup_memo
from aiodicom.aio.admission import Admission
from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.tls import PeerIdentity
from aiodicom.aio.user_identity import IdentityVerdict
from aiodicom.core import upper_layer
from aiodicom.core.negotiation import (
    EXPLICIT_VR_LITTLE_ENDIAN,
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
    build_request,
    conclude_as_acceptor,
    negotiate_as_acceptor,
)
from aiodicom.core.pdu import AAssociateAC, AAssociateRJ, AAssociateRQ, decode_pdu, encode_pdu
from aiodicom.core.primitives import AssociateIndication
from aiodicom.core.upper_layer import UpperLayer
from aiodicom.core.user_items import RoleSelection, UserIdentityRQ, UserIdentityType
from aiodicom.errors import RemoteProtocolError

CT = "1.2.840.10008.5.1.4.1.1.2"
MR = "1.2.840.10008.5.1.4.1.1.4"
SYNTAXES = (IMPLICIT_VR_LITTLE_ENDIAN, EXPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.4.50")
POLICIES = (
    AcceptorPolicy(ae_title="AIODICOM", abstract_syntaxes={
        VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,),
        CT: (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)}),
    AcceptorPolicy(accept_any_abstract_syntax=True, max_pdu_length=0,
                   calling_ae_titles=frozenset({"CT01", "CT02"})),
    AcceptorPolicy(abstract_syntaxes={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)},
                   max_operations_performed=4),
)


@pytest.fixture(autouse=True)
def empty_memos() -> Iterator[None]:
    upper_layer._RQ_MEMO.clear()
    _setup_memo.clear()
    yield
    upper_layer._RQ_MEMO.clear()
    _setup_memo.clear()


@st.composite
def rq_pdus(draw: st.DrawFn) -> bytes:
    """A-ASSOCIATE-RQ PDUs: well formed, then (often) mutated bytes."""
    classes = draw(st.lists(st.sampled_from([VERIFICATION_SOP_CLASS, CT, MR]), min_size=1,
                            max_size=4))
    contexts = [(c, draw(st.lists(st.sampled_from(SYNTAXES), min_size=1, max_size=3,
                                  unique=True))) for c in classes]
    roles = [RoleSelection(sop_class_uid=CT, scu_role=draw(st.booleans()),
                           scp_role=draw(st.booleans()))] if draw(st.booleans()) else []
    rq = build_request(
        called_ae=draw(st.sampled_from(["AIODICOM", "OTHER"])),
        calling_ae=draw(st.sampled_from(["CT01", "CT02", "MR09"])),
        contexts=contexts, max_pdu_length=draw(st.sampled_from([0, 16384, 1 << 20])),
        async_ops=draw(st.sampled_from([None, (1, 1), (3, 2)])), role_selections=roles)
    data = bytearray(encode_pdu(rq))
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(6, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.integers(0, 9)) == 0:
        cut = draw(st.integers(7, len(data) - 1))
        data = data[:cut]
        data[2:6] = (len(data) - 6).to_bytes(4, "big")
    return bytes(data)


def acceptor(data: bytes, policy: AcceptorPolicy, hard_max: int, *, memo: bool) -> tuple[Any, ...]:
    """What an acceptor sends for ``data`` (and concludes), by the memo or the plain path."""
    ul = UpperLayer(requestor=False)
    ul.connection_made(0.0)
    if memo:
        ul.receive_data(data, 0.0)
    else:
        with mock.patch.object(upper_layer, "decode_associate_rq_memo",
                               lambda body: decode_pdu(0x01, body)):
            ul.receive_data(data, 0.0)
    event = ul.next_event()
    if not isinstance(event, AssociateIndication):  # an A-ABORT or AE-6's A-ASSOCIATE-RJ
        return ("no indication", repr(event), b"".join(map(bytes, ul.data_to_send())))
    rq = event.request
    try:
        answer = (_setup_memo.negotiate(rq, policy) if memo
                  else negotiate_as_acceptor(rq, policy))
    except RemoteProtocolError as exc:
        return ("error", str(exc), exc.reason)
    if isinstance(answer, AAssociateRJ):
        ul.reject(answer, 0.0)
        return ("rj", b"".join(map(bytes, ul.data_to_send())))
    if memo:
        setup = _setup_memo.accepted(rq, answer, hard_max)
        ul.accept(setup.answer, setup.encoded)
        negotiated = setup.negotiated
    else:
        if answer.user_information.maximum_length == 0:
            answer = dataclasses.replace(answer, user_information=dataclasses.replace(
                answer.user_information, maximum_length=hard_max))
        ul.accept(answer)
        negotiated = conclude_as_acceptor(rq, answer)
    return ("ac", b"".join(map(bytes, ul.data_to_send())), negotiated)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=rq_pdus(), first=st.sampled_from(range(3)), second=st.sampled_from(range(3)),
       hard_max=st.sampled_from([1 << 24, 1 << 22]))
def test_memo_path_sends_what_the_plain_path_sends(data: bytes, first: int, second: int,
                                                   hard_max: int) -> None:
    policy = POLICIES[first]
    plain = acceptor(data, policy, hard_max, memo=False)
    assert acceptor(data, policy, hard_max, memo=True) == plain  # a miss
    assert acceptor(data, policy, hard_max, memo=True) == plain  # a hit (if kept)
    assert acceptor(data, policy, 1 << 20, memo=True) == acceptor(
        data, policy, 1 << 20, memo=False)  # another server's hard cap
    # a reloaded policy: a new object, equal or not, never answered from the old entry
    reloaded = dataclasses.replace(POLICIES[second])
    assert acceptor(data, reloaded, hard_max, memo=True) == acceptor(
        data, reloaded, hard_max, memo=False)


def test_a_repeated_rq_is_negotiated_once_per_policy() -> None:
    data = encode_pdu(_rq())
    calls: list[object] = []
    real = _setup_memo.negotiate_as_acceptor

    def counting(rq: AAssociateRQ, policy: AcceptorPolicy, **kw: Any) -> Any:
        calls.append(policy)
        return real(rq, policy, **kw)

    with mock.patch.object(_setup_memo, "negotiate_as_acceptor", counting):
        outs = {acceptor(data, POLICIES[0], 1 << 24, memo=True)[1] for _ in range(5)}
        assert len(calls) == 1 and len(outs) == 1
        reloaded = dataclasses.replace(POLICIES[0])
        acceptor(data, reloaded, 1 << 24, memo=True)
        assert calls == [POLICIES[0], reloaded]


def test_bounded() -> None:
    for i in range(_setup_memo.ENTRIES + 10):
        rq = _rq(f"AE{i}")
        _setup_memo.negotiate(rq, POLICIES[0])
        assert len(_setup_memo._MEMO) <= _setup_memo.ENTRIES
    assert len(_setup_memo._MEMO) == _setup_memo.ENTRIES


# -- per-call and per-peer checks still run on a hit ------------------------------------------

def _rq(calling: str = "CT01", identity: UserIdentityRQ | None = None) -> AAssociateRQ:
    rq = build_request(called_ae="AIODICOM", calling_ae=calling,
                       contexts=[(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])],
                       max_pdu_length=16384, user_identity=identity)
    if identity is not None:
        return rq
    data = encode_pdu(rq)
    out = upper_layer.decode_associate_rq_memo(data[6:])  # as the UpperLayer hands it out
    assert isinstance(out, AAssociateRQ)
    return out


def _info(ae_titles: tuple[str, ...] | None, org: str = "Org") -> AssociationInfo:
    identity = None
    if ae_titles is not None:
        identity = PeerIdentity(subject=f"CN=x,O={org}", common_name="x", organization=org,
                                groups=(), ae_titles=ae_titles, fingerprint_sha256="00",
                                serial=1, not_after=datetime(2030, 1, 1, tzinfo=UTC))
    return AssociationInfo(id=1, calling_ae_title="CT01", called_ae_title="AIODICOM",
                           peer_address=("127.0.0.1", 1), identity=identity)


def test_binding_refuses_on_a_memo_hit() -> None:
    admission = Admission(policy=POLICIES[0], require_ae_binding=True)
    rq = _rq("CT01")
    assert isinstance(admission.decide_now(_info(("CT01",)), rq, None).answer, AAssociateAC)
    assert upper_layer.decode_associate_rq_memo(encode_pdu(rq)[6:]) is rq  # the same object
    for wrong in (("CT02",), ()):
        refused = admission.decide_now(_info(wrong), rq, None).answer
        assert isinstance(refused, AAssociateRJ) and (refused.source, refused.reason) == (1, 3)
    assert isinstance(admission.decide_now(_info(("CT01",)), rq, None).answer, AAssociateAC)


def test_limits_and_the_authorizer_refuse_on_a_memo_hit() -> None:
    async def authorize(info: AssociationInfo, rq: AAssociateRQ) -> AAssociateRJ | None:
        identity = info.identity
        assert isinstance(identity, PeerIdentity)
        return None if identity.organization == "Org" else AAssociateRJ(
            result=1, source=1, reason=1)

    admission = Admission(policy=POLICIES[0], authorize=authorize)
    rq = _rq("CT01")
    ours = asyncio.run(admission.decide(_info(("CT01",)), rq, None)).answer
    assert isinstance(ours, AAssociateAC)
    theirs = asyncio.run(admission.decide(_info(("CT01",), org="Other"), rq, None)).answer
    assert isinstance(theirs, AAssociateRJ) and theirs.reason == 1
    limit = AAssociateRJ(result=2, source=3, reason=2)
    assert asyncio.run(admission.decide(_info(("CT01",)), rq, limit)).answer is limit
    assert admission.decide_now(_info(None), rq, limit).answer is limit
    again = asyncio.run(admission.decide(_info(("CT01",)), rq, None)).answer
    assert again is ours  # the memo's answer, reached only after every check passed


def test_user_identity_answers_are_per_call() -> None:
    async def verify(info: AssociationInfo, request: UserIdentityRQ) -> IdentityVerdict:
        ok = request.primary_field == b"alice"
        return IdentityVerdict(accepted=ok, user="alice" if ok else None,
                               server_response=b"token-" + request.primary_field if ok else None)

    def rq(user: bytes) -> AAssociateRQ:
        return _rq(identity=UserIdentityRQ(
            identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
            positive_response_requested=True, primary_field=user, secondary_field=b"pw"))

    admission = Admission(policy=POLICIES[0], verify_identity=verify)
    for _ in range(2):
        alice = asyncio.run(admission.decide(_info(None), rq(b"alice"), None))
        assert isinstance(alice.answer, AAssociateAC) and alice.user == "alice"
        assert alice.answer.user_information.user_identity_ac is not None
        mallory = asyncio.run(admission.decide(_info(None), rq(b"mallory"), None))
        assert isinstance(mallory.answer, AAssociateRJ) and mallory.user is None
    assert _setup_memo._MEMO == {}  # nothing of a request with a user identity is kept


def test_an_rq_the_decode_memo_does_not_hold_is_not_kept() -> None:
    # An RQ over RQ_MEMO_MAX_BODY is decoded afresh on every association, so an entry for it
    # could never hit: it would only pin the decoded RQ, its AC and negotiated terms (~4 MB
    # for 16 entries of ~120 KiB, under the default 128 KiB associate limit) and push the
    # fleet's entries out.
    big = build_request(
        called_ae="AIODICOM", calling_ae="CT01",
        contexts=[(f"1.2.3.{c}.{'9' * 50}", [f"1.2.{c}.{t}.{'8' * 50}" for t in range(14)])
                  for c in range(128)], max_pdu_length=16384)
    body = encode_pdu(big)[6:]
    assert len(body) > upper_layer.RQ_MEMO_MAX_BODY
    for _ in range(2):
        rq = upper_layer.decode_associate_rq_memo(body)
        answer = _setup_memo.negotiate(rq, POLICIES[0])
        assert isinstance(answer, AAssociateAC)
        assert _setup_memo.accepted(rq, answer, 1 << 20).answer.called_ae_title == "AIODICOM"
    assert _setup_memo._MEMO == {}
    small = upper_layer.decode_associate_rq_memo(encode_pdu(_rq())[6:])
    _setup_memo.negotiate(small, POLICIES[0])
    assert len(_setup_memo._MEMO) == 1  # one the decode memo holds is kept
