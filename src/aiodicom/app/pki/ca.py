"""The aiodicom certificate authority: a root, optional per-organization intermediates,
server and client certificates that carry AE titles, revocation and CRLs.

Layout of a CA directory (everything written atomically; keys mode 0600)::

    DIR/ca.crt, DIR/ca.key              the root (self-signed, 10 years)
    DIR/orgs/NAME/ca.crt, ca.key        an organization's intermediate (5 years)
    DIR/index.json                      every issued certificate, revoked or not
    DIR/crl.pem                         one CRL per CA above, concatenated

The binding of AE titles (``dicom-ae:`` SAN URIs) is described in docs/security.md.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aiodicom.aio.tls import ae_title_to_uri, validate_ae_title
from aiodicom.app.pki._defaults import LEAF_DAYS as LEAF_DAYS
from aiodicom.app.pki.files import (
    CertKind,
    CertRecord,
    PrivateKey,
    cert_pem,
    generate_key,
    load_private_key,
    locked,
    read_certificates,
    read_index,
    refuse_existing,
    utcnow,
    write_file,
    write_index,
    write_private_key,
)
from aiodicom.errors import ConfigurationError

ROOT_DAYS = 3650
ORG_DAYS = 1825
_SKEW = timedelta(minutes=5)
"""Certificates start a little in the past so a peer whose clock lags accepts them."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CA:
    """A CA directory after `init_ca`."""

    directory: Path
    cert: Path
    """The root certificate: the trust anchor servers and clients load with --ca."""
    key: Path
    subject: str
    not_after: datetime
    organizations: tuple[str, ...]
    """Organizations that have an intermediate CA under DIR/orgs/."""


@dataclass(frozen=True, slots=True, kw_only=True)
class IssuedCertificate:
    """Files and facts of a certificate just issued."""

    cert: Path
    """PREFIX.crt: the certificate, followed by its intermediate when one signed it."""
    key: Path
    """PREFIX.key, mode 0600."""
    record: CertRecord


def prefix_paths(out: Path) -> tuple[Path, Path]:
    """PREFIX -> (PREFIX.crt, PREFIX.key); the prefix may itself contain dots."""
    return Path(f"{out}.crt"), Path(f"{out}.key")


def _check_org_name(org: str) -> str:
    name = org.strip()
    if not name or len(name) > 64:
        raise ConfigurationError(f"organization {org!r} must be 1 to 64 characters")
    if name.startswith(".") or any(c in name for c in "/\\\0") or not name.isprintable():
        raise ConfigurationError(
            f"organization {org!r} may not start with '.' or contain '/', '\\' or control "
            "characters (it names a directory under DIR/orgs/)"
        )
    return name


def org_dir(directory: Path, org: str) -> Path:
    return directory / "orgs" / _check_org_name(org)


def organizations(directory: Path) -> tuple[str, ...]:
    root = directory / "orgs"
    if not root.is_dir():
        return ()
    return tuple(sorted(p.parent.name for p in root.glob("*/ca.crt")))


def require_ca(directory: Path) -> None:
    if not (directory / "ca.crt").is_file() or not (directory / "ca.key").is_file():
        raise ConfigurationError(
            f"{directory} is not an initialised aiodicom CA (no ca.crt/ca.key there); "
            f"run `aiodicom pki init {directory}` first"
        )


def check_not_expired(cert: x509.Certificate, path: Path, now: datetime) -> None:
    if cert.not_valid_after_utc <= now:
        raise ConfigurationError(
            f"the CA certificate {path} expired on {cert.not_valid_after_utc:%Y-%m-%d}; "
            "create a new CA with `aiodicom pki init NEWDIR` and re-issue the certificates"
        )
    if cert.not_valid_before_utc > now:
        raise ConfigurationError(
            f"the CA certificate {path} is not valid before {cert.not_valid_before_utc}; "
            "check this machine's clock"
        )


def load_ca_pair(cert_path: Path) -> tuple[x509.Certificate, PrivateKey]:
    cert = read_certificates(cert_path)[0]
    return cert, load_private_key(cert_path.with_name("ca.key"))


def _ski(key: PrivateKey) -> x509.SubjectKeyIdentifier:
    return x509.SubjectKeyIdentifier.from_public_key(key.public_key())


def _ca_certificate(
    *,
    subject: x509.Name,
    key: PrivateKey,
    issuer: tuple[x509.Certificate, PrivateKey] | None,
    path_length: int,
    not_before: datetime,
    not_after: datetime,
) -> x509.Certificate:
    issuer_name = issuer[0].subject if issuer else subject
    issuer_key = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=path_length), critical=True)
        .add_extension(_key_usage(ca=True, rsa_key=False), critical=True)
        .add_extension(_ski(key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _key_usage(*, ca: bool, rsa_key: bool) -> x509.KeyUsage:
    """A CA certificate signs certificates and CRLs only (keyCertSign, cRLSign): without
    digitalSignature OpenSSL refuses it as a TLS client or server certificate, so a CA key
    cannot stand in for an end entity (issue 17 item 9)."""
    return x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=rsa_key and not ca,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _ca_info(directory: Path) -> CA:
    cert = read_certificates(directory / "ca.crt")[0]
    return CA(
        directory=directory,
        cert=directory / "ca.crt",
        key=directory / "ca.key",
        subject=cert.subject.rfc4514_string(),
        not_after=cert.not_valid_after_utc,
        organizations=organizations(directory),
    )


def init_ca(
    directory: Path,
    *,
    org: str | None = None,
    key_type: str = "ec",
    force: bool = False,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> CA:
    """Create the root CA in `directory`, and with `org` an intermediate for that organization.

    On a directory that already holds a root, `org` adds the intermediate only. Without `org`
    an existing root is an error unless `force` (which replaces it and invalidates everything
    it issued). `not_before`/`not_after` override the validity (for tests).
    """
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    now = utcnow()
    start = not_before or now - _SKEW
    with locked(directory):
        has_root = (directory / "ca.crt").exists()
        if has_root and org is None and not force:
            raise ConfigurationError(
                f"{directory} already holds a CA; use --org NAME to add an organization, "
                "or --force to replace the CA (every certificate it issued stops working)"
            )
        if not has_root or (force and org is None):
            key = generate_key(key_type)
            name = x509.Name(
                [x509.NameAttribute(NameOID.COMMON_NAME, f"aiodicom CA {secrets.token_hex(4)}")]
            )
            cert = _ca_certificate(
                subject=name, key=key, issuer=None, path_length=1, not_before=start,
                not_after=not_after or now + timedelta(days=ROOT_DAYS),
            )
            write_private_key(directory / "ca.key", key, force=True)
            write_file(directory / "ca.crt", cert_pem(cert), force=True)
            index = read_index(directory)
            index.records.clear()
            write_index(directory, index)
        if org is not None:
            _init_org(directory, org, key_type=key_type, force=force, start=start,
                      not_after=not_after)
    return _ca_info(directory)


def _init_org(
    directory: Path, org: str, *, key_type: str, force: bool, start: datetime,
    not_after: datetime | None,
) -> None:
    org = _check_org_name(org)
    target = org_dir(directory, org)
    refuse_existing([target / "ca.crt"], force=force)
    now = utcnow()
    root = load_ca_pair(directory / "ca.crt")
    check_not_expired(root[0], directory / "ca.crt", now)
    key = generate_key(key_type)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, org),
            x509.NameAttribute(NameOID.COMMON_NAME, f"aiodicom {org} CA"),
        ]
    )
    end = min(not_after or now + timedelta(days=ORG_DAYS), root[0].not_valid_after_utc)
    cert = _ca_certificate(
        subject=name, key=key, issuer=root, path_length=0, not_before=start, not_after=end
    )
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_private_key(target / "ca.key", key, force=True)
    write_file(target / "ca.crt", cert_pem(cert), force=True)
    record_certificate(
        directory, cert, CertKind.INTERMEDIATE, signed_by=None, org=org, path=target / "ca.crt"
    )


def record_certificate(
    directory: Path, cert: x509.Certificate, kind: CertKind, *, signed_by: str | None,
    path: Path, org: str | None = None, groups: Sequence[str] = (),
) -> CertRecord:
    from aiodicom.aio.tls import identity_from_certificate

    ident = identity_from_certificate(cert)
    dns: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        dns = tuple(san.get_values_for_type(x509.DNSName))
        ips = tuple(str(a) for a in san.get_values_for_type(x509.IPAddress))
    except x509.ExtensionNotFound:
        pass
    record = CertRecord(
        serial=cert.serial_number, kind=kind, subject=ident.subject, signed_by=signed_by,
        ae_titles=ident.ae_titles, dns_names=dns, ip_addresses=ips, org=org,
        groups=tuple(groups), not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc, fingerprint_sha256=ident.fingerprint_sha256,
        path=str(path.resolve()),
    )
    index = read_index(directory)
    index.records.append(record)
    write_index(directory, index)
    return record


def _issuer_for(
    directory: Path, org: str | None, now: datetime
) -> tuple[x509.Certificate, PrivateKey, list[x509.Certificate], str | None]:
    """(issuer cert, issuer key, chain to append to the leaf, signing organization)."""
    require_ca(directory)
    root_cert, root_key = load_ca_pair(directory / "ca.crt")
    check_not_expired(root_cert, directory / "ca.crt", now)
    if org is not None:
        path = org_dir(directory, org) / "ca.crt"
        if path.is_file():
            cert, key = load_ca_pair(path)
            check_not_expired(cert, path, now)
            record = read_index(directory).find(cert.serial_number)
            if record is not None and record.revoked:
                raise ConfigurationError(
                    f"the intermediate CA of {org!r} ({path}) is revoked; create a new one with "
                    f"`aiodicom pki init {directory} --org {org!r} --force`"
                )
            return cert, key, [cert], org
    return root_cert, root_key, [], None


def _issue(
    directory: Path,
    *,
    kind: CertKind,
    subject: x509.Name,
    san: list[x509.GeneralName],
    org: str | None,
    groups: Sequence[str],
    out: Path,
    key_type: str,
    days: int,
    force: bool,
    not_before: datetime | None,
    not_after: datetime | None,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey | None = None,
) -> IssuedCertificate:
    """Sign a leaf; with `public_key` (a CSR's) no key is made and PREFIX.key not written."""
    cert_path, key_path = prefix_paths(out)
    refuse_existing([cert_path] if public_key else [cert_path, key_path], force=force)
    if days < 1:
        raise ConfigurationError(f"--days must be at least 1, not {days}")
    now = utcnow()
    require_ca(directory)
    with locked(directory):
        issuer, issuer_key, chain, signed_by = _issuer_for(directory, org, now)
        key = generate_key(key_type) if public_key is None else None
        pub = key.public_key() if key is not None else public_key
        assert pub is not None
        end = min(not_after or now + timedelta(days=days), issuer.not_valid_after_utc)
        eku = ExtendedKeyUsageOID.SERVER_AUTH if kind is CertKind.SERVER else (
            ExtendedKeyUsageOID.CLIENT_AUTH
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer.subject)
            .public_key(pub)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - _SKEW)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                _key_usage(ca=False, rsa_key=isinstance(pub, rsa.RSAPublicKey)), critical=True
            )
            .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
            .add_extension(x509.SubjectAlternativeName(san), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(pub), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                critical=False,
            )
            .sign(issuer_key, hashes.SHA256())
        )
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        if key is not None:
            write_private_key(key_path, key, force=force)
        write_file(cert_path, cert_pem(cert, *chain), force=force)
        record = record_certificate(
            directory, cert, kind, signed_by=signed_by, path=cert_path, org=org, groups=groups
        )
    return IssuedCertificate(cert=cert_path, key=key_path, record=record)


def issue_server(
    directory: Path,
    *,
    name: str,
    ips: Sequence[str] = (),
    out: Path,
    key_type: str = "ec",
    days: int = LEAF_DAYS,
    force: bool = False,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> IssuedCertificate:
    """Issue a TLS server certificate (EKU serverAuth) for host `name` and addresses `ips`.

    `name` goes into the subject CN and a SAN dNSName (an IP address literal becomes a SAN
    iPAddress instead); each of `ips` becomes a SAN iPAddress. Writes PREFIX.crt/PREFIX.key.
    """
    host = name.strip()
    if not host:
        raise ConfigurationError("--name must be the server's host name or IP address")
    addresses: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    san: list[x509.GeneralName] = []
    try:
        addresses.append(ipaddress.ip_address(host))
    except ValueError:
        san.append(x509.DNSName(host))
    for ip in ips:
        try:
            address = ipaddress.ip_address(ip.strip())
        except ValueError:
            raise ConfigurationError(f"--ip {ip!r} is not an IPv4 or IPv6 address") from None
        if address not in addresses:
            addresses.append(address)
    san.extend(x509.IPAddress(a) for a in addresses)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    return _issue(
        directory, kind=CertKind.SERVER, subject=subject, san=san, org=None, groups=(),
        out=out, key_type=key_type, days=days, force=force, not_before=not_before,
        not_after=not_after,
    )


def issue_client(
    directory: Path,
    *,
    ae_titles: Sequence[str],
    org: str | None = None,
    groups: Sequence[str] = (),
    out: Path,
    key_type: str = "ec",
    days: int = LEAF_DAYS,
    force: bool = False,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> IssuedCertificate:
    """Issue a TLS client certificate (EKU clientAuth) bound to `ae_titles`.

    Subject: CN = the first AE title, O = `org`, one OU per group. Every AE title is a SAN URI
    ``dicom-ae:<percent-encoded>``. With `org`, the organization's intermediate signs it when
    one exists (and PREFIX.crt carries that intermediate after the certificate).
    """
    subject, san, org, group_names = _client_names(ae_titles, org, groups)
    return _issue(
        directory, kind=CertKind.CLIENT, subject=subject, san=san, org=org,
        groups=group_names, out=out, key_type=key_type, days=days, force=force,
        not_before=not_before, not_after=not_after,
    )


def _client_names(
    ae_titles: Sequence[str], org: str | None, groups: Sequence[str]
) -> tuple[x509.Name, list[x509.GeneralName], str | None, list[str]]:
    """(subject, SAN, organization, groups) of a client certificate: CN = the first AE
    title, O = `org`, one OU per group, each AE title a ``dicom-ae:`` SAN URI."""
    titles: list[str] = []
    for ae in ae_titles:
        title = validate_ae_title(ae)
        if title not in titles:
            titles.append(title)
    if not titles:
        raise ConfigurationError("give at least one --ae-title for a client certificate")
    attrs = []  # most significant first: O, OU..., CN
    if org is not None:
        org = _check_org_name(org)
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    group_names = []
    for group in groups:
        value = group.strip()
        if not value or len(value) > 64 or not value.isprintable():
            raise ConfigurationError(f"group {group!r} must be 1 to 64 printable characters")
        group_names.append(value)
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, value))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, titles[0]))
    san: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(ae_title_to_uri(t)) for t in titles
    ]
    return x509.Name(attrs), san, org, group_names


def sign_client_request(
    directory: Path,
    csr_pem: bytes,
    *,
    ae_titles: Sequence[str],
    org: str | None = None,
    groups: Sequence[str] = (),
    out: Path,
    days: int = LEAF_DAYS,
    force: bool = False,
) -> IssuedCertificate:
    """Sign a modality's certificate signing request (PKCS#10, PEM): its key never leaves it.

    Only the CSR's public key is used (its signature must verify; EC P-256/P-384 or RSA of
    at least 2048 bits): the subject and the AE titles are the CA's decision, exactly as
    `issue_client` would write them. Writes PREFIX.crt only.
    """
    try:
        csr = x509.load_pem_x509_csr(csr_pem)
    except ValueError as exc:
        raise ConfigurationError(f"not a PEM certificate signing request ({exc})") from exc
    if not csr.is_signature_valid:
        raise ConfigurationError("the CSR's signature does not verify (damaged or forged)")
    pub = csr.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        if pub.key_size < 2048:
            raise ConfigurationError(f"the CSR's RSA key has {pub.key_size} bits; 2048 at least")
    elif not isinstance(pub, ec.EllipticCurvePublicKey) or pub.curve.name not in (
            "secp256r1", "secp384r1"):
        raise ConfigurationError("the CSR's key must be EC P-256/P-384 or RSA (2048+ bits)")
    subject, san, org, group_names = _client_names(ae_titles, org, groups)
    return _issue(
        directory, kind=CertKind.CLIENT, subject=subject, san=san, org=org,
        groups=group_names, out=out, key_type="ec", days=days, force=force,
        not_before=None, not_after=None, public_key=pub,
    )
