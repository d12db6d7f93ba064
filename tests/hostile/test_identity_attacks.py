"""Issue 17 items 7, 8, 11: attacks on user identity (PS3.7 D.3.3.7) JWTs and passcodes."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import jwt
import pytest

from aiodicom.aio import user_identity as ui
from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.client import connect
from aiodicom.aio.requests import EchoRequest
from aiodicom.aio.server import Admission, Handlers, Server
from aiodicom.aio.user_identity import JWTVerifier, PasswordVerifier, hash_passcode
from aiodicom.app.server.run import storage_acceptor_policy
from aiodicom.core.dimse import Status
from aiodicom.core.user_items import UserIdentityRQ, UserIdentityType
from aiodicom.errors import AssociationRejected, ConfigurationError
from aiodicom.settings import AssociationSettings
from tests.conftest import make_runner

SECRET = b"s" * 32
NOW = 1_800_000_000.0
INFO = AssociationInfo(id=1, calling_ae_title="CT01", called_ae_title="AIODICOM",
                       peer_address=("127.0.0.1", 1))
sync = make_runner("asyncio")


def token(**claims: Any) -> bytes:
    body = {"sub": "dr.who", "exp": NOW + 600, "aud": "aiodicom", "iss": "idp", **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, SECRET,
                      algorithm="HS256").encode()


def jwt_rq(data: bytes) -> UserIdentityRQ:
    return UserIdentityRQ(identity_type=UserIdentityType.JWT, positive_response_requested=True,
                          primary_field=data)


def verifier(**kw: Any) -> JWTVerifier:
    return JWTVerifier(SECRET, clock=lambda: NOW, **{"audience": "aiodicom", **kw})


def check(v: Any, rq: UserIdentityRQ) -> ui.IdentityVerdict:
    result: ui.IdentityVerdict = sync(v(INFO, rq))
    return result


@pytest.mark.parametrize("exp", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_jwt_exp_nan_or_infinity_is_refused(exp: float) -> None:
    """json reads NaN/Infinity; ``now > nan`` is false, so NaN used to mean "never expires"."""
    verdict = check(verifier(), jwt_rq(token(exp=exp)))
    assert not verdict.accepted and "finite" in verdict.why


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_jwt_nbf_iat_nan_refused(claim: str) -> None:
    assert not check(verifier(), jwt_rq(token(**{claim: float("nan")}))).accepted


def test_jwt_for_another_audience_or_issuer_is_refused() -> None:
    """A token the same IdP issued for another service, replayed to us, is refused."""
    v = verifier(issuer="idp")
    assert check(v, jwt_rq(token())).user == "dr.who"
    other = check(v, jwt_rq(token(aud="billing")))
    assert not other.accepted and "audience" in other.why
    assert not check(v, jwt_rq(token(aud=None))).accepted  # audience required when configured
    assert not check(v, jwt_rq(token(iss="evil-idp"))).accepted
    assert not check(v, jwt_rq(token(iss=None))).accepted
    # no audience configured: a token bound to some audience is refused (fail closed)
    assert not check(JWTVerifier(SECRET, clock=lambda: NOW), jwt_rq(token())).accepted


def test_jwt_hmac_secret_must_fit_the_hash() -> None:
    with pytest.raises(ConfigurationError, match="64 bytes"):
        JWTVerifier(b"k" * 32, ("HS512",))


MALFORMED = [b"x.y.z", b"a.b.c", b"..", b"e30..", b"\x00" * 5, b"e30.e30.e30",
             b"W3tdXQ.e30.AA", b"eyJhbGciOiJIUzI1NiJ9.WzFd.AA", b"." * 5000,
             b"eyJhbGciOiJIUzI1NiJ9." + b"W" * 4001 + b".AA", b"\xff\xfe.a.b",
             b"eyJhbGciOiJIUzI1NiIsImNyaXQiOlsiYjY0Il19.e30.AA",
             b"eyJhbGciOlsiSFMyNTYiXX0.e30.AA", b"eyJhbGciOiJIUzI1NiJ9.bnVsbA.AA"]


def test_malformed_tokens_only_raise_jwt_error() -> None:
    for data in MALFORMED:
        with pytest.raises(ui.JWTError):
            verifier().verify(data)


def test_flood_of_malformed_tokens_logs_one_line_each(
        run: Any, caplog: pytest.LogCaptureFixture) -> None:
    """Attacker: a stream of garbage tokens. Each is refused with one log line, no traceback."""
    seen: list[str | None] = []

    async def echo(request: EchoRequest) -> Status:
        seen.append(request.association.user)
        return Status.SUCCESS

    async def body() -> None:
        server = Server(settings=AssociationSettings(ae_title="AIODICOM"),
                        admission=Admission(
                            policy=storage_acceptor_policy("AIODICOM", max_pdu_length=1 << 20),
                            verify_identity=JWTVerifier(SECRET, audience="aiodicom"),
                            require_user_identity=True),
                        handlers=Handlers(echo=echo))
        _, port = await server.listen("127.0.0.1", 0)
        try:
            for data in MALFORMED:
                with pytest.raises(AssociationRejected):
                    async with connect("127.0.0.1", port, called_ae_title="AIODICOM",
                                       user_identity=jwt_rq(data)):
                        pass
            good = jwt.encode({"sub": "ok", "exp": time.time() + 60, "aud": "aiodicom"},
                              SECRET, algorithm="HS256").encode()
            async with connect("127.0.0.1", port, called_ae_title="AIODICOM",
                               user_identity=jwt_rq(good)) as assoc:
                assert await assoc.echo() == Status.SUCCESS
        finally:
            await server.close(drain_timeout=2)

    with caplog.at_level(logging.INFO):
        run(body())
    assert seen == ["ok"]
    assert not [r for r in caplog.records if r.exc_info], "a malformed token logged a traceback"
    assert "verifier failed" not in caplog.text
    refusals = [r for r in caplog.records if "JWT refused" in r.getMessage()]
    assert len(refusals) == len(MALFORMED)
    assert all("\n" not in r.getMessage() for r in refusals)


# -- passcodes -------------------------------------------------------------------------------

def _pbkdf2(passcode: str) -> str:
    return hash_passcode(passcode, method="pbkdf2_sha256")


def test_unknown_user_costs_the_same_parameters_as_a_known_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Attacker: time logins to learn which usernames exist. The unknown user's decoy hash
    has the same method and parameters as the real users' (here PBKDF2, 600,000 rounds)."""
    used: list[str] = []
    real = ui.verify_passcode

    def spy(secret: bytes, stored: str) -> bool:
        used.append(stored.rsplit("$", 2)[0])
        return real(secret, stored)

    monkeypatch.setattr(ui, "verify_passcode", spy)
    v = PasswordVerifier({"alice": _pbkdf2("a"), "bob": _pbkdf2("b")})
    rq = UserIdentityRQ(identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
                        positive_response_requested=False, primary_field=b"alice",
                        secondary_field=b"wrong")
    assert not check(v, rq).accepted
    unknown = UserIdentityRQ(identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
                             positive_response_requested=False, primary_field=b"mallory",
                             secondary_field=b"a")
    assert not check(v, unknown).accepted
    assert used == ["pbkdf2_sha256$600000", "pbkdf2_sha256$600000"]


def test_new_hashes_use_scrypt_2_17() -> None:
    method, n, r, p, _, _ = hash_passcode("x").split("$")
    assert (method, int(n), int(r), int(p)) == ("scrypt", 1 << 17, 8, 1)


@pytest.mark.parametrize("stored", [
    "scrypt$1024$8$1$c2FsdHNhbHRzYWx0$" + "A" * 43 + "=",
    "scrypt$16384$1$1$c2FsdHNhbHRzYWx0$" + "A" * 43 + "=",
    "pbkdf2_sha256$1000$c2FsdHNhbHRzYWx0$" + "A" * 43 + "=",
    "pbkdf2_sha256$600000$$" + "A" * 43 + "=",
])
def test_stored_hashes_below_the_floor_are_refused(stored: str) -> None:
    with pytest.raises(ConfigurationError):
        PasswordVerifier({"alice": stored})


def test_old_default_scrypt_2_14_still_accepted() -> None:
    import base64
    import hashlib

    salt = b"0123456789abcdef"
    digest = hashlib.scrypt(b"pw", salt=salt, n=1 << 14, r=8, p=1, dklen=32)
    b64 = base64.b64encode
    stored = f"scrypt$16384$8$1${b64(salt).decode()}${b64(digest).decode()}"
    assert ui.verify_passcode(b"pw", stored)


def test_hashing_is_bounded(run: Any) -> None:
    """At most two hashes run at once, whatever the number of logins in flight."""
    v = PasswordVerifier({"alice": _pbkdf2("a")}, max_concurrent=2)
    active = peak = 0
    real = ui.verify_passcode

    def slow(secret: bytes, stored: str) -> bool:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        time.sleep(0.02)
        active -= 1
        return False

    async def body() -> None:
        ui.verify_passcode = slow  # type: ignore[assignment]
        try:
            rq = UserIdentityRQ(identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
                                positive_response_requested=False, primary_field=b"x",
                                secondary_field=b"y")
            await asyncio.gather(*(v(INFO, rq) for _ in range(8)))
        finally:
            ui.verify_passcode = real

    run(body())
    assert 1 <= peak <= 2
