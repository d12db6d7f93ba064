"""`Server` over mutual TLS end to end, from the attacker's side.

Real handshakes on 127.0.0.1 port 0 with `connect(tls=...)`: every refusal is checked from the
client (a clean aiodicom error, bounded in time) and from the server (the handler never ran),
and a legitimate client is served right after each hostile one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import ssl
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from aiodicom.aio import tls
from aiodicom.aio.client import connect, open_association, storage_contexts_for
from aiodicom.aio.requests import EchoRequest, StoreRequest
from aiodicom.aio.server import Admission, Handlers, Server
from aiodicom.app import pki
from aiodicom.app.server.run import storage_acceptor_policy
from aiodicom.core.dimse import Status
from aiodicom.core.part10 import read_part10_info
from aiodicom.errors import (
    AcseTimeout,
    AssociationAborted,
    AssociationRejected,
    DicomError,
    TLSError,
)
from aiodicom.settings import AssociationSettings, Timeouts
from tests.conftest import make_runner, write_ct


@dataclass
class PKI:
    root: Path
    ca: Path
    server: pki.IssuedCertificate
    client: pki.IssuedCertificate
    expired: pki.IssuedCertificate
    revoked: pki.IssuedCertificate
    no_ae: pki.IssuedCertificate
    crl: Path
    foreign_ca: Path
    foreign_client: pki.IssuedCertificate
    tmp: Path


def _issue_without_ae_title(root: Path, out: Path) -> pki.IssuedCertificate:
    """A valid client certificate from our root that binds no AE title (no dicom-ae: SAN);
    `aiodicom pki` cannot make one, a third-party CA can."""
    from aiodicom.app.pki.ca import load_ca_pair

    issuer, issuer_key = load_ca_pair(root / "ca.crt")
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "generic device")]))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .sign(issuer_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    crt, keyfile = out.with_suffix(".crt"), out.with_suffix(".key")
    crt.write_bytes(cert.public_bytes(Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    os.chmod(keyfile, 0o600)
    record = pki.list_certs(root)[0]  # any record: only .cert/.key are used here
    return pki.IssuedCertificate(cert=crt, key=keyfile, record=record)


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    tmp = tmp_path_factory.mktemp("server-tls")
    a, b = tmp / "ca-a", tmp / "ca-b"
    pki.init_ca(a, org="East")
    now = datetime.now(UTC)
    server = pki.issue_server(a, name="localhost", ips=["127.0.0.1"], out=tmp / "server")
    client = pki.issue_client(
        a, ae_titles=["STORESCU"], org="East", groups=["ct"], out=tmp / "client"
    )
    expired = pki.issue_client(
        a, ae_titles=["OLD"], out=tmp / "expired",
        not_before=now - timedelta(days=10), not_after=now - timedelta(days=1),
    )
    revoked = pki.issue_client(a, ae_titles=["GONE"], out=tmp / "revoked")
    pki.revoke(a, revoked.cert)
    crl = pki.write_crl(a)
    no_ae = _issue_without_ae_title(a, tmp / "no-ae")
    pki.init_ca(b)
    foreign_client = pki.issue_client(b, ae_titles=["STORESCU"], out=tmp / "foreign")
    return PKI(
        root=a, ca=a / "ca.crt", server=server, client=client, expired=expired,
        revoked=revoked, no_ae=no_ae, crl=crl, foreign_ca=b / "ca.crt",
        foreign_client=foreign_client, tmp=tmp,
    )


def _client_ctx(p: PKI, issued: pki.IssuedCertificate) -> ssl.SSLContext:
    return tls.client_context(cert=issued.cert, key=issued.key, ca=p.ca)


def _settings(ae: str = "STORESCU", **timeouts: Any) -> AssociationSettings:
    return AssociationSettings(ae_title=ae, timeouts=Timeouts(**{
        "connect": 5, "tls_handshake": 5, "acse": 5, "dimse": 5, **timeouts}))


class Harness:
    """A TLS `Server` that records what its handlers saw."""

    def __init__(self, *, require_ae_binding: bool = False,
                 settings: AssociationSettings | None = None) -> None:
        self.identities: list[Any] = []
        self.stored: list[bytes] = []
        self.server = Server(
            admission=Admission(
                policy=storage_acceptor_policy("AIODICOM", max_pdu_length=1 << 20),
                identify=tls.identity_from_ssl_object,
                require_ae_binding=require_ae_binding,
            ),
            handlers=Handlers(echo=self._echo, store=self._store),
            settings=settings or _settings("AIODICOM"),
        )
        self.port = 0

    async def _echo(self, request: EchoRequest) -> Status:
        self.identities.append(request.association.identity)
        return Status.SUCCESS

    async def _store(self, request: StoreRequest) -> Status:
        self.identities.append(request.association.identity)
        parts = [bytes(v) async for v in request.fragments()]
        self.stored.append(b"".join(parts))
        return Status.SUCCESS

    async def start(self, ctx: ssl.SSLContext) -> Harness:
        _, self.port = await self.server.listen("127.0.0.1", 0, tls=ctx)
        return self

    async def echo(self, ctx: ssl.SSLContext, ae: str = "STORESCU") -> Status:
        async with connect("127.0.0.1", self.port, called_ae_title="AIODICOM",
                           settings=_settings(ae), tls=ctx) as assoc:
            return await assoc.echo()

    async def refused(self, ctx: ssl.SSLContext, ae: str = "STORESCU") -> DicomError:
        """Connect and echo; return the aiodicom error (fails if it worked or hung)."""
        before = len(self.identities)
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await asyncio.wait_for(self.echo(ctx, ae), 8)
        except DicomError as exc:
            assert loop.time() - start < 6, "the refusal took longer than the timeouts"
            assert len(self.identities) == before, "a handler ran for a refused client"
            return exc
        raise AssertionError("the connection was accepted")


def _server_ctx(p: PKI, *, crl: bool = False) -> ssl.SSLContext:
    return tls.server_context(cert=p.server.cert, key=p.server.key, ca=p.ca,
                              crl=p.crl if crl else None)


async def _with_server(ctx: ssl.SSLContext, body: Any, **kw: Any) -> Any:
    h = await Harness(**kw).start(ctx)
    try:
        return await body(h)
    finally:
        await h.server.close(drain_timeout=2)


# --- the legitimate path ---------------------------------------------------------------------


def test_mutual_tls_echo_store_and_identity(run: Any, p: PKI, tmp_path: Path) -> None:
    path = write_ct(tmp_path / "ct.dcm", size=70_000)

    async def body(h: Harness) -> tuple[list[Status], list[Any], list[bytes]]:
        async with connect("127.0.0.1", h.port, called_ae_title="AIODICOM",
                           contexts=storage_contexts_for([path]), settings=_settings(),
                           tls=_client_ctx(p, p.client), server_hostname="localhost") as assoc:
            statuses = [await assoc.echo(), await assoc.store(path)]
        return statuses, h.identities, h.stored

    statuses, identities, stored = run(_with_server(_server_ctx(p, crl=True), body))
    assert statuses == [Status.SUCCESS, Status.SUCCESS]
    assert len(identities) == 2
    for ident in identities:
        assert isinstance(ident, tls.PeerIdentity)
        assert ident.ae_titles == ("STORESCU",)
        assert ident.organization == "East"
        assert ident.groups == ("ct",)
    info = read_part10_info(path)
    assert stored == [path.read_bytes()[info.dataset_offset:]]


# --- certificates the server must refuse -------------------------------------------------------


@pytest.mark.parametrize("which", ["foreign", "expired", "revoked", "none", "server-eku"])
def test_untrusted_client_refused_then_legit_served(p: PKI, which: str) -> None:
    if which == "none":
        bad = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        bad.load_verify_locations(cafile=p.ca)
    else:
        # server-eku: our own server certificate (EKU serverAuth only) used as a client's.
        bad = _client_ctx(p, {"foreign": p.foreign_client, "expired": p.expired,
                              "revoked": p.revoked, "server-eku": p.server}[which])

    async def body(h: Harness) -> DicomError:
        exc = await h.refused(bad)
        assert await h.echo(_client_ctx(p, p.client)) == Status.SUCCESS
        assert len(h.identities) == 1
        assert h.server.stats.accepted == 1
        return exc

    exc = make_runner("asyncio")(_with_server(_server_ctx(p, crl=True), body))
    assert isinstance(exc, TLSError), repr(exc)


def test_refusals_on_uvloop_too(p: PKI) -> None:
    async def body(h: Harness) -> list[DicomError]:
        errors = [await h.refused(_client_ctx(p, p.foreign_client)),
                  await h.refused(_client_ctx(p, p.revoked))]
        assert await h.echo(_client_ctx(p, p.client)) == Status.SUCCESS
        return errors

    errors = make_runner("uvloop")(_with_server(_server_ctx(p, crl=True), body))
    assert all(isinstance(e, TLSError) for e in errors), errors


def test_tls11_client_refused(p: PKI) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    client.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point here
        warnings.simplefilter("ignore", DeprecationWarning)
        client.minimum_version = ssl.TLSVersion.TLSv1_1
        client.maximum_version = ssl.TLSVersion.TLSv1_1
    client.set_ciphers("DEFAULT:@SECLEVEL=0")
    client.load_cert_chain(p.client.cert, p.client.key)

    async def body(h: Harness) -> DicomError:
        exc = await h.refused(client)
        assert await h.echo(_client_ctx(p, p.client)) == Status.SUCCESS
        return exc

    exc = make_runner("asyncio")(_with_server(_server_ctx(p), body))
    # Whether the local OpenSSL could not even offer TLS 1.1 ("no protocols available") or the
    # server refused the version, the handshake fails: a TLSError, never an association.
    assert isinstance(exc, TLSError), repr((exc, exc.__cause__))
    assert isinstance(exc.__cause__, ssl.SSLError | ConnectionResetError), repr(exc.__cause__)


# --- AE title binding ------------------------------------------------------------------------


def test_calling_ae_not_bound_to_certificate_rejected(p: PKI, caplog: Any) -> None:
    async def body(h: Harness) -> DicomError:
        exc = await h.refused(_client_ctx(p, p.client), ae="SPOOFED")
        assert await h.echo(_client_ctx(p, p.client), ae="STORESCU") == Status.SUCCESS
        return exc

    exc = make_runner("asyncio")(_with_server(_server_ctx(p), body))
    assert isinstance(exc, AssociationRejected)
    assert (exc.result, exc.source, exc.reason) == (1, 1, 3)
    assert "'SPOOFED' is not bound to certificate" in caplog.text


@pytest.mark.parametrize("require", [True, False])
def test_certificate_naming_no_ae_title(p: PKI, require: bool) -> None:
    ctx = _client_ctx(p, p.no_ae)

    async def body(h: Harness) -> Any:
        if require:
            return await h.refused(ctx, ae="ANYTHING")
        return await h.echo(ctx, ae="ANYTHING")

    result = make_runner("asyncio")(
        _with_server(_server_ctx(p), body, require_ae_binding=require))
    if require:
        assert isinstance(result, AssociationRejected)
        assert (result.result, result.source, result.reason) == (1, 1, 3)
    else:
        assert result == Status.SUCCESS


# --- wrong protocol on the port ----------------------------------------------------------------


def test_plain_dicom_on_tls_port_and_tls_on_plain_port(run: Any, p: PKI) -> None:
    async def main() -> tuple[DicomError, DicomError]:
        h = await Harness().start(_server_ctx(p))
        _, plain_port = await h.server.listen("127.0.0.1", 0)
        loop = asyncio.get_running_loop()
        errors: list[DicomError] = []
        try:
            for port, ctx in ((h.port, None), (plain_port, _client_ctx(p, p.client))):
                start = loop.time()
                try:
                    async with connect("127.0.0.1", port, settings=_settings(), tls=ctx):
                        pass
                except DicomError as exc:
                    errors.append(exc)
                else:
                    raise AssertionError(f"port {port} accepted the wrong protocol")
                assert loop.time() - start < 4.5  # not a timeout: a clean refusal
            assert await h.echo(_client_ctx(p, p.client)) == Status.SUCCESS
            async with connect("127.0.0.1", plain_port, settings=_settings()) as assoc:
                assert await assoc.echo() == Status.SUCCESS
        finally:
            await h.server.close(drain_timeout=2)
        return errors[0], errors[1]

    plain_on_tls, tls_on_plain = run(main())
    assert isinstance(plain_on_tls, AssociationAborted | TLSError), repr(plain_on_tls)
    assert not isinstance(plain_on_tls, AcseTimeout)
    assert isinstance(tls_on_plain, TLSError), repr(tls_on_plain)


# --- resource exhaustion ---------------------------------------------------------------------

HALF_CLIENT_HELLO = bytes.fromhex("16030100c4010000c00303") + b"\x00" * 20


def test_stalled_handshakes_do_not_block_and_are_dropped(run: Any, p: PKI) -> None:
    handshake_timeout = 1.5

    async def main() -> tuple[float, list[float]]:
        settings = _settings("AIODICOM", tls_handshake=handshake_timeout)
        h = await Harness(settings=settings).start(_server_ctx(p))
        loop = asyncio.get_running_loop()
        stalled: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        try:
            opened = loop.time()
            for i in range(30):  # under the per-address cap (tests/hostile/test_handshake_caps)
                reader, writer = await asyncio.open_connection("127.0.0.1", h.port)
                if i % 2:
                    writer.write(HALF_CLIENT_HELLO)
                stalled.append((reader, writer))
            t0 = loop.time()
            assert await h.echo(_client_ctx(p, p.client)) == Status.SUCCESS
            legit = loop.time() - t0

            async def closed_after(reader: asyncio.StreamReader) -> float:
                with contextlib.suppress(ConnectionError):
                    while await reader.read(4096):
                        pass
                return loop.time() - opened

            drops = await asyncio.wait_for(
                asyncio.gather(*(closed_after(r) for r, _ in stalled)), handshake_timeout + 5)
        finally:
            for _, writer in stalled:
                writer.close()
            await h.server.close(drain_timeout=2)
        assert h.server.active == 0
        return legit, drops

    legit, drops = run(main())
    assert legit < handshake_timeout
    assert min(drops) >= handshake_timeout * 0.8  # dropped by the timeout, not at once
    assert max(drops) < handshake_timeout + 4


# --- live reload -----------------------------------------------------------------------------


def _place(src: Path, dst: Path) -> None:
    tmp = dst.with_suffix(".tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def test_reload_refuses_old_ca_keeps_open_association(run: Any, p: PKI, tmp_path: Path) -> None:
    live = tmp_path / "live"
    live.mkdir()
    _place(p.server.cert, live / "server.crt")
    _place(p.server.key, live / "server.key")
    _place(p.ca, live / "ca.crt")
    reloading = tls.ReloadingServerContext(
        cert=live / "server.crt", key=live / "server.key", ca=live / "ca.crt",
        check_interval=3600,
    )
    old = _client_ctx(p, p.client)
    # The foreign client still verifies our server certificate against root A.
    new = tls.client_context(cert=p.foreign_client.cert, key=p.foreign_client.key, ca=p.ca)

    async def body(h: Harness) -> None:
        before = await open_association("127.0.0.1", h.port, called_ae_title="AIODICOM",
                                        settings=_settings(), tls=old)
        try:
            assert await before.echo() == Status.SUCCESS
            assert isinstance(await h.refused(new), TLSError)
            _place(p.foreign_ca, live / "ca.crt")
            assert reloading.reload() is True
            assert isinstance(await h.refused(old), TLSError)
            assert await h.echo(new) == Status.SUCCESS
            assert await before.echo() == Status.SUCCESS  # opened before: still served
        finally:
            await before.release()
        assert h.server.stats.accepted == 2  # `before` and the new-CA client

    run(_with_server(reloading.context, body))


def test_silent_peer_after_handshake_dropped_by_artim(run: Any, p: PKI) -> None:
    """A verified client that completes TLS but never sends A-ASSOCIATE-RQ holds nothing
    for long: ARTIM (PS3.8 §9.1.5) closes the connection."""

    async def main() -> float:
        h = await Harness(settings=_settings("AIODICOM", artim=1.0)).start(_server_ctx(p))
        loop = asyncio.get_running_loop()
        try:
            start = loop.time()
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", h.port, ssl=_client_ctx(p, p.client), server_hostname="localhost")
            try:
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    assert await asyncio.wait_for(reader.read(), 6) == b""
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError, ssl.SSLError):
                    await writer.wait_closed()
            elapsed = loop.time() - start
            assert await h.echo(_client_ctx(p, p.client)) == Status.SUCCESS
        finally:
            await h.server.close(drain_timeout=2)
        assert h.server.active == 0
        return elapsed

    assert 0.8 <= run(main()) < 4
