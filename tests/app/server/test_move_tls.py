"""C-MOVE to destinations over mutual TLS (issue 17 item 3): the `move_destinations` table
form, checked at start, and end to end from `aiodicom serve`'s own server (`build_server`)
to an in-process TLS destination: trusted, untrusted and misnamed."""

from __future__ import annotations

import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aiodicom.aio import tls
from aiodicom.aio.client import RemoteAE, connect, storage_contexts_for
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Admission, Handlers, Server
from aiodicom.app import pki
from aiodicom.app.server.config import ServeOptions, load_config, merge
from aiodicom.app.server.destinations import TLSFiles, parse_move_destinations
from aiodicom.app.server.run import build_server, storage_acceptor_policy
from aiodicom.app.server.workers import worker_config
from aiodicom.core.dimse import Status
from aiodicom.core.qr import qr_contexts
from aiodicom.errors import ConfigurationError
from aiodicom.settings import AssociationSettings
from tests.conftest import write_ct


@dataclass
class PKI:
    ca: Path
    dest: pki.IssuedCertificate
    """The destination's server certificate (localhost, 127.0.0.1), from our CA."""
    foreign_dest: pki.IssuedCertificate
    """A destination certificate from a CA we do not trust."""
    us: pki.IssuedCertificate
    """Our client certificate, bound to AE title AIODICOM."""


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    tmp = tmp_path_factory.mktemp("move-tls")
    pki.init_ca(tmp / "ca")
    pki.init_ca(tmp / "other")
    return PKI(
        ca=tmp / "ca" / "ca.crt",
        dest=pki.issue_server(tmp / "ca", name="localhost", ips=["127.0.0.1"],
                              out=tmp / "dest"),
        foreign_dest=pki.issue_server(tmp / "other", name="localhost", ips=["127.0.0.1"],
                                      out=tmp / "foreign"),
        us=pki.issue_client(tmp / "ca", ae_titles=["AIODICOM"], out=tmp / "us"),
    )


def _tls_table(p: PKI) -> dict[str, str]:
    return {"ca": str(p.ca), "cert": str(p.us.cert), "key": str(p.us.key)}


# --- configuration ---------------------------------------------------------------------------


def test_plain_string_and_table_forms(p: PKI) -> None:
    found = parse_move_destinations({
        "OLD": "10.0.0.1:104",
        "PLAIN": {"address": "[::1]:11112"},
        "PACS": {"address": "127.0.0.1:2762", "tls": _tls_table(p), "server_name": "pacs"},
    })
    assert found["OLD"] == RemoteAE("10.0.0.1", 104)
    assert found["PLAIN"] == RemoteAE("::1", 11112)
    pacs = found["PACS"]
    assert (pacs.host, pacs.port, pacs.server_hostname) == ("127.0.0.1", 2762, "pacs")
    assert isinstance(pacs.tls, ssl.SSLContext)
    assert pacs.tls.verify_mode == ssl.CERT_REQUIRED and pacs.tls.check_hostname


def test_tls_listener_uses_the_serve_certificate(p: PKI) -> None:
    entry = {"PACS": {"address": "127.0.0.1:2762", "tls": "listener"}}
    listener = TLSFiles(cert=p.us.cert, key=p.us.key, ca=p.ca)
    assert parse_move_destinations(entry, listener=listener)["PACS"].tls is not None
    with pytest.raises(ConfigurationError, match=r"move_destinations\.PACS\.tls = \"listener\""
                       r" needs the listener's --cert, --key and --ca"):
        parse_move_destinations(entry)
    # an `aiodicom pki issue server` certificate is serverAuth only: a destination would
    # refuse it at every C-MOVE, so it is refused at start
    server_only = TLSFiles(cert=p.dest.cert, key=p.dest.key, ca=p.ca)
    with pytest.raises(ConfigurationError, match=r"move_destinations\.PACS\.tls: .*clientAuth"):
        parse_move_destinations(entry, listener=server_only)


@pytest.mark.parametrize(("entry", "message"), [
    ({"adress": "h:1"}, r"move_destinations\.PACS: unknown key 'adress'"),
    ({"tls": "listener"}, r"move_destinations\.PACS: address = \"host:port\" is missing"),
    ({"address": "h"}, r"move_destinations\.PACS\.address must be \"host:port\""),
    ({"address": "h:1", "server_name": "x"}, r"server_name needs move_destinations\.PACS\.tls"),
    ({"address": "h:1", "tls": "yes"}, r"move_destinations\.PACS\.tls must be \"listener\""),
    ({"address": "h:1", "tls": {"ca": "x", "crl": "y"}},
     r"move_destinations\.PACS\.tls: unknown key 'crl'"),
    ({"address": "h:1", "tls": {"ca": "/nonexistent/ca.crt", "cert": "c", "key": "k"}},
     r"move_destinations\.PACS\.tls\.ca /nonexistent/ca.crt: no such file"),
    ({"address": "h:1", "tls": {"ca": __file__}},
     r"move_destinations\.PACS\.tls\.cert \(a PEM file\) is missing"),
])
def test_bad_tables_name_the_key(entry: dict[str, Any], message: str, p: PKI) -> None:
    with pytest.raises(ConfigurationError, match=message):
        parse_move_destinations({"PACS": entry})
    with pytest.raises(ConfigurationError, match=message):
        ServeOptions(port=0, move_destinations={"PACS": entry}).check()


def test_toml_table_form_and_the_workers_config(tmp_path: Path, p: PKI) -> None:
    config = tmp_path / "aiodicom.toml"
    config.write_text(
        '[move_destinations]\nOLD = "10.0.0.1:104"\n'
        '[move_destinations.PACS]\naddress = "127.0.0.1:2762"\nserver_name = "localhost"\n'
        f'tls = {{ ca = "{p.ca}", cert = "{p.us.cert}", key = "{p.us.key}" }}\n')
    options = merge(load_config(config), {"port": 0, "workers": 2})
    assert options.move_destinations["PACS"]["tls"]["ca"] == str(p.ca)
    worker = tmp_path / "worker.toml"
    worker.write_text(worker_config(options), encoding="utf-8")
    assert merge(load_config(worker), {}).move_destinations == options.move_destinations


# --- end to end ------------------------------------------------------------------------------


class Destination:
    """A TLS storage SCP called PACS that binds the calling AE title to the certificate."""

    def __init__(self, cert: pki.IssuedCertificate, ca: Path) -> None:
        self.stored: list[str] = []
        self.callers: list[Any] = []
        self.context = tls.server_context(cert=cert.cert, key=cert.key, ca=ca)
        self.server = Server(
            admission=Admission(
                policy=storage_acceptor_policy("PACS", max_pdu_length=1 << 20),
                identify=tls.identity_from_ssl_object,
                require_ae_binding=True,
            ),
            handlers=Handlers(store=self._store),
            settings=AssociationSettings(ae_title="PACS"),
        )

    async def _store(self, request: StoreRequest) -> Status:
        self.callers.append(request.association.identity)
        self.stored.append(str((await request.dataset()).SOPInstanceUID))
        return Status.SUCCESS


async def _move_through_serve(tmp_path: Path, dest: Destination,
                              entry: dict[str, Any]) -> Any:
    """Store one CT into a `build_server` server, then C-MOVE its study to PACS."""
    _, dest_port = await dest.server.listen("127.0.0.1", 0, tls=dest.context)
    entry = {"address": f"127.0.0.1:{dest_port}", **entry}
    options = ServeOptions(port=0, storage=tmp_path / "store",
                           move_destinations={"PACS": entry}).check()
    server, _ = build_server(options)
    ct = write_ct(tmp_path / "ct.dcm")
    try:
        host, port = await server.listen("127.0.0.1", 0)
        async with connect(host, port, called_ae_title="AIODICOM",
                           contexts=storage_contexts_for([ct])) as assoc:
            assert await assoc.store(ct) == Status.SUCCESS
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = "1.2.3.4.5"
        async with connect(host, port, called_ae_title="AIODICOM",
                           contexts=qr_contexts()) as assoc:
            return await assoc.move(query, "PACS")
    finally:
        await server.close(drain_timeout=2)
        await dest.server.close(drain_timeout=2)


def test_move_to_a_tls_destination(run: Any, tmp_path: Path, p: PKI) -> None:
    dest = Destination(p.dest, p.ca)
    result = run(_move_through_serve(tmp_path, dest, {"tls": _tls_table(p),
                                                      "server_name": "localhost"}))
    assert result.status == Status.SUCCESS and result.completed == 1 and result.failed == 0
    assert len(dest.stored) == 1
    identity = dest.callers[0]
    assert identity is not None and "AIODICOM" in identity.ae_titles


@pytest.mark.parametrize(("which", "server_name", "why"), [
    ("foreign", None, "certificate we do not trust: unable to get local issuer"),
    ("ours", "pacs.example", "certificate we do not trust: Hostname mismatch"),
])
def test_untrusted_destination_fails_the_sub_operations(
        run: Any, tmp_path: Path, p: PKI, caplog: pytest.LogCaptureFixture,
        which: str, server_name: str | None, why: str) -> None:
    """A destination whose certificate our CA did not sign, or that names another host:
    nothing is sent, the C-MOVE answers 0xA702 and the log says why."""
    dest = Destination(p.foreign_dest if which == "foreign" else p.dest, p.ca)
    entry: dict[str, Any] = {"tls": _tls_table(p)}
    if server_name:
        entry["server_name"] = server_name
    with caplog.at_level(logging.WARNING):
        result = run(_move_through_serve(tmp_path, dest, entry))
    assert result.status == 0xA702 and result.failed == 1 and result.completed == 0
    assert dest.stored == []
    lines = [r.getMessage() for r in caplog.records if "C-MOVE destination 'PACS'" in
             r.getMessage()]
    assert lines and why in lines[0], caplog.text


def test_plain_destination_string_still_plain(p: PKI) -> None:
    assert parse_move_destinations({"DEST": "127.0.0.1:104"})["DEST"].tls is None
