"""`aiodicom serve` C-MOVE destinations: TOML ``move_destinations`` -> `RemoteAE` by AE title.

Two forms (docs/operations.md, "C-MOVE destinations"):

- ``DEST = "host:port"``: plain TCP, for peers on a trusted network segment.
- ``[move_destinations.DEST]`` with ``address = "host:port"``, ``tls = "listener"`` (our own
  listener's --cert/--key/--ca) or ``tls = { ca = ..., cert = ..., key = ... }``, and
  optionally ``server_name`` (the name the destination's certificate must carry when it is
  not the host in ``address``). The sub-association is then mutual TLS (PS3.15 B.12/B.13):
  the destination is verified against ``ca`` and its name checked, and it sees our
  certificate, so the patient data a C-MOVE sends never crosses the network in the clear.

Everything is checked at start: an unknown key, a missing file or a certificate that cannot
act as a TLS client is a `ConfigurationError` naming ``move_destinations.DEST...``.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiodicom.aio.client import RemoteAE
from aiodicom.core.ae_titles import validate_ae_title
from aiodicom.errors import ConfigurationError

__all__ = ["TLSFiles", "parse_move_destinations"]

_KEYS = ("address", "server_name", "tls")
_TLS_KEYS = ("ca", "cert", "key")


@dataclass(frozen=True, slots=True, kw_only=True)
class TLSFiles:
    """A certificate, its key and the CA to verify peers with (PEM files)."""

    cert: Path
    key: Path
    ca: Path | None
    """None only for the listener's files while its --ca is an object-store URL not fetched
    yet (the configuration check before the server starts): the certificate and key are
    checked then, and the server builds its destinations on the CA's local mirror
    (`app/server/trust_source.open_mirrors` puts the mirror's path in --ca first)."""


def parse_move_destinations(table: Mapping[str, Any], *, listener: TLSFiles | None = None,
                            profile: str = "bcp195") -> dict[str, RemoteAE]:
    """TOML ``move_destinations`` as a `RemoteAE` by AE title (see the module docstring).

    ``listener`` is what ``tls = "listener"`` means (None: --cert/--key/--ca not given);
    ``profile`` the PS3.15 profile of the client contexts ("bcp195" or "bcp195-modified").
    """
    found: dict[str, RemoteAE] = {}
    for title, entry in table.items():
        try:
            name = validate_ae_title(title, "move_destinations key")
        except ValueError as exc:
            raise ConfigurationError(str(exc)) from None
        where = f"move_destinations.{title}"
        if isinstance(entry, str):
            host, port = _address(entry, where)
            found[name] = RemoteAE(host, port)
        elif isinstance(entry, Mapping):
            found[name] = _table_entry(entry, where, listener, profile)
        else:
            raise ConfigurationError(
                f'{where} must be "host:port" or a table with address and tls, got {entry!r}')
    return found


def _address(value: object, where: str) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ConfigurationError(f'{where} must be "host:port", got {value!r}')
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConfigurationError(
            f'{where} must be "host:port" with a port 1-65535, got {value!r}')
    return host.strip("[]"), int(port)


def _table_entry(entry: Mapping[str, Any], where: str, listener: TLSFiles | None,
                 profile: str) -> RemoteAE:
    unknown = sorted(set(entry) - set(_KEYS))
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(_KEYS)}")
    if "address" not in entry:
        raise ConfigurationError(f'{where}: address = "host:port" is missing')
    host, port = _address(entry["address"], f"{where}.address")
    server_name = entry.get("server_name")
    if server_name is not None and (not isinstance(server_name, str) or not server_name):
        raise ConfigurationError(f"{where}.server_name must be a host name, got {server_name!r}")
    tls = entry.get("tls")
    if tls is None:
        if server_name is not None:
            raise ConfigurationError(f"{where}.server_name needs {where}.tls")
        return RemoteAE(host, port)
    files = _tls_files(tls, f"{where}.tls", listener)
    from aiodicom.aio.tls import client_context

    try:
        _check_client_certificate(files.cert)
        if files.ca is None:  # --ca is an object-store URL: its mirror comes at start
            context = _identity_only(files.cert, files.key)
        else:
            context = client_context(cert=files.cert, key=files.key, ca=files.ca,
                                     profile=profile)
    except ConfigurationError as exc:
        raise ConfigurationError(f"{where}.tls: {exc}") from exc
    return RemoteAE(host, port, tls=context, server_hostname=server_name)


def _identity_only(cert: Path, key: Path) -> ssl.SSLContext:
    """Check that ``cert`` and ``key`` load and match. No CA yet: this context trusts no
    certificate, so a connection with it would fail, never pass unverified; it is only the
    configuration check's, and the server builds the real one on the CA's mirror."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"cannot load certificate {cert} with key {key}: {exc}") from exc
    return context


def _tls_files(tls: object, where: str, listener: TLSFiles | None) -> TLSFiles:
    if tls == "listener":
        if listener is None:
            raise ConfigurationError(
                f'{where} = "listener" needs the listener\'s --cert, --key and --ca')
        return listener
    if not isinstance(tls, Mapping):
        raise ConfigurationError(
            f'{where} must be "listener" or a table {{ ca = ..., cert = ..., key = ... }}, '
            f"got {tls!r}")
    unknown = sorted(set(tls) - set(_TLS_KEYS))
    if unknown:
        raise ConfigurationError(
            f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(_TLS_KEYS)}")
    paths: dict[str, Path] = {}
    for key in _TLS_KEYS:
        value = tls.get(key)
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"{where}.{key} (a PEM file) is missing")
        if not Path(value).is_file():
            raise ConfigurationError(f"{where}.{key} {value}: no such file")
        paths[key] = Path(value)
    return TLSFiles(**paths)


def _check_client_certificate(cert: Path) -> None:
    """Refuse, at start, a certificate the destination would refuse at every C-MOVE: one
    whose extended key usage leaves out clientAuth (an `aiodicom pki issue server`
    certificate, say: RFC 5280 4.2.1.12)."""
    from cryptography import x509
    from cryptography.x509.oid import ExtendedKeyUsageOID

    try:
        leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"{cert} is not a PEM certificate: {exc}") from exc
    try:
        usage = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return
    if not {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE} & set(
            usage):
        raise ConfigurationError(
            f"certificate {cert} is not valid for TLS clients (its extended key usage lacks "
            "clientAuth), so destinations would refuse it; give tls = { ca, cert, key } with "
            "a client certificate (aiodicom pki issue DIR client --ae-title OUR_AE ...)")
