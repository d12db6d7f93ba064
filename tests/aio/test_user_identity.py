"""User identity negotiation: the verifiers, and a plain `Server` end to end (PS3.7 D.3.3.7)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.client import connect
from aiodicom.aio.requests import EchoRequest
from aiodicom.aio.server import Admission, Handlers, Server
from aiodicom.aio.user_identity import (
    IdentityVerdict,
    JWTError,
    JWTVerifier,
    PasswordVerifier,
    by_type,
    hash_passcode,
    verify_passcode,
)
from aiodicom.app.server.run import storage_acceptor_policy
from aiodicom.core.dimse import Status
from aiodicom.core.user_items import UserIdentityRQ, UserIdentityType
from aiodicom.errors import AssociationRejected, ConfigurationError, DicomError
from aiodicom.settings import AssociationSettings
from tests.conftest import make_runner

SECRET = b"k" * 32
NOW = 1_800_000_000.0
INFO = AssociationInfo(id=1, calling_ae_title="CT01", called_ae_title="AIODICOM",
                       peer_address=("127.0.0.1", 1))
sync = make_runner("asyncio")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_jwt(claims: dict[str, Any], *, alg: str = "HS256", key: Any = SECRET,
             header: dict[str, Any] | None = None) -> bytes:
    head = _b64(json.dumps(header or {"alg": alg, "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims).encode())
    signing_input = f"{head}.{body}".encode()
    if alg == "HS256":
        sig = hmac.new(key, signing_input, hashlib.sha256).digest()
    elif alg == "ES256":
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    elif alg == "RS256":
        from cryptography.hazmat.primitives.asymmetric import padding

        sig = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    else:
        sig = b""
    return f"{head}.{body}.{_b64(sig) if sig else ''}".encode()


def jwt_rq(token: bytes) -> UserIdentityRQ:
    return UserIdentityRQ(identity_type=UserIdentityType.JWT, positive_response_requested=True,
                          primary_field=token)


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "dr.who", "exp": NOW + 600, "iat": NOW - 10, "iss": "idp",
            "aud": "aiodicom", **extra}


def hs() -> JWTVerifier:
    return JWTVerifier(SECRET, issuer="idp", audience="aiodicom", clock=lambda: NOW)


def verdict(verifier: Any, rq: UserIdentityRQ) -> IdentityVerdict:
    result: IdentityVerdict = sync(verifier(INFO, rq))
    return result


# -- JWT ----------------------------------------------------------------------------------------


def test_jwt_hs256_valid_gives_the_subject() -> None:
    v = verdict(hs(), jwt_rq(make_jwt(claims())))
    assert v.accepted and v.user == "dr.who" and v.server_response == b""


@pytest.mark.parametrize(
    ("token_claims", "why"),
    [
        (claims(exp=NOW - 31), "expired"),
        (claims(nbf=NOW + 120), "not valid yet"),
        (claims(iat=NOW + 120), "future"),
        (claims(aud="someone-else"), "audience"),
        (claims(aud=["a", "b"]), "audience"),
        (claims(iss="evil"), "issuer"),
        ({"sub": "x", "iss": "idp", "aud": "aiodicom"}, "no 'exp'"),
        (claims(sub=""), "'sub'"),
        (claims(exp="tomorrow"), "not a number"),
    ],
)
def test_jwt_claims_refused(token_claims: dict[str, Any], why: str) -> None:
    v = verdict(hs(), jwt_rq(make_jwt(token_claims)))
    assert not v.accepted and why in v.why and v.user is None


def test_jwt_leeway_and_audience_list() -> None:
    v = verdict(hs(), jwt_rq(make_jwt(claims(exp=NOW - 29, aud=["x", "aiodicom"]))))
    assert v.accepted


def test_jwt_bad_signature_and_alg_none_refused() -> None:
    good = make_jwt(claims())
    head, body, sig = good.split(b".")
    tampered = b".".join([head, _b64(json.dumps(claims(sub="admin")).encode()).encode(), sig])
    assert "bad signature" in verdict(hs(), jwt_rq(tampered)).why
    other_key = make_jwt(claims(), key=b"x" * 32)
    assert not verdict(hs(), jwt_rq(other_key)).accepted
    none = make_jwt(claims(), alg="none", header={"alg": "none"})
    v = verdict(hs(), jwt_rq(none))
    assert not v.accepted and "'none'" in v.why
    for garbage in (b"", b"a.b", b"\xff.\xff.\xff", b"e30.e30.e30", b"x" * 20000,
                    b"W10.e30.AA"):
        assert not verdict(hs(), jwt_rq(garbage)).accepted


def test_jwt_es256_valid_expired_and_wrong_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    v = JWTVerifier(pem, ("ES256",), audience="aiodicom", clock=lambda: NOW)
    assert verdict(v, jwt_rq(make_jwt(claims(), alg="ES256", key=key))).user == "dr.who"
    expired = make_jwt(claims(exp=NOW - 3600), alg="ES256", key=key)
    assert "expired" in verdict(v, jwt_rq(expired)).why
    other = make_jwt(claims(), alg="ES256", key=ec.generate_private_key(ec.SECP256R1()))
    assert "bad signature" in verdict(v, jwt_rq(other)).why
    # an HS256 token "signed" with the public key as HMAC secret (RFC 8725 §2.1) is refused
    confused = make_jwt(claims(), alg="HS256", key=pem)
    assert "not accepted" in verdict(v, jwt_rq(confused)).why


def test_jwt_rs256_valid() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    v = JWTVerifier(key.public_key(), ("RS256",), audience="aiodicom", clock=lambda: NOW)
    assert verdict(v, jwt_rq(make_jwt(claims(), alg="RS256", key=key))).accepted
    # no audience configured: a token issued for some audience is someone else's (RFC 7519)
    blind = JWTVerifier(key.public_key(), ("RS256",), clock=lambda: NOW)
    refused = verdict(blind, jwt_rq(make_jwt(claims(), alg="RS256", key=key)))
    assert not refused.accepted and "audience" in refused.why
    no_aud = {k: v for k, v in claims().items() if k != "aud"}
    assert verdict(blind, jwt_rq(make_jwt(no_aud, alg="RS256", key=key))).accepted


def test_jwt_verifier_configuration_errors() -> None:
    pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(ConfigurationError, match="shared secret"):
        JWTVerifier(pem, ("HS256",))
    with pytest.raises(ConfigurationError, match="32 bytes"):
        JWTVerifier(b"short", ("HS256",))
    with pytest.raises(ConfigurationError, match="not supported"):
        JWTVerifier(SECRET, ("none",))
    with pytest.raises(ConfigurationError, match="RSA"):
        JWTVerifier(pem, ("RS256",))
    with pytest.raises(ConfigurationError, match="separate"):
        JWTVerifier(SECRET, ("HS256", "ES256"))


def test_jwt_verifier_refuses_other_identity_types() -> None:
    rq = UserIdentityRQ(identity_type=UserIdentityType.USERNAME,
                        positive_response_requested=False, primary_field=b"dr.who")
    assert not verdict(hs(), rq).accepted


# -- passwords ------------------------------------------------------------------------------------


def pw_rq(user: bytes, passcode: bytes, *, kind: UserIdentityType = UserIdentityType
          .USERNAME_AND_PASSCODE, response: bool = True) -> UserIdentityRQ:
    return UserIdentityRQ(identity_type=kind, positive_response_requested=response,
                          primary_field=user, secondary_field=passcode)


USERS = {"alice": hash_passcode("s3cret"), "bob": hash_passcode("hunter2", method="pbkdf2_sha256")}


def test_hash_passcode_round_trip_and_malformed() -> None:
    assert verify_passcode(b"s3cret", USERS["alice"])
    assert not verify_passcode(b"s3cret!", USERS["alice"])
    assert verify_passcode(b"hunter2", USERS["bob"])
    assert USERS["alice"] != hash_passcode("s3cret")  # salted
    with pytest.raises(ConfigurationError, match="neither"):
        PasswordVerifier({"x": "plain-text-password"})
    with pytest.raises(ConfigurationError, match="malformed"):
        PasswordVerifier({"x": "scrypt$3$8$1$AA==$AA=="})
    with pytest.raises(ConfigurationError, match="unknown passcode hash method"):
        hash_passcode("x", method="md5")


def test_password_verifier() -> None:
    v = PasswordVerifier(USERS)
    ok = verdict(v, pw_rq(b"alice", b"s3cret"))
    assert ok.accepted and ok.user == "alice" and ok.server_response == b""
    assert verdict(v, pw_rq(b"bob", b"hunter2")).user == "bob"
    assert "wrong passcode" in verdict(v, pw_rq(b"alice", b"nope")).why
    assert "unknown user" in verdict(v, pw_rq(b"mallory", b"s3cret")).why
    assert not verdict(v, pw_rq(b"\xff", b"s3cret")).accepted
    only = pw_rq(b"alice", b"", kind=UserIdentityType.USERNAME)
    assert not verdict(v, only).accepted
    relaxed = PasswordVerifier(USERS, allow_username_only=True)
    assert verdict(relaxed, only).user == "alice"
    assert not verdict(relaxed, pw_rq(b"eve", b"", kind=UserIdentityType.USERNAME)).accepted
    assert not verdict(v, pw_rq(b"alice", b"s3cret", kind=UserIdentityType.SAML)).accepted


def test_by_type_routes_and_refuses_unknown_types() -> None:
    v = by_type({UserIdentityType.USERNAME_AND_PASSCODE: PasswordVerifier(USERS),
                 UserIdentityType.JWT: hs()})
    assert verdict(v, pw_rq(b"alice", b"s3cret")).user == "alice"
    assert verdict(v, jwt_rq(make_jwt(claims()))).user == "dr.who"
    kerberos = pw_rq(b"ticket", b"", kind=UserIdentityType.KERBEROS)
    assert "type 3" in verdict(v, kerberos).why


# -- end to end ---------------------------------------------------------------------------------


class Harness:
    def __init__(self, **kw: Any) -> None:
        self.users: list[str | None] = []
        self.server = Server(
            settings=AssociationSettings(ae_title="AIODICOM"),
            admission=Admission(
                policy=storage_acceptor_policy("AIODICOM", max_pdu_length=1 << 20), **kw),
            handlers=Handlers(echo=self._echo),
        )
        self.port = 0

    async def _echo(self, request: EchoRequest) -> Status:
        self.users.append(request.association.user)
        return Status.SUCCESS

    async def __aenter__(self) -> Harness:
        _, self.port = await self.server.listen("127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.close(drain_timeout=2)

    async def echo(self, identity: UserIdentityRQ | None) -> tuple[Status, bytes | None]:
        async with connect("127.0.0.1", self.port, called_ae_title="AIODICOM",
                           settings=AssociationSettings(ae_title="ECHOSCU"),
                           user_identity=identity) as assoc:
            assert assoc.negotiated is not None
            return await assoc.echo(), assoc.negotiated.user_identity_response


def test_passcode_end_to_end(run: Any) -> None:
    async def body() -> None:
        async with Harness(verify_identity=PasswordVerifier(USERS)) as h:
            assert await h.echo(pw_rq(b"alice", b"s3cret")) == (Status.SUCCESS, b"")
            # no positive response requested: no 0x59 sub-item
            assert await h.echo(pw_rq(b"bob", b"hunter2", response=False)) == (
                Status.SUCCESS, None)
            assert h.users == ["alice", "bob"]
            with pytest.raises(AssociationRejected) as err:
                await h.echo(pw_rq(b"alice", b"wrong"))
            assert (err.value.result, err.value.source, err.value.reason) == (1, 1, 1)
            # identity optional here: a peer that sends none is served, with no user
            assert (await h.echo(None))[0] == Status.SUCCESS
            assert h.users[-1] is None
            assert h.server.stats.rejected == 1

    run(body())


def test_require_user_identity(run: Any) -> None:
    async def body() -> None:
        async with Harness(verify_identity=hs(), require_user_identity=True) as h:
            with pytest.raises(AssociationRejected) as err:
                await h.echo(None)
            assert (err.value.result, err.value.source, err.value.reason) == (1, 1, 1)
            token = make_jwt(claims(exp=time.time() + 600, iat=time.time()))
            h.server.admission = dataclasses.replace(
                h.server.admission, verify_identity=JWTVerifier(SECRET, audience="aiodicom"))
            assert (await h.echo(jwt_rq(token)))[0] == Status.SUCCESS
            assert h.users == ["dr.who"]

    run(body())


def test_verifier_that_raises_refuses(run: Any, caplog: pytest.LogCaptureFixture) -> None:
    async def broken(info: AssociationInfo, request: UserIdentityRQ) -> IdentityVerdict:
        raise RuntimeError("identity provider down")

    async def body() -> None:
        async with Harness(verify_identity=broken) as h:
            with pytest.raises(AssociationRejected):
                await h.echo(pw_rq(b"alice", b"s3cret"))
            assert h.users == []

    run(body())
    assert "verifier failed" in caplog.text


def test_require_user_identity_needs_a_verifier() -> None:
    with pytest.raises(ConfigurationError, match="verify_identity"):
        Server(
            admission=Admission(
                policy=storage_acceptor_policy("A", max_pdu_length=1 << 16),
                require_user_identity=True,
            ),
        )


def test_jwt_error_is_a_dicom_error_and_a_value_error() -> None:
    with pytest.raises(JWTError, match="bad signature") as caught:
        hs().verify(make_jwt(claims(), key=b"x" * 32))
    assert isinstance(caught.value, DicomError)
    assert isinstance(caught.value, ValueError)
