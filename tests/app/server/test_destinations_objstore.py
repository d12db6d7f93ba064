"""A C-MOVE destination with ``tls = "listener"`` when --ca is an object-store URL (Azurite):
the configuration check passes without a local CA file, and the server's destinations verify
against the local mirror of that CA (app/server/trust_source.py); a C-MOVE then succeeds."""

from __future__ import annotations

import dataclasses
import itertools
import os
import ssl
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.app import pki
from aiodicom.app.pki.publish import publish
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.destinations import parse_move_destinations
from aiodicom.app.server.run import build_server
from aiodicom.app.server.trust_source import open_mirrors
from aiodicom.core.dimse import Status
from aiodicom.core.qr import qr_contexts
from aiodicom.errors import ConfigurationError
from tests.app.server.test_move_tls import Destination
from tests.conftest import write_ct
from tests.services.azurite import AzuriteServer

_containers = itertools.count()


@pytest.fixture
def site(azurite: AzuriteServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    container = f"dest{os.getpid()}x{next(_containers)}"
    azurite.create_container(container)
    for name, value in azurite.env().items():
        monkeypatch.setenv(name, value)
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    pki.write_crl(ca)
    url = f"az://{container}/site"
    publish(ca, url)
    return ca, url


def _options(tmp_path: Path, us: pki.IssuedCertificate, ca_url: str,
             dest_port: int = 2762) -> ServeOptions:
    return ServeOptions(
        port=0, storage=tmp_path / "store", cert=us.cert, key=us.key, ca=ca_url,
        move_destinations={"PACS": {"address": f"127.0.0.1:{dest_port}", "tls": "listener",
                                    "server_name": "localhost"}})


def test_listener_tls_with_a_store_ca_passes_the_check_and_uses_the_mirror(
        run: Any, tmp_path: Path, site: Any) -> None:
    ca, url = site
    us = pki.issue_client(ca, ae_titles=["AIODICOM"], out=tmp_path / "us")
    options = _options(tmp_path, us, f"{url}/ca.crt").check()  # raised before: no such file
    listener = options.listener_files()
    assert listener is not None and listener.ca is None  # not fetched yet

    async def mirrored() -> tuple[Path | None, Path, bytes, list[bytes]]:
        local, mirrors = await open_mirrors(options)
        assert mirrors is not None
        try:
            files = local.listener_files()
            assert files is not None
            dest = parse_move_destinations(local.move_destinations, listener=files)["PACS"]
            assert dest.tls is not None
            assert files.ca is not None
            return (files.ca, mirrors.directory, files.ca.read_bytes(),
                    dest.tls.get_ca_certs(binary_form=True))
        finally:
            mirrors.close()

    mirror, directory, mirrored_bytes, cas = run(mirrored())
    assert mirror.parent == directory  # the trust mirror, not a path derived from the URL
    assert mirrored_bytes == (ca / "ca.crt").read_bytes()
    assert cas == [ssl.PEM_cert_to_DER_cert((ca / "ca.crt").read_text())]  # our CA, only


def test_a_bad_listener_key_is_still_refused_at_the_check(tmp_path: Path, site: Any) -> None:
    ca, url = site
    us = pki.issue_client(ca, ae_titles=["AIODICOM"], out=tmp_path / "us")
    other = pki.issue_client(ca, ae_titles=["OTHER"], out=tmp_path / "other")
    options = dataclasses.replace(_options(tmp_path, us, f"{url}/ca.crt"), key=other.key)
    with pytest.raises(ConfigurationError, match=r"move_destinations\.PACS\.tls: cannot load"):
        options.check()


def test_move_to_a_listener_tls_destination_with_the_ca_from_the_store(
        run: Any, tmp_path: Path, site: Any) -> None:
    ca, url = site
    us = pki.issue_client(ca, ae_titles=["AIODICOM"], out=tmp_path / "us")
    dest = Destination(pki.issue_server(ca, name="localhost", ips=["127.0.0.1"],
                                        out=tmp_path / "dest"), ca / "ca.crt")
    ct = write_ct(tmp_path / "ct.dcm")

    async def main() -> Any:
        _, dest_port = await dest.server.listen("127.0.0.1", 0, tls=dest.context)
        options = _options(tmp_path, us, f"{url}/ca.crt", dest_port).check()
        local, mirrors = await open_mirrors(options)
        assert mirrors is not None
        server, _ = build_server(local)
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
            mirrors.close()

    result = run(main())
    assert result.status == Status.SUCCESS and result.completed == 1 and result.failed == 0
    assert len(dest.stored) == 1
    assert "AIODICOM" in dest.callers[0].ae_titles
