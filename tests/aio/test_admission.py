"""Admission in one step and one order: limits -> binding -> authorize -> identity ->
negotiation; the first refusal is the answer and later steps never run."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from aiodicom.aio.admission import Admission
from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.tls import PeerIdentity
from aiodicom.aio.user_identity import IdentityVerdict
from aiodicom.core.negotiation import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
    build_request,
    reject_local_limit_exceeded,
)
from aiodicom.core.pdu import AAssociateAC, AAssociateRJ, AAssociateRQ
from aiodicom.core.user_items import UserIdentityRQ, UserIdentityType
from aiodicom.errors import ConfigurationError

POLICY = AcceptorPolicy(abstract_syntaxes={VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)})


def _rq(calling: str = "CT01", identity: UserIdentityRQ | None = None) -> AAssociateRQ:
    return build_request(called_ae="AIODICOM", calling_ae=calling,
                         contexts=[(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])],
                         max_pdu_length=16384, user_identity=identity)


def _info(ae_titles: tuple[str, ...] | None = None) -> AssociationInfo:
    identity = None
    if ae_titles is not None:
        identity = PeerIdentity(subject="CN=x", common_name="x", organization="Org",
                                groups=(), ae_titles=ae_titles, fingerprint_sha256="00",
                                serial=1, not_after=datetime(2030, 1, 1, tzinfo=UTC))
    return AssociationInfo(id=1, calling_ae_title="CT01", called_ae_title="AIODICOM",
                           peer_address=("127.0.0.1", 1), identity=identity)


def _password(user: bytes) -> UserIdentityRQ:
    return UserIdentityRQ(identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
                          positive_response_requested=True, primary_field=user,
                          secondary_field=b"pw")


class _Calls:
    def __init__(self) -> None:
        self.seen: list[str] = []

    async def authorize(self, info: AssociationInfo, rq: AAssociateRQ) -> AAssociateRJ | None:
        self.seen.append("authorize")
        return None

    async def verify(self, info: AssociationInfo, rq: UserIdentityRQ) -> IdentityVerdict:
        self.seen.append("verify")
        return IdentityVerdict(accepted=rq.primary_field == b"alice", user="alice")


def test_limit_refusal_comes_first_and_nothing_else_runs() -> None:
    calls = _Calls()
    admission = Admission(policy=POLICY, authorize=calls.authorize,
                          verify_identity=calls.verify)
    limit = reject_local_limit_exceeded()
    decision = asyncio.run(admission.decide(_info(), _rq(identity=_password(b"alice")), limit))
    assert decision.answer is limit and calls.seen == []


def test_binding_refusal_comes_before_the_policy_hook() -> None:
    calls = _Calls()
    admission = Admission(policy=POLICY, authorize=calls.authorize)
    decision = asyncio.run(admission.decide(_info(("OTHER",)), _rq("CT01"), None))
    assert isinstance(decision.answer, AAssociateRJ)
    assert (decision.answer.source, decision.answer.reason) == (1, 3)  # calling AE
    assert calls.seen == []


def test_user_identity_is_checked_after_the_policy_and_names_the_user() -> None:
    calls = _Calls()
    admission = Admission(policy=POLICY, authorize=calls.authorize,
                          verify_identity=calls.verify)
    ok = asyncio.run(admission.decide(_info(("CT01",)), _rq(identity=_password(b"alice")), None))
    assert isinstance(ok.answer, AAssociateAC) and ok.user == "alice"
    assert calls.seen == ["authorize", "verify"]
    bad = asyncio.run(admission.decide(_info(), _rq(identity=_password(b"mallory")), None))
    assert isinstance(bad.answer, AAssociateRJ) and bad.user is None


def test_decide_now_only_when_nothing_needs_awaiting() -> None:
    calls = _Calls()
    plain = Admission(policy=POLICY)
    assert not plain.needs_await(_rq())
    assert isinstance(plain.decide_now(_info(), _rq(), None).answer, AAssociateAC)
    assert Admission(policy=POLICY, authorize=calls.authorize).needs_await(_rq())
    verifying = Admission(policy=POLICY, verify_identity=calls.verify)
    assert not verifying.needs_await(_rq())  # no sub-item: nothing to verify
    assert verifying.needs_await(_rq(identity=_password(b"alice")))
    required = Admission(policy=POLICY, verify_identity=calls.verify,
                         require_user_identity=True)
    assert isinstance(required.decide_now(_info(), _rq(), None).answer, AAssociateRJ)


def test_required_user_identity_needs_a_verifier() -> None:
    with pytest.raises(ConfigurationError, match="verify_identity"):
        Admission(policy=POLICY, require_user_identity=True)


def test_admission_is_frozen() -> None:
    admission: Any = Admission(policy=POLICY)
    with pytest.raises(AttributeError):
        admission.require_ae_binding = True


def test_server_refuses_a_move_destination_it_cannot_open() -> None:
    from aiodicom.aio.client import RemoteAE
    from aiodicom.aio.server import Server

    async def main() -> None:
        with pytest.raises(ConfigurationError, match="RemoteAE"):
            Server(admission=POLICY, move_destinations={"DEST": ("127.0.0.1", 104)})  # type: ignore[dict-item]
        Server(admission=POLICY, move_destinations={"DEST": RemoteAE("127.0.0.1", 104)})

    asyncio.run(main())


def test_handlers_echo_none_means_the_default() -> None:
    from aiodicom.aio.requests import Handlers, async_echo_success

    assert Handlers(echo=None).echo is async_echo_success  # type: ignore[arg-type]
