"""Who the peer is: identity from a verified certificate, and the AE-title binding.

PS3.15 B.12 leaves "the significance of any certificates exchanged" to the site. aiodicom's
choice: a client certificate names the AE titles it may call with as SubjectAlternativeName
URIs ``dicom-ae:<AE title, percent-encoded>``, its organization as subject O and its groups
as subject OU values. The scheme is documented in docs/security.md.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import ssl
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote

from aiodicom.core.ae_titles import validate_ae_title as core_validate_ae_title
from aiodicom.errors import ConfigurationError

if TYPE_CHECKING:  # cryptography (~8 MB) is imported when a certificate is first parsed
    from cryptography import x509

log = logging.getLogger("aiodicom.tls")

__all__ = [
    "AE_URI_SCHEME",
    "PeerIdentity",
    "ae_title_allowed",
    "ae_title_to_uri",
    "ae_titles_from_certificate",
    "identity_from_certificate",
    "identity_from_der",
    "identity_from_ssl_object",
    "validate_ae_title",
]

AE_URI_SCHEME = "dicom-ae"
"""URI scheme of the SubjectAlternativeName entries that bind AE titles to a certificate."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerIdentity:
    """The verified identity of a TLS peer, read from its leaf certificate."""

    subject: str
    """The subject distinguished name, RFC 4514 string form."""
    common_name: str
    """The first subject CN ("" when there is none); for our client certificates, an AE title."""
    organization: str | None
    """The first subject O value, if any."""
    groups: tuple[str, ...]
    """Every subject OU value, in certificate order."""
    ae_titles: tuple[str, ...]
    """AE titles bound by ``dicom-ae:`` SubjectAlternativeName URIs (may be empty)."""
    fingerprint_sha256: str
    """SHA-256 of the DER certificate, lower-case hex (no separators)."""
    serial: int
    """The certificate serial number."""
    not_after: datetime
    """End of validity, timezone-aware UTC."""
    is_ca: bool = False
    """basicConstraints says CA: such a certificate is never accepted as a peer's identity
    (`ae_title_allowed` refuses it), whatever its key usage allowed in the handshake."""


def validate_ae_title(ae_title: str) -> str:
    """Return `ae_title` without leading/trailing spaces, or raise ConfigurationError.

    The rule is `aiodicom.core.ae_titles` (PS3.5 Table 6.2-1, PS3.8 §9.3.2).
    """
    try:
        return core_validate_ae_title(ae_title, "AE title")
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None


def ae_title_to_uri(ae_title: str) -> str:
    """The SubjectAlternativeName URI that binds `ae_title`: ``dicom-ae:<percent-encoded>``."""
    return f"{AE_URI_SCHEME}:{quote(validate_ae_title(ae_title), safe='')}"


def ae_titles_from_certificate(cert: x509.Certificate) -> tuple[str, ...]:
    """AE titles bound to `cert` by ``dicom-ae:`` SAN URIs (scheme case-insensitive)."""
    from cryptography import x509

    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return ()
    prefix = AE_URI_SCHEME + ":"
    titles: list[str] = []
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri[: len(prefix)].lower() == prefix:
            title = unquote(uri[len(prefix) :]).strip(" ")
            if title and title not in titles:
                titles.append(title)
    return tuple(titles)


def _attribute_values(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [
        value if isinstance(value := attr.value, str) else value.decode("utf-8", "replace")
        for attr in name.get_attributes_for_oid(oid)
    ]


def identity_from_certificate(cert: x509.Certificate) -> PeerIdentity:
    """Build a PeerIdentity from a parsed certificate."""
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    common_names = _attribute_values(cert.subject, NameOID.COMMON_NAME)
    organizations = _attribute_values(cert.subject, NameOID.ORGANIZATION_NAME)
    return PeerIdentity(
        subject=cert.subject.rfc4514_string(),
        common_name=common_names[0] if common_names else "",
        organization=organizations[0] if organizations else None,
        groups=tuple(_attribute_values(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME)),
        ae_titles=ae_titles_from_certificate(cert),
        fingerprint_sha256=hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
        serial=cert.serial_number,
        not_after=cert.not_valid_after_utc,
        is_ca=_is_ca(cert),
    )


def _is_ca(cert: x509.Certificate) -> bool:
    """A CA certificate: basicConstraints CA, or an X.509 v1 self-signed root (v1 has no
    extensions, and OpenSSL treats such a certificate in the trust store as a CA)."""
    from cryptography import x509

    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return cert.version is x509.Version.v1 and cert.subject == cert.issuer


@functools.lru_cache(maxsize=1024)
def identity_from_der(der: bytes) -> PeerIdentity:
    """Parse a DER certificate (as given by ``getpeercert(binary_form=True)``).

    Cached: a busy server sees the same few client certificates on every association.
    Raises ConfigurationError when `der` is not a certificate.
    """
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise ConfigurationError(f"not a DER X.509 certificate: {exc}") from exc
    return identity_from_certificate(cert)


def identity_from_ssl_object(obj: ssl.SSLObject | ssl.SSLSocket) -> PeerIdentity | None:
    """The peer's identity after a handshake, or None when the peer sent no certificate.

    Use with ``transport.get_extra_info("ssl_object")``. Only meaningful when the context
    verified the certificate (CERT_REQUIRED), as the contexts of aiodicom.aio.tls do.
    """
    der = obj.getpeercert(binary_form=True)
    if not der:
        return None
    return identity_from_der(der)


def ae_title_allowed(identity: PeerIdentity, calling_ae: str, *, require_binding: bool) -> bool:
    """Whether `identity` may associate with calling AE title `calling_ae`.

    A certificate that names AE titles binds the caller to them (compared without leading
    and trailing spaces, case-sensitively as PS3.8 compares AE titles). A certificate that
    names none is allowed any calling AE title unless `require_binding` is set. A CA
    certificate (basicConstraints CA=true) presented as a client certificate is refused.
    """
    if identity.is_ca:
        log.warning("refused a CA certificate presented as a client certificate: %s "
                    "(sha256 %s)", identity.subject, identity.fingerprint_sha256)
        return False
    if not identity.ae_titles:
        return not require_binding
    return calling_ae.strip(" ") in identity.ae_titles
