"""User identity negotiation (PS3.7 D.3.3.7): a second factor beside the certificate.

The requestor may send a user identity sub-item (0x58): a username, a username and passcode,
a Kerberos ticket, a SAML assertion or a JSON Web Token. The `Server` hands it to a pluggable
`IdentityVerifier` before negotiation; the verdict decides acceptance (a refusal is
A-ASSOCIATE-RJ permanent, service-user, reason 1, as `reject_no_reason` explains) and carries
the server response for sub-item 0x59 and the user name handlers see as
``AssociationInfo.user``.

Two verifiers are provided: `PasswordVerifier` (types 1 and 2, scrypt or PBKDF2 hashes compared
in constant time) and `JWTVerifier` (type 5; HS256/384/512 with a shared secret, RS256/384/512
or ES256/384/512 with a public key; signature, ``exp``/``nbf``/``iat``, ``iss`` and ``aud``
checked). `by_type` routes each type to its verifier. Passcodes and tokens travel in clear on
a plain connection: use them over TLS.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from aiodicom.aio.association import AssociationInfo
from aiodicom.core.user_items import UserIdentityRQ, UserIdentityType
from aiodicom.errors import ConfigurationError, DicomError

if TYPE_CHECKING:  # PyJWT and cryptography (~8 MB) load with the first JWTVerifier
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey

__all__ = [
    "IdentityVerdict",
    "IdentityVerifier",
    "JWTError",
    "JWTVerifier",
    "PasswordVerifier",
    "by_type",
    "hash_passcode",
    "verify_passcode",
]

log = logging.getLogger("aiodicom.user_identity")


@dataclass(frozen=True, slots=True, kw_only=True)
class IdentityVerdict:
    """A verifier's answer."""

    accepted: bool
    server_response: bytes | None = None
    """Sub-item 0x59's content when the requestor asked for a positive response: empty for
    types 1 and 2 (PS3.7 Table D.3-15). None sends no 0x59 item."""
    user: str | None = None
    """Who the requestor is, for handlers, logs and the audit trail."""
    why: str = ""
    """Why it was refused (logged, never sent to the peer)."""



class IdentityVerifier(Protocol):
    """Decides on the user identity of an A-ASSOCIATE-RQ (runs on the event loop: offload
    blocking work, as `PasswordVerifier` does with its hashing)."""

    async def __call__(self, info: AssociationInfo, request: UserIdentityRQ) -> IdentityVerdict:
        ...


def by_type(verifiers: Mapping[UserIdentityType, IdentityVerifier]) -> IdentityVerifier:
    """One verifier per identity type; a type with none is refused."""

    async def verify(info: AssociationInfo, request: UserIdentityRQ) -> IdentityVerdict:
        verifier = verifiers.get(UserIdentityType(request.identity_type))
        if verifier is None:
            return IdentityVerdict(accepted=False, why=(
                f"user identity type {int(request.identity_type)} is not accepted here"))
        return await verifier(info, request)

    return verify


# -- passwords -------------------------------------------------------------------------------

_SCRYPT = (1 << 17, 8, 1)
"""New hashes: scrypt N=2^17, r=8, p=1 (128 MiB; OWASP's current minimum guidance)."""
SCRYPT_MIN_COST = 1 << 17
"""Floor for stored scrypt hashes: N*r >= 2^17 (16 MiB, e.g. N=2^14 r=8, the old default).
Below it a hash is trivially brute-forced and the users file is refused."""
PBKDF2_MIN_ITERATIONS = 100_000
"""Floor for stored pbkdf2_sha256 hashes (new ones use 600,000)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_passcode(passcode: str, *, method: str = "scrypt", salt: bytes | None = None) -> str:
    """A storable hash: ``scrypt$N$r$p$salt$hash`` or ``pbkdf2_sha256$iterations$salt$hash``."""
    salt = salt if salt is not None else os.urandom(16)
    secret = passcode.encode("utf-8")
    if method == "scrypt":
        n, r, p = _SCRYPT
        digest = hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, dklen=32,
                                maxmem=256 * r * n + (1 << 20))
        return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"
    if method == "pbkdf2_sha256":
        iterations = 600_000
        digest = hashlib.pbkdf2_hmac("sha256", secret, salt, iterations)
        return f"pbkdf2_sha256${iterations}${_b64(salt)}${_b64(digest)}"
    raise ConfigurationError(f"unknown passcode hash method {method!r}; use scrypt or "
                             "pbkdf2_sha256")


def _parse_hash(stored: str) -> Callable[[bytes], tuple[bytes, bytes]]:
    """A function computing (expected, actual) for a passcode; ConfigurationError if malformed."""
    parts = stored.split("$")
    try:
        if parts[0] == "scrypt" and len(parts) == 6:
            n, r, p = (int(x) for x in parts[1:4])
            salt, expected = base64.b64decode(parts[4]), base64.b64decode(parts[5])
            if not (2 <= n <= 1 << 20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
                raise ValueError("scrypt parameters out of range")
            if n * r < SCRYPT_MIN_COST or len(salt) < 8 or len(expected) < 16:
                raise ValueError(f"scrypt N={n} r={r} is below the floor N*r >= 2^17 "
                                 "(rehash with `aiodicom user hash`)")
            return lambda s: (expected, hashlib.scrypt(
                s, salt=salt, n=n, r=r, p=p, dklen=len(expected), maxmem=256 * r * n + (1 << 20)))
        if parts[0] == "pbkdf2_sha256" and len(parts) == 4:
            iterations = int(parts[1])
            salt, expected = base64.b64decode(parts[2]), base64.b64decode(parts[3])
            if not PBKDF2_MIN_ITERATIONS <= iterations <= 10_000_000:
                raise ValueError(f"iteration count {iterations} is outside "
                                 f"{PBKDF2_MIN_ITERATIONS}-10000000 (rehash with "
                                 "`aiodicom user hash`)")
            if len(salt) < 8 or len(expected) < 16:
                raise ValueError("salt or hash too short")
            return lambda s: (expected, hashlib.pbkdf2_hmac(
                "sha256", s, salt, iterations, dklen=len(expected)))
    except (ValueError, binascii.Error) as exc:
        raise ConfigurationError(f"malformed passcode hash {stored[:20]!r}...: {exc}") from exc
    raise ConfigurationError(
        f"passcode hash {stored[:20]!r}... is neither scrypt$N$r$p$salt$hash nor "
        "pbkdf2_sha256$iterations$salt$hash (make one with hash_passcode)")


def verify_passcode(passcode: bytes, stored: str) -> bool:
    """Constant-time comparison of ``passcode`` (UTF-8 bytes) against a `hash_passcode` hash."""
    expected, actual = _parse_hash(stored)(passcode)
    return hmac.compare_digest(expected, actual)


def _decoy(stored: str) -> str:
    """A hash with ``stored``'s method and parameters but a random salt and digest: checking
    an unknown user against it costs what checking a real one does, and never matches."""
    parts = stored.split("$")
    salt, digest = base64.b64decode(parts[-2]), base64.b64decode(parts[-1])
    return "$".join([*parts[:-2], _b64(os.urandom(len(salt))), _b64(os.urandom(len(digest)))])


class PasswordVerifier:
    """Types 2 (username and passcode) and, when allowed, 1 (username only).

    ``users`` maps a username to a `hash_passcode` hash. Hashing runs in a worker thread so
    the event loop keeps serving, at most ``max_concurrent`` at a time (a scrypt hash holds
    128 MiB). An unknown user is checked against a decoy with the parameters most users
    have, so its timing does not tell it from a known user (no username enumeration).
    """

    def __init__(self, users: Mapping[str, str], *, allow_username_only: bool = False,
                 max_concurrent: int = 2) -> None:
        params: dict[str, int] = {}
        for name, stored in users.items():
            _parse_hash(stored)  # fail at start-up, naming the bad hash, not at login
            if not name:
                raise ConfigurationError("a user name must not be empty")
            prefix = stored.rsplit("$", 2)[0]
            params[prefix] = params.get(prefix, 0) + 1
        self.users = dict(users)
        self.allow_username_only = allow_username_only
        if users:
            common = max(params, key=lambda k: params[k])
            self._dummy = _decoy(next(h for h in users.values() if h.startswith(common + "$")))
        else:
            self._dummy = _decoy("scrypt${}${}${}$AAAAAAAAAAAAAAAAAAAAAA==$".format(*_SCRYPT)
                                 + _b64(bytes(32)))
        self._slots = asyncio.Semaphore(max_concurrent)

    async def __call__(self, info: AssociationInfo, request: UserIdentityRQ) -> IdentityVerdict:
        try:
            user = bytes(request.primary_field).decode("utf-8")
        except UnicodeDecodeError:
            return IdentityVerdict(accepted=False, why="the username is not UTF-8")
        kind = request.identity_type
        if kind == UserIdentityType.USERNAME:
            if self.allow_username_only and user in self.users:
                return IdentityVerdict(accepted=True, server_response=b"", user=user)
            return IdentityVerdict(accepted=False, why=(
                f"username-only identity for {user!r} is not accepted"))
        if kind != UserIdentityType.USERNAME_AND_PASSCODE:
            return IdentityVerdict(accepted=False, why=(
                f"user identity type {int(kind)} is not a username and passcode"))
        stored = self.users.get(user)
        secret = bytes(request.secondary_field)
        async with self._slots:
            ok = await asyncio.get_running_loop().run_in_executor(
                None, verify_passcode, secret, stored or self._dummy)
        if ok and stored is not None:
            return IdentityVerdict(accepted=True, server_response=b"", user=user)
        return IdentityVerdict(accepted=False, why=(
            f"wrong passcode for {user!r}" if stored is not None else f"unknown user {user!r}"))


# -- JSON Web Tokens (RFC 7519, RFC 7515) -------------------------------------------------------

_HMAC_MIN = {"HS256": 32, "HS384": 48, "HS512": 64}
"""Shortest HMAC secret per algorithm: the hash size (RFC 7518 §3.2)."""
_EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
_RSA = ("RS256", "RS384", "RS512")
MAX_TOKEN = 16 * 1024
"""Longest token accepted (bytes); the sub-item allows 65535."""


class JWTError(DicomError, ValueError):
    """A token that does not verify; `JWTVerifier` turns it into a refused verdict.

    A `DicomError` like everything aiodicom raises on purpose, and a `ValueError` (a bad
    value handed to `JWTVerifier.verify`), as `ConfigurationError` is.
    """


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    """A NumericDate (RFC 7519 §2): a finite JSON number; NaN and Infinity are refused
    (Python's json reads them, and ``now > nan`` is always false: a token that never expires)."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JWTError(f"claim {name!r} is not a number")
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an int too large for a float (10**400)
        finite = False
    if not finite:
        raise JWTError(f"claim {name!r} is not a finite number")
    return float(value)


class JWTVerifier:
    """Type 5: a JWS compact token whose signature, times, issuer and audience check out.

    Verified by PyJWT (on `cryptography`) against our own allow-list: ``key`` is the HMAC
    secret (bytes, at least the hash size) for HS*, or for RS*/ES* a public key object or its
    PEM bytes. Every algorithm listed must suit the key: a PEM public key is never used as an
    HMAC secret (the RFC 8725 §2.1 confusion), and ``none`` is never accepted. ``exp`` and
    ``sub`` are required; the user is ``sub``. With ``audience`` set, the token's ``aud``
    must name it; without, a token that carries any ``aud`` is refused (RFC 7519 §4.1.3: it
    was issued for someone else). With ``issuer`` set, ``iss`` must equal it.
    """

    def __init__(
        self,
        key: bytes | PublicKey,
        algorithms: Sequence[str] = ("HS256",),
        *,
        issuer: str | None = None,
        audience: str | None = None,
        leeway: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        algs = tuple(algorithms)
        if not algs:
            raise ConfigurationError("JWTVerifier needs at least one algorithm")
        for alg in algs:
            if alg not in _HMAC_MIN and alg not in _EC_CURVES and alg not in _RSA:
                raise ConfigurationError(
                    f"JWT algorithm {alg!r} is not supported; use HS256/384/512, "
                    "RS256/384/512 or ES256/384/512")
        hmac_algs = [a for a in algs if a in _HMAC_MIN]
        if hmac_algs and len(hmac_algs) != len(algs):
            raise ConfigurationError("HMAC (HS*) and public-key algorithms need separate "
                                     "JWTVerifiers: one key cannot serve both")
        self._key: bytes | PublicKey
        if hmac_algs:
            if not isinstance(key, bytes) or b"-----BEGIN" in key:
                raise ConfigurationError("HS* algorithms need a shared secret (bytes), not a "
                                         "public key")
            need = max(_HMAC_MIN[a] for a in hmac_algs)
            if len(key) < need:
                raise ConfigurationError(
                    f"an HMAC secret for {', '.join(hmac_algs)} must be at least {need} bytes")
            self._key = key
        else:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric import ec, rsa

            public: Any = key
            if isinstance(key, bytes):
                try:
                    public = serialization.load_pem_public_key(key)
                except ValueError as exc:
                    raise ConfigurationError(f"cannot load the JWT public key: {exc}") from exc
            for alg in algs:
                if alg in _RSA and not isinstance(public, rsa.RSAPublicKey):
                    raise ConfigurationError(f"{alg} needs an RSA public key")
                if alg in _RSA and public.key_size < 2048:
                    raise ConfigurationError(f"{alg} needs an RSA key of at least 2048 bits")
                if alg in _EC_CURVES and not (
                    isinstance(public, ec.EllipticCurvePublicKey)
                    and public.curve.name == _EC_CURVES[alg]
                ):
                    raise ConfigurationError(f"{alg} needs an EC {_EC_CURVES[alg]} public key")
            self._key = public
        self.algorithms = algs
        self.issuer = issuer
        self.audience = audience
        self.leeway = leeway
        self.clock = clock

    async def __call__(self, info: AssociationInfo, request: UserIdentityRQ) -> IdentityVerdict:
        if request.identity_type != UserIdentityType.JWT:
            return IdentityVerdict(accepted=False, why=(
                f"user identity type {int(request.identity_type)} is not a JWT"))
        try:
            claims = self.verify(bytes(request.primary_field))
        except JWTError as exc:  # one line in the log, never a traceback: peers send these
            return IdentityVerdict(accepted=False, why=f"JWT refused: {exc}")
        return IdentityVerdict(accepted=True, server_response=b"", user=claims["sub"])

    def verify(self, token: bytes) -> dict[str, Any]:
        """The claims of a valid token; raises JWTError (only) saying what is wrong."""
        if len(token) > MAX_TOKEN:
            raise JWTError(f"the token is over {MAX_TOKEN} bytes")
        try:
            text = token.decode("ascii").strip()
        except UnicodeDecodeError as exc:
            raise JWTError("the token is not ASCII") from exc
        if text.count(".") != 2:
            raise JWTError("the token is not header.payload.signature")
        import jwt

        try:
            header = jwt.get_unverified_header(text)
            alg = header.get("alg")
            if not isinstance(alg, str) or alg not in self.algorithms:
                raise JWTError(f"algorithm {alg!r} is not accepted")
            if "crit" in header:
                raise JWTError("critical header parameters are not supported")
            claims: dict[str, Any] = jwt.decode(
                text, self._key, algorithms=list(self.algorithms),
                audience=self.audience, issuer=self.issuer,
                options={"require": ["exp", "sub"], "verify_exp": False, "verify_nbf": False,
                         "verify_iat": False, "enforce_minimum_key_length": True},
            )
        except JWTError:
            raise
        except jwt.InvalidSignatureError:
            raise JWTError("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise JWTError(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError as exc:
            if self.audience is None:
                raise JWTError("the token names an audience ('aud') and none is configured "
                               "here (set the JWT audience)") from None
            raise JWTError(f"audience refused ({exc}): this server is "
                           f"{self.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise JWTError(f"issuer is not {self.issuer!r}") from None
        except (jwt.PyJWTError, ValueError, TypeError, RecursionError) as exc:
            raise JWTError(f"malformed token: {exc}") from None
        self._check_times(claims)
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise JWTError("the token has no 'sub' claim (the user)")
        return claims

    def _check_times(self, claims: Mapping[str, Any]) -> None:
        """exp, nbf and iat against our clock (injectable for tests), with the leeway."""
        now = self.clock()
        exp, nbf, iat = (_time_claim(claims, n) for n in ("exp", "nbf", "iat"))
        if exp is None:
            raise JWTError("the token has no 'exp' claim")
        if now > exp + self.leeway:
            raise JWTError("the token has expired")
        if nbf is not None and now < nbf - self.leeway:
            raise JWTError("the token is not valid yet (nbf)")
        if iat is not None and now < iat - self.leeway:
            raise JWTError("the token was issued in the future (iat)")
