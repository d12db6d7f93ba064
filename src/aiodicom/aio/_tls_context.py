"""SSLContext builders for the PS3.15 secure transport profiles B.12 and B.13.

B.12 ("BCP 195 RFC 8996, 9325"): TLS 1.2 and 1.3 only, the server prefers 1.3 (OpenSSL
always negotiates the highest common version), TLS 1.2 restricted to ECDHE with AEAD ciphers
(RFC 9325 §4.2). B.13 ("Modified BCP 195") also allows the ECDHE-ECDSA AES-CCM suites for
TLS 1.2 and asks servers to support every TLS 1.3 suite it lists, including
TLS_AES_128_CCM_SHA256. Python's ssl cannot choose TLS 1.3 suites (there is no
``set_ciphersuites`` in 3.11-3.13; ``set_ciphers`` only affects TLS <= 1.2), and OpenSSL's
default TLS 1.3 list lacks the CCM suites: they can only be enabled through an OpenSSL
configuration file (docs/security.md). `profile_gaps` reports what is missing.

Both sides require a peer certificate (mutual TLS). Keys weaker than RSA 2048 or EC P-256
are refused when loaded, with ConfigurationError. Session resumption is off on the server
(no tickets) so a revoked or no-longer-trusted client cannot skip verification by resuming
a session after the trust files are reloaded.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import stat
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from aiodicom.errors import ConfigurationError

if TYPE_CHECKING:  # cryptography (~8 MB) is imported when a TLS context is first built
    from cryptography import x509

log = logging.getLogger("aiodicom.tls")

PROFILES = ("bcp195", "bcp195-modified")
"""Profile names: PS3.15 B.12 and B.13."""

TLS12_CIPHERS_B12: tuple[str, ...] = (
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
)
"""TLS 1.2 suites of the B.12 profile (OpenSSL names), in server preference order."""

TLS12_CIPHERS_B13: tuple[str, ...] = (
    *TLS12_CIPHERS_B12,
    "ECDHE-ECDSA-AES128-CCM",
    "ECDHE-ECDSA-AES256-CCM",
)
"""B.13 adds the ECDHE AES-CCM suites. DHE suites are left out: B.13 forbids DHE where the
group size cannot be set, and CCM_8 (64-bit tag) is left out on purpose."""

TLS13_SUITES_B13 = (
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_AES_128_CCM_SHA256",
)
"""TLS 1.3 suites a B.13 server shall support (only settable through OpenSSL config)."""

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256


def _cipher_string(profile: str) -> str:
    if profile == "bcp195":
        suites = TLS12_CIPHERS_B12
    elif profile == "bcp195-modified":
        suites = TLS12_CIPHERS_B13
    else:
        raise ConfigurationError(
            f"unknown TLS profile {profile!r}; use one of {', '.join(PROFILES)}"
        )
    return ":".join(suites) + ":@SECLEVEL=2"


def profile_gaps(ctx: ssl.SSLContext, profile: str) -> tuple[str, ...]:
    """TLS 1.3 suites the profile asks for that this OpenSSL context does not offer."""
    if profile != "bcp195-modified":
        return ()
    offered = {c["name"] for c in ctx.get_ciphers()}
    return tuple(s for s in TLS13_SUITES_B13 if s not in offered)


def check_key_strength(path: Path) -> None:
    """Refuse RSA keys under 2048 bits, EC keys under 256 bits and other key kinds.

    PS3.15 B.13 and RFC 9325 §4.1; DCMTK applies the same floor.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"TLS private key {path} not found") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read TLS private key {path}: {exc}") from exc
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise ConfigurationError(
            f"TLS private key {path} is encrypted; give an unencrypted PEM key (mode 0600)"
        ) from None
    except ValueError as exc:
        raise ConfigurationError(f"{path} is not a PEM private key ({exc})") from exc
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise ConfigurationError(
                f"TLS key {path} is RSA {key.key_size} bits; PS3.15 B.13 needs at least "
                f"{MIN_RSA_BITS}: issue a new certificate (e.g. `aiodicom pki issue`)"
            )
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        if key.curve.key_size < MIN_EC_BITS:
            raise ConfigurationError(
                f"TLS key {path} is on curve {key.curve.name} ({key.curve.key_size} bits); "
                "use P-256 or stronger: issue a new certificate (e.g. `aiodicom pki issue`)"
            )
    elif not isinstance(key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey):
        raise ConfigurationError(
            f"TLS key {path} is a {type(key).__name__}; use an EC (P-256+) or RSA (2048+) key"
        )


def _read_pem_certs(path: Path, what: str) -> list[x509.Certificate]:
    from cryptography import x509

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"{what} {path} not found") from None
    except OSError as exc:
        raise ConfigurationError(f"cannot read {what} {path}: {exc}") from exc
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigurationError(f"{what} {path} is not a PEM certificate file ({exc})") from exc
    return certs


_CRL_RE = re.compile(rb"-----BEGIN X509 CRL-----.+?-----END X509 CRL-----", re.DOTALL)


def load_pem_crls(data: bytes) -> list[x509.CertificateRevocationList]:
    """Every CRL in a PEM file (aiodicom writes one per CA into crl.pem)."""
    from cryptography import x509

    return [x509.load_pem_x509_crl(block) for block in _CRL_RE.findall(data)]


CRL_EXPIRY_WARNING = timedelta(days=7)
"""A CRL whose next update is closer than this is reported when loaded (and periodically by
`ReloadingServerContext`): after it, OpenSSL refuses every client certificate it covers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CrlValidity:
    """The validity window the loaded CRLs share: what is checked for expiry and exported as
    metrics (the earliest next update governs: past it, some clients are refused)."""

    issuers: tuple[str, ...]
    last_update: datetime
    """The newest thisUpdate (lastUpdate) of the CRLs."""
    next_update: datetime | None
    """The earliest nextUpdate, or None if no CRL has one."""


def _is_ca_certificate(cert: x509.Certificate) -> bool:
    from cryptography import x509

    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return cert.subject == cert.issuer


def crl_validity(crls: list[x509.CertificateRevocationList]) -> CrlValidity:
    """Summarize `crls` (from `load_pem_crls`); `crls` must not be empty."""
    nexts = [c.next_update_utc for c in crls if c.next_update_utc is not None]
    return CrlValidity(
        issuers=tuple(c.issuer.rfc4514_string() for c in crls),
        last_update=max(c.last_update_utc for c in crls),
        next_update=min(nexts) if nexts else None,
    )


def _check_crl(crl: Path, ca_certs: list[x509.Certificate]) -> list[x509.CertificateRevocationList]:
    """Validate the CRL file against the CA file and return its CRLs.

    Every CA certificate in `ca_certs` must have its CRL in the file: revocation is checked
    along the whole chain (VERIFY_CRL_CHECK_CHAIN), so a CA without a CRL would fail every
    client below it, and before this rule a root without one silently turned chain checking
    off (a revoked intermediate then still connected, issue 17 item 1).
    """
    try:
        crls = load_pem_crls(crl.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(f"CRL file {crl} not found") from None
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"CRL file {crl} is not a PEM CRL file ({exc})") from exc
    if not crls:
        raise ConfigurationError(
            f"{crl} holds no '-----BEGIN X509 CRL-----' block; give the file written by "
            "`aiodicom pki crl DIR`"
        )
    by_subject = {c.subject: c for c in ca_certs}
    now = datetime.now(UTC)
    crl_issuers = {item.issuer for item in crls}
    missing = [c for c in ca_certs if _is_ca_certificate(c) and c.subject not in crl_issuers]
    if missing:
        names = "; ".join(repr(c.subject.rfc4514_string()) for c in missing)
        raise ConfigurationError(
            f"CRL file {crl} has no CRL from CA {names}, which the CA file lists: revocation "
            "is checked along the whole chain, so every client certificate below it would be "
            "refused. Add that CA's CRL to the file (during a CA rotation, concatenate the "
            "crl.pem of both CA directories, e.g. `cat old/crl.pem new/crl.pem > crl.pem`) "
            "or remove the CA from the CA file"
        )
    for item in crls:
        issuer = by_subject.get(item.issuer)
        if issuer is not None and not item.is_signature_valid(issuer.public_key()):  # type: ignore[arg-type]
            raise ConfigurationError(
                f"a CRL in {crl} names {item.issuer.rfc4514_string()!r} as issuer but is not "
                "signed by that CA; publish it again with `aiodicom pki crl DIR`"
            )
        if item.next_update_utc is not None and item.next_update_utc < now:
            log.warning(
                "CRL in %s (issuer %s) is past its next update (%s): every client certificate "
                "it covers will be refused until a new CRL is published (`aiodicom pki crl`)",
                crl, item.issuer.rfc4514_string(), item.next_update_utc,
            )
        elif item.next_update_utc is not None and item.next_update_utc - now < CRL_EXPIRY_WARNING:
            log.warning(
                "CRL in %s (issuer %s) expires at %s, in %s: publish a new one before then "
                "(`aiodicom pki crl DIR`) or every client certificate it covers is refused",
                crl, item.issuer.rfc4514_string(), item.next_update_utc,
                item.next_update_utc - now,
            )
        if item.last_update_utc > now:
            log.warning(
                "CRL in %s (issuer %s) is not valid before %s (%s from now: the CA's clock is "
                "ahead?): until then OpenSSL refuses every client certificate it covers; "
                "`aiodicom pki crl` backdates CRLs by 5 minutes",
                crl, item.issuer.rfc4514_string(), item.last_update_utc,
                item.last_update_utc - now,
            )
    return crls


CRL_VERIFY_FLAGS = ssl.VERIFY_CRL_CHECK_LEAF | ssl.VERIFY_CRL_CHECK_CHAIN
"""Verify flags of a server context given a CRL file (always the whole chain)."""


def _base_context(purpose: int, profile: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = ssl.TLSVersion.MAXIMUM_SUPPORTED
    ctx.set_ciphers(_cipher_string(profile))
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _load_identity(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    _read_pem_certs(cert, "TLS certificate")
    check_key_strength(key)
    try:
        ctx.load_cert_chain(certfile=cert, keyfile=key)
    except ssl.SSLError as exc:
        raise ConfigurationError(
            f"cannot use certificate {cert} with key {key}: {exc.reason or exc}; check that "
            "the key belongs to the certificate"
        ) from exc


def warn_if_key_exposed(key: Path) -> bool:
    """Log a warning (and return True) when the private key file is readable or writable by
    group or others: the key is the server's identity (issue 17 item 11)."""
    try:
        mode = os.stat(key).st_mode
    except OSError:
        return False
    if stat.S_IMODE(mode) & 0o077:
        log.warning(
            "TLS private key %s has mode %04o: group or others can read it; anyone who can "
            "read it can impersonate this server. Run `chmod 600 %s`",
            key, stat.S_IMODE(mode), key,
        )
        return True
    return False


def _load_trust(ctx: ssl.SSLContext, ca: Path) -> list[x509.Certificate]:
    certs = _read_pem_certs(ca, "CA certificate file")
    try:
        ctx.load_verify_locations(cafile=ca)
    except ssl.SSLError as exc:
        raise ConfigurationError(f"cannot load CA certificates from {ca}: {exc}") from exc
    return certs


def server_context(
    *, cert: Path, key: Path, ca: Path, crl: Path | None = None, profile: str = "bcp195"
) -> ssl.SSLContext:
    """A mutual-TLS server context: client certificates required and verified against `ca`.

    With `crl`, revoked client certificates are refused along the whole chain
    (VERIFY_CRL_CHECK_LEAF | VERIFY_CRL_CHECK_CHAIN): the file must hold a CRL from every CA
    in `ca`, as DIR/crl.pem from `aiodicom pki crl` does. Raises ConfigurationError naming
    the file when anything cannot be used.
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, profile)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_TICKET
    ctx.num_tickets = 0
    _load_identity(ctx, Path(cert), Path(key))
    warn_if_key_exposed(Path(key))
    ca_certs = _load_trust(ctx, Path(ca))
    if crl is not None:
        _check_crl(Path(crl), ca_certs)
        try:
            ctx.load_verify_locations(cafile=crl)
        except ssl.SSLError as exc:
            raise ConfigurationError(f"cannot load CRL file {crl}: {exc}") from exc
        ctx.verify_flags |= CRL_VERIFY_FLAGS
    gaps = profile_gaps(ctx, profile)
    if gaps:
        log.warning(
            "TLS profile %s: this OpenSSL (%s) does not enable TLS 1.3 suite(s) %s, which "
            "PS3.15 B.13 servers shall support; enable them in an OpenSSL config file "
            "(see docs/security.md)", profile, ssl.OPENSSL_VERSION, ", ".join(gaps),
        )
    return ctx


def client_context(
    *,
    cert: Path,
    key: Path,
    ca: Path,
    server_hostname_check: bool = True,
    profile: str = "bcp195",
) -> ssl.SSLContext:
    """A mutual-TLS client context: presents `cert`, verifies the server against `ca`.

    The server's certificate must name the host (DNS name or IP address) that is connected to,
    unless `server_hostname_check` is False (the chain is verified either way).
    """
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, profile)
    ctx.check_hostname = server_hostname_check
    _load_identity(ctx, Path(cert), Path(key))
    _load_trust(ctx, Path(ca))
    return ctx
