"""A CA certificate and its key presented as a TLS client certificate (issue 17, item 9).

Whoever holds a CA key (an organization's intermediate, say) must not be able to log in as
a client with the CA certificate itself. CAs from `aiodicom pki` have no digitalSignature key
usage, so OpenSSL refuses them in the handshake; a CA from elsewhere that has it (many do)
passes the handshake and is refused by the certificate binding step of admission.
"""

from __future__ import annotations

import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aiodicom.aio import tls
from aiodicom.aio.client import connect
from aiodicom.aio.requests import EchoRequest
from aiodicom.aio.server import Admission, Handlers, Server
from aiodicom.app import pki
from aiodicom.core.dimse import Status
from aiodicom.errors import DicomError
from aiodicom.settings import AssociationSettings, Timeouts
from tests.hostile.conftest import policy


def _settings(ae: str) -> AssociationSettings:
    return AssociationSettings(ae_title=ae, timeouts=Timeouts(
        connect=5, tls_handshake=5, acse=5, dimse=5, artim=5))


def _legacy_root(out: Path) -> tuple[Path, Path]:
    """A self-signed CA with digitalSignature and no EKU, as many CAs are issued."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Legacy Root")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = out / "legacy.crt", out / "legacy.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


async def _try_echo(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext,
                    seen: list[str]) -> Status | DicomError:
    async def on_echo(request: EchoRequest) -> Status:
        seen.append(request.association.calling_ae_title)
        return Status.SUCCESS

    server = Server(admission=Admission(policy=policy(), identify=tls.identity_from_ssl_object),
                    handlers=Handlers(echo=on_echo), settings=_settings("ANY-SCP"))
    _, port = await server.listen("127.0.0.1", 0, tls=server_ctx)
    try:
        async with connect("127.0.0.1", port, called_ae_title="ANY-SCP",
                           settings=_settings("ECHOSCU"), tls=client_ctx) as assoc:
            return await assoc.echo()
    except DicomError as exc:
        return exc
    finally:
        await server.close(drain_timeout=2)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pki.IssuedCertificate]:
    tmp = tmp_path_factory.mktemp("ca-as-client")
    pki.init_ca(tmp / "ca", org="East")
    server = pki.issue_server(tmp / "ca", name="localhost", ips=["127.0.0.1"],
                              out=tmp / "server")
    return tmp, server


def test_pki_ca_certificates_only_sign(ca: tuple[Path, pki.IssuedCertificate]) -> None:
    tmp, _ = ca
    for path in (tmp / "ca" / "ca.crt", tmp / "ca" / "orgs" / "East" / "ca.crt"):
        cert = x509.load_pem_x509_certificate(path.read_bytes())
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        assert usage.key_cert_sign and usage.crl_sign
        assert not usage.digital_signature and not usage.key_encipherment
        with pytest.raises(x509.ExtensionNotFound):
            cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)


@pytest.mark.parametrize("which", ["root", "intermediate"])
def test_pki_ca_key_as_client_refused_in_handshake(
    run: Any, ca: tuple[Path, pki.IssuedCertificate], which: str
) -> None:
    tmp, server = ca
    root = tmp / "ca" / "ca.crt"
    d = tmp / "ca" if which == "root" else tmp / "ca" / "orgs" / "East"
    server_ctx = tls.server_context(cert=server.cert, key=server.key, ca=root)
    client_ctx = tls.client_context(cert=d / "ca.crt", key=d / "ca.key", ca=root)
    seen: list[str] = []
    result = run(_try_echo(server_ctx, client_ctx, seen))
    assert isinstance(result, DicomError), result
    assert seen == []


def test_foreign_ca_with_digital_signature_as_client_refused_by_admission(
    run: Any, ca: tuple[Path, pki.IssuedCertificate], tmp_path: Path
) -> None:
    tmp, server = ca
    legacy_cert, legacy_key = _legacy_root(tmp_path)
    # The server trusts the legacy CA for clients; the client trusts our server's CA.
    server_ctx = tls.server_context(cert=server.cert, key=server.key, ca=legacy_cert)
    client_ctx = tls.client_context(cert=legacy_cert, key=legacy_key, ca=tmp / "ca" / "ca.crt")
    seen: list[str] = []
    result = run(_try_echo(server_ctx, client_ctx, seen))
    assert isinstance(result, DicomError), result
    assert "not recognized" in str(result) or "rejected" in str(result)
    assert seen == []
    ident = tls.identity_from_der(
        x509.load_pem_x509_certificate(legacy_cert.read_bytes())
        .public_bytes(serialization.Encoding.DER))
    assert ident.is_ca
    assert not tls.ae_title_allowed(ident, "ECHOSCU", require_binding=False)


def test_an_x509_v1_root_counts_as_a_ca() -> None:
    """A v1 certificate has no basicConstraints, yet OpenSSL trusts a self-signed one in
    --ca as a root: presented as a client it must be refused like any CA certificate.
    (tests/vectors/x509-v1-root.pem: `openssl x509 -req -signkey`, which writes v1.)"""
    from cryptography import x509 as _x509

    from aiodicom.aio.tls import identity_from_certificate

    pem = (Path(__file__).parents[1] / "vectors" / "x509-v1-root.pem").read_bytes()
    cert = _x509.load_pem_x509_certificate(pem)
    assert cert.version is _x509.Version.v1
    assert identity_from_certificate(cert).is_ca
