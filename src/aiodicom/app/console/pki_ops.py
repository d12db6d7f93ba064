"""What the console does to the CA directory, on top of `aiodicom.app.pki` (never beside it).

Enrolment makes the key in the console, packs it once (PKCS#12 with a passphrase shown once,
or a zip of the PEM bundle that `export_bundle` writes) and deletes it from disk at once: the
only copy is the one download. The certificate itself stays under DIR/console/certs/.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shlex
import tempfile
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.serialization import pkcs12

from aiodicom.aio.tls import load_pem_crls, validate_ae_title
from aiodicom.app.console.queue import RequestQueue
from aiodicom.app.pki.bundle import DICOM_TLS_PORT, export_bundle
from aiodicom.app.pki.ca import (
    LEAF_DAYS,
    init_ca,
    issue_client,
    organizations,
    sign_client_request,
)
from aiodicom.app.pki.files import (
    CertKind,
    CertRecord,
    load_private_key,
    read_certificates,
    utcnow,
    write_file,
)
from aiodicom.app.pki.revoke import ca_certificates, list_certs, revoke_serial, write_crl
from aiodicom.errors import ConfigurationError

__all__ = ["Download", "Enrolment", "PKI", "certificate_row"]

EXPIRING = timedelta(days=30)
DOWNLOAD_SECONDS = 600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Download:
    """One prepared download, handed out once."""

    filename: str
    content_type: str
    data: bytes
    serial: str
    expires: float
    owner: str = ""
    """The administrator it was made for ("": anyone with the token)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Enrolment:
    """What the page shows after an enrolment (the passphrase only this once)."""

    record: CertRecord
    token: str
    filename: str
    passphrase: str | None
    commands: dict[str, str] = field(default_factory=dict)


def certificate_row(record: CertRecord, *, now: datetime | None = None,
                    reason: str | None = None) -> dict[str, Any]:
    """A certificate as the page and /api/certificates show it."""
    now = now or utcnow()
    if record.revoked:
        status = "revoked"
    elif record.not_after <= now:
        status = "expired"
    else:
        status = "valid"
    return {
        "serial": format(record.serial, "X"),
        "kind": record.kind.value,
        "subject": record.subject,
        "organization": record.org or record.signed_by,
        "groups": list(record.groups),
        "ae_titles": list(record.ae_titles),
        "names": list(record.dns_names + record.ip_addresses),
        "fingerprint_sha256": record.fingerprint_sha256,
        "not_after": record.not_after.isoformat(timespec="seconds"),
        "status": status,
        "expiring": status == "valid" and record.not_after - now <= EXPIRING,
        "revoked_at": record.revoked_at.isoformat(timespec="seconds")
        if record.revoked_at else None,
        "revocation_reason": reason,
    }


def requested_ae_titles(csr_pem: bytes) -> list[str]:
    """The AE titles a CSR asks for: its ``dicom-ae:`` SAN URIs, else its subject CN."""
    from urllib.parse import unquote

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ConfigurationError(f"not a PEM certificate signing request ({exc})") from exc
    titles: list[str] = []
    try:
        san = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        titles.extend(unquote(uri[len("dicom-ae:"):]).strip(" ")
                      for uri in san.get_values_for_type(x509.UniformResourceIdentifier)
                      if uri.lower().startswith("dicom-ae:"))
    except x509.ExtensionNotFound:
        pass
    if not titles:
        titles = [str(a.value) for a in csr.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return [t for t in titles if t]


def split_list(text: str) -> list[str]:
    """"CT01, CT02" or one per line -> ["CT01", "CT02"] (empty items dropped)."""
    return [p.strip() for p in text.replace("\n", ",").split(",") if p.strip()]


class PKI:
    """The CA directory as the console sees it."""

    def __init__(self, directory: Path, *, dicom_host: str = "HOST",
                 dicom_port: int = DICOM_TLS_PORT, called_ae: str = "AIODICOM") -> None:
        self.directory = Path(directory)
        self.dicom_host, self.dicom_port, self.called_ae = dicom_host, dicom_port, called_ae
        self.state = self.directory / "console"
        self.state.mkdir(mode=0o700, exist_ok=True)
        (self.state / "certs").mkdir(mode=0o700, exist_ok=True)
        self.downloads: dict[str, Download] = {}
        self.queue = RequestQueue(self.state)

    # -- reading ----------------------------------------------------------------------------

    def records(self) -> list[CertRecord]:
        return list_certs(self.directory)

    def find(self, serial_hex: str) -> CertRecord:
        try:
            serial = int(serial_hex, 16)
        except ValueError:
            raise ConfigurationError(f"{serial_hex!r} is not a certificate serial (hex)") from None
        for record in self.records():
            if record.serial == serial:
                return record
        raise ConfigurationError(f"no certificate with serial {serial_hex}")

    def rows(self, *, org: str | None = None) -> list[dict[str, Any]]:
        reasons = self._reasons()
        now = utcnow()
        rows = [certificate_row(r, now=now, reason=reasons.get(format(r.serial, "X")))
                for r in self.records()]
        if org is not None:
            rows = [r for r in rows if r["organization"] == org]
        return rows

    def organizations(self) -> list[dict[str, Any]]:
        """Organizations (intermediates, or named in certificates) with groups and counts."""
        names = set(organizations(self.directory))
        records = [r for r in self.records() if r.kind is CertKind.CLIENT]
        names.update(r.org for r in records if r.org)
        result = []
        for name in sorted(names):
            mine = [r for r in records if r.org == name]
            result.append({
                "name": name,
                "intermediate": name in organizations(self.directory),
                "groups": sorted({g for r in mine for g in r.groups}),
                "ae_titles": sorted({a for r in mine if not r.revoked for a in r.ae_titles}),
                "certificates": len(mine),
                "valid": sum(1 for r in mine if not r.revoked and r.not_after > utcnow()),
            })
        return result

    def owner_of(self, ae_title: str) -> str | None:
        """The organization whose valid certificate binds `ae_title` (None: nobody's yet)."""
        now = utcnow()
        for record in self.records():
            if (record.kind is CertKind.CLIENT and not record.revoked and record.not_after > now
                    and ae_title in record.ae_titles):
                return record.org or ""
        return None

    def check_titles(self, titles: list[str], org: str | None) -> list[str]:
        """Validated AE titles; refuses one that a valid certificate of another
        organization already binds (an organization owns the AE titles it enrolled)."""
        result = []
        for title in titles:
            title = validate_ae_title(title)
            owner = self.owner_of(title)
            if owner is not None and owner != (org or ""):
                raise ConfigurationError(
                    f"AE title {title!r} belongs to {owner or 'no organization'!r} (a valid "
                    f"certificate binds it); revoke that certificate first")
            result.append(title)
        if not result:
            raise ConfigurationError("give at least one AE title")
        return result

    # -- changing ---------------------------------------------------------------------------

    def enrol(self, *, ae_titles: list[str], org: str | None, groups: list[str],
              days: int = LEAF_DAYS, fmt: str = "pem", key_type: str = "ec",
              now: float = 0.0, owner: str = "") -> Enrolment:
        """Issue a client certificate with a new key and prepare its one download."""
        if fmt not in ("pem", "p12"):
            raise ConfigurationError(f"format must be 'pem' or 'p12', not {fmt!r}")
        if not 1 <= days <= 3650:
            raise ConfigurationError(f"validity must be 1 to 3650 days, not {days}")
        titles = self.check_titles(ae_titles, org)
        stem = f"{''.join(c for c in titles[0] if c.isalnum()) or 'client'}-{secrets.token_hex(3)}"
        out = self.state / "certs" / stem
        issued = issue_client(self.directory, ae_titles=titles, org=org or None, groups=groups,
                              out=out, key_type=key_type, days=days)
        try:
            if fmt == "p12":
                passphrase: str | None = secrets.token_urlsafe(15)
                assert passphrase is not None
                data = self._pkcs12(issued.cert, issued.key, stem, passphrase)
                filename, ctype = f"{stem}.p12", "application/x-pkcs12"
            else:
                passphrase = None
                data = self._pem_zip(issued.cert, issued.key)
                filename, ctype = f"{stem}.zip", "application/zip"
        finally:
            os.unlink(issued.key)  # the download is the only copy of the key
        self.crl_covers_issuers()
        token = secrets.token_urlsafe(24)
        serial = format(issued.record.serial, "X")
        self.downloads[token] = Download(filename=filename, content_type=ctype, data=data,
                                         serial=serial, expires=now + DOWNLOAD_SECONDS,
                                         owner=owner)
        return Enrolment(record=issued.record, token=token, filename=filename,
                         passphrase=passphrase, commands=self.commands(issued.record, stem, fmt))

    def sign_csr(self, csr_pem: bytes, *, ae_titles: list[str], org: str | None,
                 groups: list[str], days: int = LEAF_DAYS, now: float = 0.0,
                 owner: str = "") -> Enrolment:
        """Sign a modality's CSR; without `ae_titles`, those it asks for (its ``dicom-ae:``
        SAN URIs, else its CN). The download: its certificate (+ chain) and the root CA."""
        if not ae_titles:
            ae_titles = requested_ae_titles(csr_pem)
        if not 1 <= days <= 3650:
            raise ConfigurationError(f"validity must be 1 to 3650 days, not {days}")
        titles = self.check_titles(ae_titles, org)
        stem = f"{''.join(c for c in titles[0] if c.isalnum()) or 'client'}-{secrets.token_hex(3)}"
        issued = sign_client_request(self.directory, csr_pem, ae_titles=titles, org=org or None,
                                     groups=groups, out=self.state / "certs" / stem, days=days)
        self.crl_covers_issuers()
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr(f"{stem}.crt", issued.cert.read_bytes())
            zf.writestr("ca.crt", (self.directory / "ca.crt").read_bytes())
        token = secrets.token_urlsafe(24)
        serial = format(issued.record.serial, "X")
        self.downloads[token] = Download(filename=f"{stem}-certificate.zip",
                                         content_type="application/zip",
                                         data=buffer.getvalue(), serial=serial,
                                         expires=now + DOWNLOAD_SECONDS, owner=owner)
        commands = self.commands(issued.record, stem, "pem")
        commands = {k: v.replace(f"{stem}.key", "YOUR.key") for k, v in commands.items()}
        return Enrolment(record=issued.record, token=token, filename=f"{stem}-certificate.zip",
                         passphrase=None, commands=commands)

    def take_download(self, token: str, now: float, owner: str = "") -> Download | None:
        """The prepared download for `token`, removed (a second request gets nothing); None
        as well for another administrator than the one it was made for (it stays)."""
        self.sweep_downloads(now)
        download = self.downloads.get(token)
        if download is None or (download.owner and download.owner != owner):
            return None
        return self.downloads.pop(token)

    def sweep_downloads(self, now: float) -> list[Download]:
        """Forget the downloads unclaimed past their time (their keys with them); the ones
        forgotten. The console calls it every minute, and before each download."""
        gone = [t for t, d in self.downloads.items() if d.expires < now]
        return [self.downloads.pop(t) for t in gone]

    def _pkcs12(self, cert: Path, key: Path, name: str, passphrase: str) -> bytes:
        chain = read_certificates(cert)
        root = read_certificates(self.directory / "ca.crt")[0]
        encryption = (
            serialization.PrivateFormat.PKCS12.encryption_builder()
            .kdf_rounds(100_000)
            .key_cert_algorithm(pkcs12.PBES.PBESv2SHA256AndAES256CBC)
            .hmac_hash(hashes.SHA256())
            .build(passphrase.encode())
        )
        return pkcs12.serialize_key_and_certificates(
            name.encode(), load_private_key(key), chain[0], [*chain[1:], root], encryption)

    def _pem_zip(self, cert: Path, key: Path) -> bytes:
        """`export_bundle`'s directory (cert + chain, key, root CA, README), zipped."""
        with tempfile.TemporaryDirectory(dir=self.state) as tmp:
            bundle = export_bundle(self.directory, cert, Path(tmp) / "b", key=key,
                                   host=self.dicom_host, port=self.dicom_port,
                                   called_ae=self.called_ae)
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
                for path in (bundle.cert, bundle.key, bundle.ca, bundle.readme):
                    info = zipfile.ZipInfo(path.name, date_time=(2020, 1, 1, 0, 0, 0))
                    info.external_attr = (0o600 if path == bundle.key else 0o644) << 16
                    info.compress_type = zipfile.ZIP_DEFLATED
                    zf.writestr(info, path.read_bytes())
        return buffer.getvalue()

    def commands(self, record: CertRecord, stem: str, fmt: str) -> dict[str, str]:
        """Ready-to-paste command lines for the files of the download."""
        q = shlex.quote
        calling = record.ae_titles[0]
        host, port, called = q(self.dicom_host), self.dicom_port, q(self.called_ae)
        crt, key = q(f"{stem}.crt"), q(f"{stem}.key")
        lines: dict[str, str] = {}
        if fmt == "p12":
            p12 = q(f"{stem}.p12")
            lines["unpack"] = (f"openssl pkcs12 -in {p12} -clcerts -nokeys -out {crt} && "
                               f"openssl pkcs12 -in {p12} -nocerts -noenc -out {key} && "
                               f"openssl pkcs12 -in {p12} -cacerts -nokeys -out ca.crt")
        aes = f"-aet {q(calling)} -aec {called}"
        lines["echoscu"] = f"echoscu {aes} +tls {key} {crt} +cf ca.crt {host} {port}"
        lines["storescu"] = f"storescu {aes} +tls {key} {crt} +cf ca.crt {host} {port} FILE"
        tls = f"--tls --cert {crt} --key {key} --ca ca.crt"
        aio = f"--calling-ae {q(calling)} --called-ae {called}"
        lines["aiodicom"] = f"aiodicom store {host} {port} FILE {aio} {tls}"
        return lines

    def revoke(self, serial_hex: str, reason: str, code: str | None = None) -> CertRecord:
        """Revoke by serial (with an RFC 5280 reason `code` for the CRL entry), note the
        administrator's reason, republish DIR/crl.pem."""
        record = self.find(serial_hex)
        if record.kind is not CertKind.CLIENT and record.kind is not CertKind.SERVER:
            raise ConfigurationError("intermediates are revoked with `aiodicom pki revoke`")
        record = revoke_serial(self.directory, record.serial, reason=code)
        reasons = self._reasons()
        reasons.setdefault(format(record.serial, "X"), reason)
        write_file(self.state / "revocations.json",
                   (json.dumps(reasons, indent=2) + "\n").encode(), force=True, mode=0o600)
        write_crl(self.directory)
        return record

    def add_organization(self, name: str) -> None:
        """An intermediate CA for `name`; the CRL is republished so it covers it at once."""
        init_ca(self.directory, org=name)
        write_crl(self.directory)

    def crl_covers_issuers(self) -> bool:
        """Republish DIR/crl.pem when a CA of the directory has no CRL in it (an organization
        added with `pki init --org` after the last CRL): servers check CRLs along the whole
        chain and would refuse every certificate that CA signs. True if it was republished."""
        try:
            crls = load_pem_crls((self.directory / "crl.pem").read_bytes())
        except (OSError, ValueError):
            crls = []
        issuers = {c.issuer for c in crls}
        if all(cert.subject in issuers for _o, _p, cert in ca_certificates(self.directory)):
            return False
        write_crl(self.directory)
        return True

    def _reasons(self) -> dict[str, str]:
        path = self.state / "revocations.json"
        try:
            data = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
