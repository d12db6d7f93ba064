"""Revocation, CRL publication and listing for the aiodicom CA.

DIR/crl.pem holds one CRL per CA of the directory (the root's first, then each organization
intermediate's), so a server can check the leaf (VERIFY_CRL_CHECK_LEAF) and, because the
root's CRL is there too, the whole chain (VERIFY_CRL_CHECK_CHAIN): see aiodicom.aio.tls.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization

from aiodicom.app.pki._defaults import CRL_DAYS
from aiodicom.app.pki.ca import (
    load_ca_pair,
    org_dir,
    organizations,
    record_certificate,
    require_ca,
)
from aiodicom.app.pki.files import (
    CertKind,
    CertRecord,
    locked,
    read_certificates,
    read_index,
    utcnow,
    write_file,
    write_index,
)
from aiodicom.errors import ConfigurationError

CRL_NAME = "crl.pem"


def ca_certificates(directory: Path) -> list[tuple[str | None, Path, x509.Certificate]]:
    """(organization or None for the root, path, certificate) of every CA in `directory`."""
    require_ca(directory)
    result: list[tuple[str | None, Path, x509.Certificate]] = [
        (None, directory / "ca.crt", read_certificates(directory / "ca.crt")[0])
    ]
    for org in organizations(directory):
        path = org_dir(directory, org) / "ca.crt"
        result.append((org, path, read_certificates(path)[0]))
    return result


def find_issuer(
    directory: Path, cert: x509.Certificate
) -> tuple[str | None, x509.Certificate] | None:
    """Which CA of `directory` signed `cert` (checked by signature, not just by name)."""
    for org, _path, ca in ca_certificates(directory):
        if cert.issuer != ca.subject:
            continue
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return org, ca
    return None


def _kind_of(cert: x509.Certificate) -> CertKind:
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            return CertKind.INTERMEDIATE
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if x509.oid.ExtendedKeyUsageOID.SERVER_AUTH in eku:
            return CertKind.SERVER
    except x509.ExtensionNotFound:
        pass
    return CertKind.CLIENT


def revoke(directory: Path, certfile: Path, *, when: datetime | None = None) -> CertRecord:
    """Mark the certificate in `certfile` revoked in DIR/index.json and return its record.

    Only certificates this CA signed can be revoked (checked by signature). Revoking twice is
    harmless. The revocation reaches servers through the next `write_crl` (the `pki revoke`
    command writes it at once).
    """
    cert = read_certificates(certfile)[0]
    require_ca(directory)
    with locked(directory):
        found = find_issuer(directory, cert)
        if found is None:
            raise ConfigurationError(
                f"{certfile} (subject {cert.subject.rfc4514_string()!r}, issuer "
                f"{cert.issuer.rfc4514_string()!r}) was not issued by the CA in {directory}; "
                "nothing was revoked (revoke it with the CA that issued it)"
            )
        signed_by, issuer = found
        if issuer == cert:
            raise ConfigurationError(
                f"{certfile} is the root CA itself, which cannot be revoked; create a new CA "
                "with `aiodicom pki init NEWDIR` and re-issue instead"
            )
        index = read_index(directory)
        if index.find(cert.serial_number) is None:
            # Signed by us but missing from the index (restored backup): record it first.
            record_certificate(directory, cert, _kind_of(cert), signed_by=signed_by, path=certfile)
            index = read_index(directory)
        record = index.find(cert.serial_number)
        assert record is not None
        if record.revoked:
            return record
        record = index.mark_revoked(cert.serial_number, when or utcnow())
        write_index(directory, index)
    return record


_REASON_FLAGS = {
    "unspecified": x509.ReasonFlags.unspecified,
    "keyCompromise": x509.ReasonFlags.key_compromise,
    "affiliationChanged": x509.ReasonFlags.affiliation_changed,
    "superseded": x509.ReasonFlags.superseded,
    "cessationOfOperation": x509.ReasonFlags.cessation_of_operation,
    "certificateHold": x509.ReasonFlags.certificate_hold,
}
REASON_CODES = tuple(_REASON_FLAGS)
"""RFC 5280 5.3.1 CRLReason names `revoke_serial` accepts (written into the CRL entry)."""

CRL_BACKDATE = timedelta(minutes=5)
"""How far a CRL's lastUpdate is set in the past (the certificates' clock-skew margin)."""


def write_crl(directory: Path, *, days: int = CRL_DAYS, now: datetime | None = None) -> Path:
    """Write DIR/crl.pem: a CRL signed by each CA of the directory, valid for `days`.

    Servers refuse every client once a CRL's next_update has passed, so publish a new one
    well before (a daily `aiodicom pki crl DIR` from cron; servers reload it within seconds).
    lastUpdate is backdated by `CRL_BACKDATE` as certificates are: a CA whose clock runs
    ahead of a server's would otherwise publish a CRL "not yet valid", which OpenSSL answers
    by refusing every client.
    """
    if days < 1:
        raise ConfigurationError(f"CRL validity must be at least 1 day, not {days}")
    now = now or utcnow()
    require_ca(directory)
    with locked(directory):
        index = read_index(directory)
        index.crl_number += 1
        pems: list[bytes] = []
        for org, path, _cert in ca_certificates(directory):
            ca_cert, ca_key = load_ca_pair(path)
            builder = (
                x509.CertificateRevocationListBuilder()
                .issuer_name(ca_cert.subject)
                .last_update(now - CRL_BACKDATE)
                .next_update(now + timedelta(days=days))
                .add_extension(x509.CRLNumber(index.crl_number), critical=False)
                .add_extension(
                    x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                    critical=False,
                )
            )
            for record in index.records:
                if record.revoked and record.signed_by == org:
                    entry = (
                        x509.RevokedCertificateBuilder()
                        .serial_number(record.serial)
                        .revocation_date(record.revoked_at or now)
                    )
                    if record.revocation_reason in REASON_CODES:
                        flag = _REASON_FLAGS[record.revocation_reason]
                        entry = entry.add_extension(x509.CRLReason(flag), critical=False)
                    builder = builder.add_revoked_certificate(entry.build())
            crl = builder.sign(ca_key, hashes.SHA256())
            pems.append(crl.public_bytes(serialization.Encoding.PEM))
        out = directory / CRL_NAME
        write_file(out, b"".join(pems), force=True)
        write_index(directory, index)
    return out


def list_certs(directory: Path) -> list[CertRecord]:
    """Every certificate the CA issued (intermediates included), in issue order."""
    require_ca(directory)
    return list(read_index(directory).records)


def revoke_serial(directory: Path, serial: int, *, when: datetime | None = None,
                  reason: str | None = None) -> CertRecord:
    """Mark the certificate with `serial` revoked in DIR/index.json (no certificate file
    needed: the console revokes what the index lists), with an RFC 5280 reason code from
    `REASON_CODES` if given. Revoking twice is harmless. The revocation reaches servers
    through the next `write_crl`."""
    if reason is not None and reason not in REASON_CODES:
        raise ConfigurationError(f"revocation reason {reason!r} is not one of "
                                 f"{', '.join(REASON_CODES)}")
    require_ca(directory)
    with locked(directory):
        index = read_index(directory)
        record = index.find(serial)
        if record is None:
            raise ConfigurationError(
                f"no certificate with serial {serial:X} in {directory}/index.json; nothing "
                "was revoked")
        if record.revoked:
            return record
        record = index.mark_revoked(serial, when or utcnow(), reason)
        write_index(directory, index)
    return record
