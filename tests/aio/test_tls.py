"""Mutual TLS per PS3.15 B.12/B.13: real handshakes on 127.0.0.1 port 0 with asyncio streams.

Every trust decision is checked from both ends: the client's round trip fails and the server's
handler never ran. Certificates come from aiodicom.app.pki, made once per module (EC keys).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import ssl
import warnings
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from aiodicom.aio import tls
from aiodicom.app import pki
from aiodicom.errors import ConfigurationError

LOOPS = ["asyncio", "uvloop"]


def run(coro: Coroutine[Any, Any, Any], loop: str = "asyncio") -> Any:
    if loop == "uvloop":
        uvloop = pytest.importorskip("uvloop")
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(coro)
    with asyncio.Runner() as runner:
        return runner.run(coro)


@dataclass
class PKI:
    root: Path
    ca: Path
    server: pki.IssuedCertificate
    client: pki.IssuedCertificate
    org_client: pki.IssuedCertificate
    expired: pki.IssuedCertificate
    revoked: pki.IssuedCertificate
    crl: Path
    foreign_ca: Path
    foreign_client: pki.IssuedCertificate
    foreign_server: pki.IssuedCertificate
    tmp: Path
    extra: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    tmp = tmp_path_factory.mktemp("tls")
    a, b = tmp / "ca-a", tmp / "ca-b"
    pki.init_ca(a, org="East")
    now = datetime.now(UTC)
    server = pki.issue_server(a, name="localhost", ips=["127.0.0.1"], out=tmp / "server")
    client = pki.issue_client(a, ae_titles=["STORESCU", "ECHO SCU"], out=tmp / "client")
    org_client = pki.issue_client(
        a, ae_titles=["CT01"], org="East", groups=["ct", "night"], out=tmp / "ct01"
    )
    expired = pki.issue_client(
        a, ae_titles=["OLD"], out=tmp / "expired",
        not_before=now - timedelta(days=10), not_after=now - timedelta(days=1),
    )
    revoked = pki.issue_client(a, ae_titles=["GONE"], out=tmp / "revoked")
    pki.revoke(a, revoked.cert)
    crl = pki.write_crl(a)
    pki.init_ca(b)
    foreign_client = pki.issue_client(b, ae_titles=["STORESCU"], out=tmp / "foreign")
    foreign_server = pki.issue_server(b, name="localhost", ips=["127.0.0.1"], out=tmp / "fsrv")
    return PKI(
        root=a, ca=a / "ca.crt", server=server, client=client, org_client=org_client,
        expired=expired, revoked=revoked, crl=crl, foreign_ca=b / "ca.crt",
        foreign_client=foreign_client, foreign_server=foreign_server, tmp=tmp,
    )


def _client(p: PKI, issued: pki.IssuedCertificate, ca: Path | None = None) -> ssl.SSLContext:
    return tls.client_context(cert=issued.cert, key=issued.key, ca=ca or p.ca)


class EchoServer:
    """Echo lines back; remembers the verified identity of every peer the handler saw."""

    def __init__(self) -> None:
        self.identities: list[tls.PeerIdentity | None] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.identities.append(tls.identity_from_ssl_object(writer.get_extra_info("ssl_object")))
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        except (ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()

    async def start(self, ctx: ssl.SSLContext) -> EchoServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=ctx)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


class Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @property
    def ssl_object(self) -> ssl.SSLObject:
        obj = self.writer.get_extra_info("ssl_object")
        assert obj is not None
        return obj  # type: ignore[no-any-return]

    async def echo(self, payload: bytes = b"ping\n") -> bytes:
        self.writer.write(payload)
        await self.writer.drain()
        return await asyncio.wait_for(self.reader.readline(), 5)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()


async def connect(port: int, ctx: ssl.SSLContext, hostname: str = "127.0.0.1") -> Conn:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=hostname), 5
    )
    return Conn(reader, writer)


async def roundtrip(port: int, ctx: ssl.SSLContext, hostname: str = "127.0.0.1") -> bool:
    """True when a line went there and back; False when either side refused the session."""
    try:
        conn = await connect(port, ctx, hostname)
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return False
    try:
        return await conn.echo() == b"ping\n"
    except (ssl.SSLError, ConnectionError, asyncio.IncompleteReadError):
        return False
    finally:
        await conn.close()


def serve_and(
    ctx: ssl.SSLContext, body: Callable[[EchoServer], Coroutine[Any, Any, Any]],
    loop: str = "asyncio",
) -> Any:
    async def main() -> Any:
        server = await EchoServer().start(ctx)
        try:
            return await body(server)
        finally:
            await server.stop()

    return run(main(), loop)


def _server_ctx(p: PKI, *, crl: bool = False, **kw: Any) -> ssl.SSLContext:
    return tls.server_context(
        cert=p.server.cert, key=p.server.key, ca=p.ca, crl=p.crl if crl else None, **kw
    )


# --- handshakes -----------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_mutual_tls_ok_and_identity_on_server(p: PKI, loop: str) -> None:
    async def body(server: EchoServer) -> None:
        conn = await connect(server.port, _client(p, p.org_client))
        try:
            assert await conn.echo() == b"ping\n"
            assert conn.ssl_object.version() == "TLSv1.3"  # B.12: servers prefer 1.3
            server_id = tls.identity_from_ssl_object(conn.ssl_object)
            assert server_id is not None and server_id.common_name == "localhost"
        finally:
            await conn.close()

    server_ctx = _server_ctx(p, crl=True)
    serve_and(server_ctx, body, loop)


def test_server_sees_verified_client_identity(p: PKI) -> None:
    async def body(server: EchoServer) -> list[tls.PeerIdentity | None]:
        assert await roundtrip(server.port, _client(p, p.org_client))
        return server.identities

    (ident,) = serve_and(_server_ctx(p), body)
    assert ident is not None
    assert ident.ae_titles == ("CT01",)
    assert ident.organization == "East"
    assert ident.groups == ("ct", "night")
    assert tls.ae_title_allowed(ident, "CT01  ", require_binding=True)
    assert not tls.ae_title_allowed(ident, "STORESCU", require_binding=False)


def test_tls12_client_gets_an_ecdhe_aead_suite(p: PKI) -> None:
    client = _client(p, p.client)
    client.maximum_version = ssl.TLSVersion.TLSv1_2

    async def body(server: EchoServer) -> tuple[str, str]:
        conn = await connect(server.port, client)
        try:
            assert await conn.echo() == b"ping\n"
            cipher = conn.ssl_object.cipher()
            assert cipher is not None
            return conn.ssl_object.version() or "", cipher[0]
        finally:
            await conn.close()

    version, cipher = serve_and(_server_ctx(p), body)
    assert version == "TLSv1.2"
    assert cipher in tls.TLS12_CIPHERS_B12


def test_tls12_client_without_ecdhe_aead_refused(p: PKI) -> None:
    client = _client(p, p.client)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:AES128-GCM-SHA256")

    async def body(server: EchoServer) -> tuple[bool, int]:
        return await roundtrip(server.port, client), len(server.identities)

    assert serve_and(_server_ctx(p), body) == (False, 0)


@pytest.mark.parametrize("which", ["foreign", "expired", "none"])
def test_untrusted_client_refused_by_server(p: PKI, which: str) -> None:
    if which == "none":
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(cafile=p.ca)
    else:
        client = _client(p, p.foreign_client if which == "foreign" else p.expired)

    async def body(server: EchoServer) -> tuple[bool, int]:
        return await roundtrip(server.port, client), len(server.identities)

    assert serve_and(_server_ctx(p, crl=True), body) == (False, 0)


def test_revoked_client_refused_only_with_crl(p: PKI) -> None:
    async def body(server: EchoServer) -> bool:
        return await roundtrip(server.port, _client(p, p.revoked))

    assert serve_and(_server_ctx(p, crl=False), body) is True
    assert serve_and(_server_ctx(p, crl=True), body) is False


def test_crl_chain_check_refuses_clients_of_a_revoked_intermediate(p: PKI, tmp_path: Path) -> None:
    root = tmp_path / "ca"
    shutil.copytree(p.root, root)
    org_ca = root / "orgs" / "East" / "ca.crt"
    server_ctx = _server_ctx(p, crl=True)  # CRL before the intermediate is revoked
    pki.revoke(root, org_ca)
    crl = pki.write_crl(root)
    revoked_ctx = tls.server_context(cert=p.server.cert, key=p.server.key, ca=p.ca, crl=crl)
    assert revoked_ctx.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN

    async def body(server: EchoServer) -> bool:
        return await roundtrip(server.port, _client(p, p.org_client))

    assert serve_and(server_ctx, body) is True
    assert serve_and(revoked_ctx, body) is False


def test_tls11_client_refused(p: PKI) -> None:
    server_ctx = _server_ctx(p)
    assert server_ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # ssl.TLSVersion.TLSv1_1 is deprecated, on purpose here
        warnings.simplefilter("ignore", DeprecationWarning)
        client.minimum_version = ssl.TLSVersion.TLSv1_1
        client.maximum_version = ssl.TLSVersion.TLSv1_1
        control = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        control.minimum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    client.load_cert_chain(p.client.cert, p.client.key)
    control.set_ciphers("DEFAULT:@SECLEVEL=0")
    control.load_cert_chain(p.server.cert, p.server.key)

    async def body(server: EchoServer) -> bool:
        return await roundtrip(server.port, client)

    if not serve_and(control, body):
        pytest.skip(
            "this OpenSSL cannot speak TLS 1.1 at all (built without it), so no TLS 1.1 "
            "client exists to refuse; minimum_version == TLSv1_2 was asserted above"
        )
    assert serve_and(server_ctx, body) is False


def test_client_checks_the_server_name(p: PKI) -> None:
    async def body(server: EchoServer) -> tuple[bool, bool, bool]:
        checked = _client(p, p.client)
        unchecked = tls.client_context(
            cert=p.client.cert, key=p.client.key, ca=p.ca, server_hostname_check=False
        )
        return (
            await roundtrip(server.port, checked, "localhost"),
            await roundtrip(server.port, checked, "pacs.example.org"),
            await roundtrip(server.port, unchecked, "pacs.example.org"),
        )

    assert serve_and(_server_ctx(p), body) == (True, False, True)


def test_client_refuses_a_server_from_another_ca(p: PKI) -> None:
    other = tls.server_context(
        cert=p.foreign_server.cert, key=p.foreign_server.key, ca=p.ca
    )

    async def body(server: EchoServer) -> tuple[bool, int]:
        return await roundtrip(server.port, _client(p, p.client)), len(server.identities)

    assert serve_and(other, body) == (False, 0)


def test_our_certificates_pass_openssl_strict_checks(p: PKI) -> None:
    server_ctx = _server_ctx(p, crl=True)
    server_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    clients = [_client(p, p.client), _client(p, p.org_client)]
    for ctx in clients:
        ctx.verify_flags |= ssl.VERIFY_X509_STRICT

    async def body(server: EchoServer) -> list[bool]:
        return [await roundtrip(server.port, c) for c in clients]

    assert serve_and(server_ctx, body) == [True, True]


def test_modified_profile_handshake_and_reported_gaps(p: PKI) -> None:
    ctx = _server_ctx(p, profile="bcp195-modified")
    names = {c["name"] for c in ctx.get_ciphers()}
    assert "ECDHE-ECDSA-AES128-CCM" in names
    assert not any("CBC" in n or n.startswith(("AES", "DHE")) for n in names)
    gaps = tls.profile_gaps(ctx, "bcp195-modified")
    assert set(gaps) == {s for s in tls.TLS13_SUITES_B13 if s not in names}
    assert tls.profile_gaps(ctx, "bcp195") == ()
    client = tls.client_context(
        cert=p.client.cert, key=p.client.key, ca=p.ca, profile="bcp195-modified"
    )

    async def body(server: EchoServer) -> bool:
        return await roundtrip(server.port, client)

    assert serve_and(ctx, body) is True


def test_context_settings(p: PKI) -> None:
    ctx = _server_ctx(p, crl=True)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.options & ssl.OP_NO_COMPRESSION
    assert ctx.options & ssl.OP_NO_RENEGOTIATION
    assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert ctx.options & ssl.OP_NO_TICKET and ctx.num_tickets == 0
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_LEAF
    tls12 = {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert tls12 == set(tls.TLS12_CIPHERS_B12)
    client = _client(p, p.client)
    assert client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED
    assert client.minimum_version == ssl.TLSVersion.TLSv1_2


# --- refusing bad material at load time -----------------------------------------------------


def _leaf_with_key(p: PKI, key: Any, out: Path) -> tuple[Path, Path]:
    """A client certificate for `key`, signed by the test root (bypassing pki's own checks)."""
    root_key = serialization.load_pem_private_key((p.root / "ca.key").read_bytes(), None)
    root = x509.load_pem_x509_certificate(p.ca.read_bytes())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "WEAK")]))
        .issuer_name(root.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .sign(root_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    crt, keyfile = out.with_suffix(".crt"), out.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, keyfile


@pytest.mark.parametrize(
    ("make_key", "needle"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=1024), "2048"),
        (lambda: ec.generate_private_key(ec.SECP192R1()), "P-256"),
    ],
    ids=["rsa1024", "p192"],
)
def test_weak_keys_refused(p: PKI, tmp_path: Path, make_key: Any, needle: str) -> None:
    crt, key = _leaf_with_key(p, make_key(), tmp_path / "weak")
    with pytest.raises(ConfigurationError, match=needle):
        tls.server_context(cert=crt, key=key, ca=p.ca)
    with pytest.raises(ConfigurationError, match=needle):
        tls.client_context(cert=crt, key=key, ca=p.ca)


def test_rsa_3072_accepted(p: PKI) -> None:
    issued = pki.issue_client(p.root, ae_titles=["RSA"], out=p.tmp / "rsa", key_type="rsa")
    ctx = tls.client_context(cert=issued.cert, key=issued.key, ca=p.ca)

    async def body(server: EchoServer) -> bool:
        return await roundtrip(server.port, ctx)

    assert serve_and(_server_ctx(p), body) is True


def test_bad_files_give_clear_errors(p: PKI, tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    good = {"cert": p.server.cert, "key": p.server.key, "ca": p.ca}
    cases: list[tuple[dict[str, Any], str]] = [
        ({**good, "cert": tmp_path / "missing.crt"}, "not found"),
        ({**good, "key": tmp_path / "missing.key"}, "not found"),
        ({**good, "key": p.client.key}, "does not match|belongs"),
        ({**good, "ca": junk}, "not a PEM certificate"),
        ({**good, "cert": junk}, "not a PEM certificate"),
        ({**good, "key": junk}, "not a PEM private key"),
        ({**good, "crl": junk}, "no '-----BEGIN X509 CRL"),
        ({**good, "crl": tmp_path / "missing.pem"}, "CRL file .* not found"),
        ({**good, "profile": "bcp195-retired"}, "unknown TLS profile"),
    ]
    for kwargs, pattern in cases:
        with pytest.raises(ConfigurationError, match=pattern):
            tls.server_context(**kwargs)


def test_crl_signed_by_another_ca_refused(p: PKI, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.init_ca(other)
    crl = pki.write_crl(other)
    # A CRL file with only another CA's CRL: our root has none there -> an error (issue 17).
    with pytest.raises(ConfigurationError, match="no CRL from CA"):
        tls.server_context(cert=p.server.cert, key=p.server.key, ca=p.ca, crl=crl)
    # A CA file whose root has the other CA's name but another key: the CRL is forged for it.
    forged = tmp_path / "forged-ca.pem"
    root_other = x509.load_pem_x509_certificate((other / "ca.crt").read_bytes())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    impostor = (
        x509.CertificateBuilder()
        .subject_name(root_other.subject)
        .issuer_name(root_other.subject)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    forged.write_bytes(impostor.public_bytes(serialization.Encoding.PEM))
    with pytest.raises(ConfigurationError, match="not signed by that CA"):
        tls.server_context(cert=p.server.cert, key=p.server.key, ca=forged, crl=crl)


def test_expired_crl_is_loaded_with_a_warning(
    p: PKI, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "ca"
    shutil.copytree(p.root, root)
    crl = pki.write_crl(root, now=datetime.now(UTC) - timedelta(days=40))
    with caplog.at_level(logging.WARNING, logger="aiodicom.tls"):
        tls.server_context(cert=p.server.cert, key=p.server.key, ca=p.ca, crl=crl)
    assert "past its next update" in caplog.text


# --- identity ---------------------------------------------------------------------------------


def test_identity_from_der(p: PKI) -> None:
    der_pem = p.client.cert.read_bytes()
    cert = x509.load_pem_x509_certificate(der_pem)
    der = cert.public_bytes(serialization.Encoding.DER)
    ident = tls.identity_from_der(der)
    assert ident.subject == "CN=STORESCU"
    assert ident.common_name == "STORESCU"
    assert ident.organization is None and ident.groups == ()
    assert ident.ae_titles == ("STORESCU", "ECHO SCU")
    assert ident.serial == cert.serial_number == p.client.record.serial
    assert ident.not_after == cert.not_valid_after_utc
    assert ident.fingerprint_sha256 == cert.fingerprint(hashes.SHA256()).hex()
    with pytest.raises(ConfigurationError):
        tls.identity_from_der(b"\x30\x03\x02\x01\x01")


def test_identity_from_ssl_object_without_peer_cert() -> None:
    class NoPeer:
        def getpeercert(self, binary_form: bool = False) -> None:
            return None

    assert tls.identity_from_ssl_object(NoPeer()) is None  # type: ignore[arg-type]


def test_ae_title_binding_rules() -> None:
    def ident(*titles: str) -> tls.PeerIdentity:
        return tls.PeerIdentity(
            subject="CN=X", common_name="X", organization=None, groups=(), ae_titles=titles,
            fingerprint_sha256="00", serial=1, not_after=datetime.now(UTC),
        )

    bound, unbound = ident("CT01", "CT 02"), ident()
    assert tls.ae_title_allowed(bound, "CT01", require_binding=False)
    assert tls.ae_title_allowed(bound, " CT 02 ", require_binding=True)
    assert not tls.ae_title_allowed(bound, "ct01", require_binding=False)  # case-sensitive
    assert not tls.ae_title_allowed(bound, "MR01", require_binding=False)
    assert tls.ae_title_allowed(unbound, "ANY", require_binding=False)
    assert not tls.ae_title_allowed(unbound, "ANY", require_binding=True)


def test_ae_title_uri_scheme() -> None:
    assert tls.ae_title_to_uri("CT 02") == "dicom-ae:CT%2002"
    assert tls.ae_title_to_uri(" A/B%C ") == "dicom-ae:A%2FB%25C"
    for bad in ["", "    ", "A" * 17, "BACK\\SLASH", "TAB\tX", "ÄE"]:
        with pytest.raises(ConfigurationError):
            tls.validate_ae_title(bad)


# --- live reload ----------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _place(src: Path, dst: Path) -> None:
    """Replace `dst` atomically, as `aiodicom pki` and careful operators do."""
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


@pytest.fixture
def live(p: PKI, tmp_path: Path) -> Iterator[Path]:
    d = tmp_path / "live"
    d.mkdir()
    _place(p.server.cert, d / "server.crt")
    _place(p.server.key, d / "server.key")
    _place(p.ca, d / "ca.crt")
    yield d


def _switch_to_b(p: PKI, d: Path) -> None:
    _place(p.foreign_server.cert, d / "server.crt")
    _place(p.foreign_server.key, d / "server.key")
    _place(p.foreign_ca, d / "ca.crt")


@pytest.mark.parametrize("loop", LOOPS)
def test_reload_switches_trust_for_new_handshakes_only(p: PKI, live: Path, loop: str) -> None:
    both = p.tmp / "both-cas.pem"
    both.write_bytes(p.ca.read_bytes() + p.foreign_ca.read_bytes())
    client_a = tls.client_context(cert=p.client.cert, key=p.client.key, ca=both)
    client_b = tls.client_context(
        cert=p.foreign_client.cert, key=p.foreign_client.key, ca=p.foreign_ca
    )
    rctx = tls.ReloadingServerContext(
        cert=live / "server.crt", key=live / "server.key", ca=live / "ca.crt",
        check_interval=3600,
    )

    async def body(server: EchoServer) -> None:
        first = await connect(server.port, client_a)
        try:
            assert await first.echo() == b"ping\n"
            assert not await roundtrip(server.port, client_b)
            _switch_to_b(p, live)
            assert rctx.reload() is True
            assert rctx.generation == 1 and rctx.current is not rctx.context
            assert not await roundtrip(server.port, client_a)  # refused by the server
            assert await roundtrip(server.port, client_b)
            assert await first.echo(b"still here\n") == b"still here\n"
        finally:
            await first.close()

    serve_and(rctx.context, body, loop)


def test_reload_on_handshake_after_interval(p: PKI, live: Path) -> None:
    clock = Clock()
    client_b = tls.client_context(
        cert=p.foreign_client.cert, key=p.foreign_client.key, ca=p.foreign_ca
    )
    rctx = tls.ReloadingServerContext(
        cert=live / "server.crt", key=live / "server.key", ca=live / "ca.crt",
        check_interval=2.0, clock=clock,
    )

    async def body(server: EchoServer) -> list[bool]:
        _switch_to_b(p, live)
        clock.now = 1.0
        before = await roundtrip(server.port, client_b)  # changed, but checked too recently
        clock.now = 2.5
        after = await roundtrip(server.port, client_b)  # this handshake triggers the reload
        return [before, after]

    assert serve_and(rctx.context, body) == [False, True]
    assert rctx.generation == 1
    assert rctx.maybe_reload() is False  # nothing changed since


def test_failed_reload_keeps_previous_context(
    p: PKI, live: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    rctx = tls.ReloadingServerContext(
        cert=live / "server.crt", key=live / "server.key", ca=live / "ca.crt", crl=None,
        check_interval=1.0, clock=clock,
    )
    before = rctx.current
    (live / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\ntrunc")  # half-written
    with caplog.at_level(logging.WARNING, logger="aiodicom.tls"):
        assert rctx.reload() is False
        clock.now = 5.0
        assert rctx.maybe_reload() is False  # same broken state: not retried, not re-logged
    assert rctx.current is before and rctx.generation == 0
    assert rctx.last_error is not None and "ca.crt" in rctx.last_error
    assert len([r for r in caplog.records if "not reloaded" in r.message]) == 1

    async def body(server: EchoServer) -> bool:
        return await roundtrip(server.port, _client(p, p.client))

    assert serve_and(rctx.context, body) is True  # still the old trust
    _place(p.ca, live / "ca.crt")
    clock.now = 10.0
    assert rctx.maybe_reload() is True and rctx.last_error is None


def test_reloading_context_refuses_bad_initial_files(p: PKI, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        tls.ReloadingServerContext(cert=tmp_path / "x.crt", key=p.server.key, ca=p.ca)
