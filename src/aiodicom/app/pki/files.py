"""Files of the aiodicom CA: keys (mode 0600), PEM certificates, the JSON index, a lock.

Every file is written to a temporary name in the same directory and then moved into place,
so a server that reloads trust files never reads half a file, and nothing is overwritten
unless the caller asked to (``--force``).
"""

from __future__ import annotations

import contextlib
import enum
import json
import os
import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from aiodicom.app.pki._defaults import KEY_TYPES as KEY_TYPES
from aiodicom.errors import ConfigurationError

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows
    fcntl = None  # type: ignore[assignment]

RSA_BITS = 3072
INDEX_NAME = "index.json"
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CertKind(enum.StrEnum):
    """What a certificate issued by the CA is for."""

    SERVER = "server"
    CLIENT = "client"
    INTERMEDIATE = "intermediate"


@dataclass(frozen=True, slots=True, kw_only=True)
class CertRecord:
    """One certificate issued by the CA, as recorded in DIR/index.json."""

    serial: int
    kind: CertKind
    subject: str
    """RFC 4514 subject."""
    signed_by: str | None
    """Organization whose intermediate signed it; None when the root did."""
    ae_titles: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    org: str | None = None
    groups: tuple[str, ...] = ()
    not_before: datetime
    not_after: datetime
    fingerprint_sha256: str
    path: str | None = None
    """Where the certificate was written when it was issued."""
    revoked: bool = False
    revoked_at: datetime | None = None
    revocation_reason: str | None = None
    """RFC 5280 CRLReason name (``keyCompromise``...), written into the CRL entry; None:
    no reason code."""

    def to_json(self) -> dict[str, Any]:
        return {
            "serial": format(self.serial, "X"),
            "kind": self.kind.value,
            "subject": self.subject,
            "signed_by": self.signed_by,
            "ae_titles": list(self.ae_titles),
            "dns_names": list(self.dns_names),
            "ip_addresses": list(self.ip_addresses),
            "org": self.org,
            "groups": list(self.groups),
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "fingerprint_sha256": self.fingerprint_sha256,
            "path": self.path,
            "revoked": self.revoked,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            **({"revocation_reason": self.revocation_reason} if self.revocation_reason else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CertRecord:
        revoked_at = data.get("revoked_at")
        return cls(
            serial=int(data["serial"], 16),
            kind=CertKind(data["kind"]),
            subject=str(data["subject"]),
            signed_by=data.get("signed_by"),
            ae_titles=tuple(data.get("ae_titles", ())),
            dns_names=tuple(data.get("dns_names", ())),
            ip_addresses=tuple(data.get("ip_addresses", ())),
            org=data.get("org"),
            groups=tuple(data.get("groups", ())),
            not_before=datetime.fromisoformat(data["not_before"]),
            not_after=datetime.fromisoformat(data["not_after"]),
            fingerprint_sha256=str(data["fingerprint_sha256"]),
            path=data.get("path"),
            revoked=bool(data.get("revoked", False)),
            revoked_at=datetime.fromisoformat(revoked_at) if revoked_at else None,
            revocation_reason=data.get("revocation_reason"),
        )


@dataclass(slots=True, kw_only=True)
class Index:
    """The CA's record of what it issued and revoked (DIR/index.json)."""

    records: list[CertRecord]
    crl_number: int = 0

    def find(self, serial: int) -> CertRecord | None:
        return next((r for r in self.records if r.serial == serial), None)

    def mark_revoked(self, serial: int, when: datetime,
                     reason: str | None = None) -> CertRecord:
        for i, record in enumerate(self.records):
            if record.serial == serial:
                self.records[i] = replace(record, revoked=True, revoked_at=when,
                                          revocation_reason=reason)
                return self.records[i]
        raise KeyError(serial)


def read_index(directory: Path) -> Index:
    path = directory / INDEX_NAME
    if not path.exists():
        return Index(records=[])
    try:
        data = json.loads(path.read_text("utf-8"))
        records = [CertRecord.from_json(item) for item in data["certificates"]]
        return Index(records=records, crl_number=int(data.get("crl_number", 0)))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"{path} is damaged ({exc}); restore it from a backup (the certificates themselves "
            "are unaffected)"
        ) from exc


def write_index(directory: Path, index: Index) -> None:
    data = {
        "format": "aiodicom-pki-index",
        "version": 1,
        "crl_number": index.crl_number,
        "certificates": [r.to_json() for r in index.records],
    }
    write_file(directory / INDEX_NAME, (json.dumps(data, indent=2) + "\n").encode(), force=True)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on the CA directory (two `pki` commands never interleave)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = os.open(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_file(path: Path, data: bytes, *, force: bool, mode: int = 0o644) -> None:
    """Write `data` to `path` atomically with `mode`; refuse to replace it unless `force`.

    The content goes to a temporary file created with O_EXCL and `mode` (so a private key is
    never readable by others, not even for an instant), then is linked or moved into place.
    """
    if not force and path.exists():
        raise ConfigurationError(f"{path} already exists; remove it or use --force to replace it")
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if force:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # atomic "create, do not overwrite"
            except FileExistsError:
                raise ConfigurationError(
                    f"{path} already exists; remove it or use --force to replace it"
                ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def refuse_existing(paths: Sequence[Path], *, force: bool) -> None:
    """Fail before doing any work when an output exists and `force` is not set."""
    if force:
        return
    for path in paths:
        if path.exists():
            raise ConfigurationError(
                f"{path} already exists; remove it or use --force to replace it"
            )


def generate_key(key_type: str) -> PrivateKey:
    """EC P-256 ("ec", the default) or RSA 3072 ("rsa"); both meet PS3.15 B.13 and RFC 9325."""
    if key_type == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    raise ConfigurationError(f"unknown key type {key_type!r}; use one of {', '.join(KEY_TYPES)}")


def write_private_key(path: Path, key: PrivateKey, *, force: bool) -> None:
    """PKCS#8 PEM, unencrypted (servers start unattended), mode 0600."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_file(path, pem, force=force, mode=0o600)


def load_private_key(path: Path) -> PrivateKey:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"private key {path} not found") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"{path} is not an unencrypted PEM private key ({exc})"
        ) from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ConfigurationError(f"{path} holds a {type(key).__name__}; use an EC or RSA key")
    return key


def cert_pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def read_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a PEM file; ConfigurationError if there is none or it is damaged."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigurationError(f"certificate file {path} not found") from None
    except IsADirectoryError:
        raise ConfigurationError(f"{path} is a directory, not a certificate file") from None
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ConfigurationError(
            f"{path} is not a PEM certificate (no '-----BEGIN CERTIFICATE-----' line); "
            "give the .crt file written by `aiodicom pki issue`"
        )
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigurationError(f"{path} holds a damaged PEM certificate ({exc})") from exc


def utcnow() -> datetime:
    return datetime.now(UTC)
