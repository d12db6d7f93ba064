"""Mutual TLS peers sending the very same A-ASSOCIATE-RQ bytes: the set-up memo answers the
repeat, but a certificate that does not bind the calling AE title, or whose organization the
access policy refuses, is still refused; the peer it was memoized for is still accepted."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio import _setup_memo, tls
from aiodicom.aio.client import connect
from aiodicom.aio.server import Admission, Server
from aiodicom.app import pki
from aiodicom.app.server.policy import PolicyFile, make_authorizer
from aiodicom.app.server.run import storage_acceptor_policy
from aiodicom.core import upper_layer
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS
from aiodicom.errors import AssociationRejected
from aiodicom.settings import AssociationSettings, Timeouts

POLICY = """
default = "deny"
[[rule]]
organization = "St Elsewhere"
services = ["verification"]
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("memo-pki")
    ca = tmp / "ca"
    pki.init_ca(ca)
    (tmp / "policy.toml").write_text(POLICY)
    return {
        "ca": ca / "ca.crt",
        "policy": tmp / "policy.toml",
        "server": pki.issue_server(ca, name="localhost", ips=["127.0.0.1"], out=tmp / "srv"),
        "good": pki.issue_client(ca, ae_titles=["CT01"], org="St Elsewhere", out=tmp / "good"),
        "wrong_ae": pki.issue_client(ca, ae_titles=["CT02"], org="St Elsewhere",
                                     out=tmp / "wrong"),
        "other_org": pki.issue_client(ca, ae_titles=["CT01"], org="Elsewhere General",
                                      out=tmp / "other"),
    }


def test_memo_hit_keeps_binding_and_policy_per_peer(run: Any, certs: dict[str, Any],
                                                    tmp_path: Path) -> None:
    upper_layer._RQ_MEMO.clear()
    _setup_memo.clear()

    def client(name: str) -> ssl.SSLContext:
        issued = certs[name]
        return tls.client_context(cert=issued.cert, key=issued.key, ca=certs["ca"])

    async def session(port: int, name: str) -> Status:
        settings = AssociationSettings(ae_title="CT01", timeouts=Timeouts(acse=5, dimse=5))
        async with connect("127.0.0.1", port, called_ae_title="AIODICOM", settings=settings,
                           contexts=[(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])],
                           tls=client(name), server_hostname="localhost") as assoc:
            return await assoc.echo()

    async def body() -> None:
        server = Server(admission=Admission(
            policy=storage_acceptor_policy("AIODICOM", max_pdu_length=1 << 20),
            identify=tls.identity_from_ssl_object, require_ae_binding=True,
            authorize=make_authorizer(PolicyFile(certs["policy"]))))
        ctx = tls.server_context(cert=certs["server"].cert, key=certs["server"].key,
                                 ca=certs["ca"])
        _, port = await server.listen("127.0.0.1", 0, tls=ctx)
        try:
            assert await session(port, "good") == Status.SUCCESS
            assert len(upper_layer._RQ_MEMO) == 1 and len(_setup_memo._MEMO) == 1
            (rq,) = upper_layer._RQ_MEMO.values()
            for name, reason in (("wrong_ae", 3), ("other_org", 1), ("wrong_ae", 3)):
                with pytest.raises(AssociationRejected) as err:
                    await session(port, name)
                assert (err.value.result, err.value.source, err.value.reason) == (1, 1, reason)
            assert await session(port, "good") == Status.SUCCESS
            # every peer sent the same bytes: one decoded RQ, one negotiation, all along
            assert [v is rq for v in upper_layer._RQ_MEMO.values()] == [True]
            assert [e.rq is rq for e in _setup_memo._MEMO.values()] == [True]
            assert server.stats.accepted == 2 and server.stats.rejected == 3
        finally:
            await server.close(drain_timeout=2)

    run(body())
