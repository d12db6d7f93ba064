"""What a client needs, as one directory (`export_bundle`), and the development PKI that
`make serve` uses (`ensure_dev_pki`)."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from aiodicom.aio.tls import identity_from_certificate, load_pem_crls
from aiodicom.app.pki._defaults import DICOM_TLS_PORT as DICOM_TLS_PORT
from aiodicom.app.pki.ca import init_ca, issue_client, issue_server
from aiodicom.app.pki.files import (
    cert_pem,
    load_private_key,
    read_certificates,
    read_index,
    refuse_existing,
    utcnow,
    write_file,
    write_private_key,
)
from aiodicom.app.pki.revoke import CRL_NAME, find_issuer, write_crl
from aiodicom.errors import ConfigurationError

DEV_CLIENT_AE_TITLES = ("STORESCU", "ECHOSCU", "FINDSCU", "GETSCU", "MOVESCU", "AIODICOM")
"""DCMTK's default calling AE titles and ours, so every tool works against `make serve`."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientBundle:
    """The files `export_bundle` wrote."""

    directory: Path
    cert: Path
    """The client certificate followed by its intermediate CA, if any."""
    key: Path
    """Its private key, mode 0600."""
    ca: Path
    """The root CA certificate, to verify the server with."""
    readme: Path
    """README.txt with ready command lines for aiodicom and DCMTK."""


def _matching_key(cert: x509.Certificate, key_path: Path) -> None:
    key = load_private_key(key_path)
    fmt = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, fmt) != (
        cert.public_key().public_bytes(serialization.Encoding.DER, fmt)
    ):
        raise ConfigurationError(f"{key_path} is not the private key of this certificate")


def _is_client(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return ExtendedKeyUsageOID.CLIENT_AUTH in eku


def export_bundle(
    directory: Path,
    cert: Path,
    out_dir: Path,
    *,
    key: Path | None = None,
    host: str = "HOST",
    port: int = DICOM_TLS_PORT,
    called_ae: str = "AIODICOM",
    force: bool = False,
) -> ClientBundle:
    """Copy a client's certificate (+ chain), key and the root CA into `out_dir`, with a
    README.txt of command lines (aiodicom and DCMTK) that use them.

    `key` defaults to the certificate path with ``.key`` for ``.crt``. The certificate must be
    a client certificate issued by this CA and not revoked.
    """
    certs = read_certificates(cert)
    leaf = certs[0]
    found = find_issuer(directory, leaf)
    if found is None:
        raise ConfigurationError(f"{cert} was not issued by the CA in {directory}")
    if not _is_client(leaf):
        raise ConfigurationError(
            f"{cert} is not a client certificate (no clientAuth usage); export bundles are for "
            "clients: issue one with `aiodicom pki issue DIR client ...`"
        )
    record = read_index(directory).find(leaf.serial_number)
    if record is not None and record.revoked:
        raise ConfigurationError(f"{cert} is revoked; issue a new client certificate")
    if key is None:
        if cert.suffix != ".crt":
            raise ConfigurationError(f"cannot guess the key of {cert}; give it with --key")
        key = cert.with_suffix(".key")
    _matching_key(leaf, key)
    stem = cert.name[: -len(".crt")] if cert.name.endswith(".crt") else cert.name
    paths = ClientBundle(
        directory=out_dir,
        cert=out_dir / f"{stem}.crt",
        key=out_dir / f"{stem}.key",
        ca=out_dir / "ca.crt",
        readme=out_dir / "README.txt",
    )
    refuse_existing([paths.cert, paths.key, paths.ca, paths.readme], force=force)
    chain = [leaf]
    if found[0] is not None:
        chain.append(found[1])
    root = read_certificates(directory / "ca.crt")[0]
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_file(paths.cert, cert_pem(*chain), force=force)
    write_private_key(paths.key, load_private_key(key), force=force)
    write_file(paths.ca, cert_pem(root), force=force)
    readme = _readme(leaf, paths, host=host, port=port, called_ae=called_ae)
    write_file(paths.readme, readme.encode(), force=force)
    return paths


def _readme(
    leaf: x509.Certificate, paths: ClientBundle, *, host: str, port: int, called_ae: str
) -> str:
    ident = identity_from_certificate(leaf)
    calling = ident.ae_titles[0] if ident.ae_titles else ident.common_name
    crt, key, ca = (shlex.quote(p.name) for p in (paths.cert, paths.key, paths.ca))
    q = shlex.quote
    aes = f"-aet {q(calling)} -aec {q(called_ae)}"
    tls = f"--tls --cert {crt} --key {key} --ca {ca}"
    aio_aes = f"--calling-ae {q(calling)} --called-ae {q(called_ae)}"
    return f"""aiodicom client bundle
======================
Subject:       {ident.subject}
AE titles:     {", ".join(ident.ae_titles) or "(none bound)"}
Organization:  {ident.organization or "-"}
Groups:        {", ".join(ident.groups) or "-"}
Serial:        {ident.serial:X}
Valid until:   {ident.not_after:%Y-%m-%d %H:%M} UTC
SHA-256:       {ident.fingerprint_sha256}

Files (run the commands below from this directory):
  {paths.cert.name:<14} this client's certificate (then its intermediate CA, if any)
  {paths.key.name:<14} its private key: keep it secret, readable by its owner only
  {paths.ca.name:<14} the CA to verify the server with

The server accepts this certificate only with calling AE title(s): \
{", ".join(ident.ae_titles) or "any"}.
Replace HOST by the server's name or address (it must match the server certificate).

aiodicom:
  aiodicom echo {q(host)} {port} {aio_aes} {tls}
  aiodicom store {q(host)} {port} FILE_OR_FOLDER... {aio_aes} {tls}

DCMTK (storescu/echoscu 3.6.7 or later; the default +py profile speaks TLS 1.2 and 1.3):
  echoscu {aes} +tls {key} {crt} +cf {ca} {q(host)} {port}
  storescu {aes} +tls {key} {crt} +cf {ca} {q(host)} {port} FILE...
  (add +sd +r to storescu to send a folder recursively)
"""


@dataclass(frozen=True, slots=True, kw_only=True)
class DevPKI:
    """Paths of the development PKI (see `ensure_dev_pki`)."""

    directory: Path
    ca_cert: Path
    """The root CA certificate (the trust anchor of both sides)."""
    crl: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    client_ae_titles: tuple[str, ...]

    @property
    def ca(self) -> Path:
        """Alias of `ca_cert`."""
        return self.ca_cert


def _usable(
    directory: Path, path: Path, *, names: Sequence[str] = (), ae_titles: Sequence[str] = ()
) -> bool:
    """Whether an existing leaf is from this CA, valid 30 more days and names what we need."""
    if not path.is_file() or not Path(f"{path.with_suffix('')}.key").is_file():
        return False
    try:
        cert = read_certificates(path)[0]
    except ConfigurationError:
        return False
    if cert.not_valid_after_utc < utcnow() + timedelta(days=30):
        return False
    if find_issuer(directory, cert) is None:
        return False
    record = read_index(directory).find(cert.serial_number)
    if record is None or record.revoked:
        return False
    have = set(record.dns_names) | set(record.ip_addresses)
    return set(names) <= have and set(ae_titles) <= set(record.ae_titles)


def _crl_fresh(path: Path) -> bool:
    try:
        crls = load_pem_crls(path.read_bytes())
    except (OSError, ValueError):
        return False
    soon = utcnow() + timedelta(days=7)
    return bool(crls) and all(
        c.next_update_utc is not None and c.next_update_utc > soon for c in crls
    )


def ensure_dev_pki(
    directory: Path, *, server_name: str = "localhost", ips: Sequence[str] = ("127.0.0.1",)
) -> DevPKI:
    """Create what is missing of a development PKI in `directory` and return its paths.

    A CA, a server certificate for `server_name` and `ips`, a client certificate bound to
    DEV_CLIENT_AE_TITLES, and a fresh CRL. Idempotent: existing files are kept while they are
    valid for 30 more days and name what is asked; otherwise they are re-issued.
    """
    if not (directory / "ca.crt").is_file():
        init_ca(directory, force=True)
    server, client = directory / "server", directory / "client"
    names = [server_name, *ips]
    if not _usable(directory, Path(f"{server}.crt"), names=names):
        issue_server(directory, name=server_name, ips=ips, out=server, force=True)
    if not _usable(directory, Path(f"{client}.crt"), ae_titles=DEV_CLIENT_AE_TITLES):
        issue_client(directory, ae_titles=DEV_CLIENT_AE_TITLES, out=client, force=True)
    crl = directory / CRL_NAME
    if not _crl_fresh(crl):
        write_crl(directory)
    return DevPKI(
        directory=directory,
        ca_cert=directory / "ca.crt",
        crl=crl,
        server_cert=Path(f"{server}.crt"),
        server_key=Path(f"{server}.key"),
        client_cert=Path(f"{client}.crt"),
        client_key=Path(f"{client}.key"),
        client_ae_titles=DEV_CLIENT_AE_TITLES,
    )
