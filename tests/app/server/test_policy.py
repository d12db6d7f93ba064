"""The access policy file: parsing, matching, services, reload, and a TLS Server end to end."""

from __future__ import annotations

import logging
import os
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio import tls
from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Admission, Handlers, Server
from aiodicom.app import pki
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.policy import (
    AccessPolicy,
    PolicyFile,
    Service,
    make_authorizer,
    make_request_filter,
    service_of,
)
from aiodicom.app.server.run import build_server, storage_acceptor_policy
from aiodicom.core.dimse import CCancelRQ, CEchoRQ, CFindRQ, CMoveRQ, CStoreRQ, Status
from aiodicom.core.negotiation import build_request
from aiodicom.errors import AssociationRejected, ConfigurationError
from aiodicom.settings import AssociationSettings, Timeouts
from tests.conftest import make_runner, write_ct

EXAMPLE = Path(__file__).parents[3] / "examples" / "policy.toml"
sync = make_runner("asyncio")


def ident(org: str | None = "St Elsewhere", *groups: str) -> tls.PeerIdentity:
    return tls.PeerIdentity(
        subject="CN=X", common_name="X", organization=org, groups=groups, ae_titles=(),
        fingerprint_sha256="00", serial=1, not_after=datetime(2100, 1, 1, tzinfo=UTC),
    )


def info(identity: Any, calling: str = "CT01", called: str = "AIODICOM") -> AssociationInfo:
    return AssociationInfo(id=7, calling_ae_title=calling, called_ae_title=called,
                           peer_address=("127.0.0.1", 5), identity=identity)


def policy(text: str) -> AccessPolicy:
    return AccessPolicy.from_toml(text, source="p.toml")


# -- parsing -----------------------------------------------------------------------------------


def test_example_file_parses() -> None:
    p = AccessPolicy.load(EXAMPLE)
    assert p.default == "deny" and len(p.rules) == 5
    rule = p.rules[1]
    assert rule.index == 2 and rule.group == "radiology"
    assert rule.calling_ae == ("CT*", "MR_?") and rule.called_ae == ("AIODICOM",)
    assert rule.services == {"verification", "storage"}
    assert p.rules[0].services == frozenset() and p.rules[4].plain is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("defualt = 'deny'", "unknown key 'defualt'"),
        ("default = 'maybe'", "key 'default'"),
        ("default = 1", "key 'default'"),
        ("rule = 3", "array of tables"),
        ("[[rule]]\norganisation = 'X'", "rule 1: unknown key 'organisation'"),
        ("[[rule]]\n[[rule]]\ngroup = 3", "rule 2: key 'group' must be a non-empty string"),
        ("[[rule]]\norganization = ''", "rule 1: key 'organization'"),
        ("[[rule]]\ncalling_ae = [1]", "rule 1: key 'calling_ae'"),
        ("[[rule]]\ncalled_ae = ['A\\\\B']", "rule 1: key 'called_ae'"),
        ("[[rule]]\nservices = ['storage', 'stroage']", "rule 1: key 'services': unknown "
                                                       "service 'stroage'"),
        ("[[rule]]\nservices = 'storage'", "rule 1: key 'services' must be a list"),
        ("[[rule]]\nplain = 'yes'", "rule 1: key 'plain'"),
        ("[[rule]]\nplain = true\norganization = 'X'", "rule 1: key 'plain'"),
        ("[[rule", "not valid TOML"),
    ],
)
def test_errors_name_the_key_and_rule(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match="p.toml") as err:
        policy(text)
    assert message in str(err.value)


def test_missing_file_is_a_configuration_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="cannot read policy file"):
        PolicyFile(tmp_path / "nope.toml")


# -- matching --------------------------------------------------------------------------------------


def test_first_matching_rule_decides_by_org_group_and_ae() -> None:
    p = AccessPolicy.load(EXAMPLE)
    radiology = ident("St Elsewhere", "radiology")
    assert p.decide(info(radiology, "CT01")).rule == 2
    assert p.allowed_services(info(radiology, "MR_1")) == {"verification", "storage"}
    reading = ident("St Elsewhere", "reading", "other")
    assert p.allowed_services(info(reading, "WS1", "ANYTHING")) == {
        "verification", "query", "retrieve"}
    assert p.allowed_services(info(ident("Partner Clinic"), "X")) == {"verification"}
    # the deny rule comes first: CT_OLD is refused although it matches rule 2's patterns
    old = p.decide(info(radiology, "CT_OLD"))
    assert not old.allowed and old.rule == 1 and old.reason == 1 and "rule 1" in old.why


def test_refusal_reasons() -> None:
    p = AccessPolicy.load(EXAMPLE)
    radiology = ident("St Elsewhere", "radiology")
    calling = p.decide(info(radiology, "US01"))
    assert (calling.allowed, calling.reason) == (False, 3)
    assert "calling AE 'US01'" in calling.why
    called = p.decide(info(radiology, "MR_2", "OTHER_SCP"))
    assert (called.allowed, called.reason) == (False, 7)
    assert called.why == ("certificate O=St Elsewhere OU=radiology calling AE 'MR_2' matches "
                          "no rule allowing called AE 'OTHER_SCP'")
    nobody = p.decide(info(ident("Elsewhere General", "ct")))
    assert (nobody.allowed, nobody.reason, nobody.services) == (False, 1, frozenset())
    assert "default is deny" in nobody.why
    # MR_10 has two characters after the underscore: '?' is exactly one
    assert p.decide(info(radiology, "MR_10")).reason == 3


def test_patterns_are_case_sensitive_and_trimmed() -> None:
    p = policy("[[rule]]\ncalling_ae = ['CT*']\nservices = ['storage']")
    assert p.decide(info(ident(), "CT01  ")).allowed
    assert not p.decide(info(ident(), "ct01")).allowed


def test_default_allow_applies_only_to_peers_no_rule_names() -> None:
    p = policy("default = 'allow'\n[[rule]]\ngroup = 'ct'\ncalling_ae = ['CT*']\n"
               "services = ['storage']")
    assert p.allowed_services(info(ident("Any", "mr"), "MR1")) == set(Service)
    assert p.decide(info(ident("Any", "ct"), "MR1")).reason == 3
    assert p.allowed_services(info(ident("Any", "ct"), "CT9")) == {"storage"}


def test_plain_associations() -> None:
    p = AccessPolicy.load(EXAMPLE)
    assert p.allowed_services(info(None, "MONITOR")) == {"verification"}
    assert p.decide(info(None, "CT01")).reason == 3
    # a certificate never matches a plain = true rule
    assert not p.decide(info(ident("Unknown"), "MONITOR")).allowed
    any_peer = policy("[[rule]]\ncalling_ae = ['A*']\nservices = ['storage']\n"
                      "[[rule]]\nplain = false\nservices = ['verification']\n")
    assert any_peer.decide(info(ident(), "AE1")).rule == 1
    # fail closed: only a plain = true rule admits a peer without a certificate
    assert not any_peer.decide(info(None, "AE1")).allowed
    assert not any_peer.decide(info(None, "B1")).allowed
    assert any_peer.decide(info(ident(), "B1")).rule == 2
    org_only = policy("default = 'allow'\n[[rule]]\norganization = 'X'\nservices = []")
    assert org_only.decide(info(None)).allowed  # no rule names plain peers: the default


def test_services_of_requests() -> None:
    assert service_of(CEchoRQ(message_id=1)) == Service.VERIFICATION
    assert service_of(CStoreRQ(message_id=1, affected_sop_class_uid="1.2",
                               affected_sop_instance_uid="1.2.3")) == Service.STORAGE
    assert service_of(CFindRQ(message_id=1, affected_sop_class_uid="1.2")) == Service.QUERY
    assert service_of(CMoveRQ(message_id=1, affected_sop_class_uid="1.2",
                              move_destination="X")) == Service.RETRIEVE
    assert service_of(CCancelRQ(message_id_being_responded_to=1)) is None


def test_request_filter_and_authorizer_log_one_line(caplog: pytest.LogCaptureFixture) -> None:
    p = AccessPolicy.load(EXAMPLE)
    check = make_request_filter(p)
    clinic = info(ident("Partner Clinic"), "X")
    store = CStoreRQ(message_id=1, affected_sop_class_uid="1.2", affected_sop_instance_uid="1.3")
    caplog.set_level(logging.INFO, logger="aiodicom.policy")
    assert check(clinic, CEchoRQ(message_id=1)) is None
    assert check(clinic, store) == Status.NOT_AUTHORIZED == 0x0124
    assert check(clinic, CCancelRQ(message_id_being_responded_to=1)) is None
    assert len(caplog.records) == 1
    assert "C-STORE-RQ refused" in caplog.text and "O=Partner Clinic" in caplog.text
    assert "verification" in caplog.text
    caplog.clear()
    authorize = make_authorizer(p)
    rq = build_request(called_ae="AIODICOM", calling_ae="US01",
                       contexts=[("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])])
    radiology = info(ident("St Elsewhere", "radiology"), "US01")
    rj = sync(authorize(radiology, rq))
    assert rj is not None and (rj.result, rj.source, rj.reason) == (1, 1, 3)
    assert sync(authorize(info(ident("St Elsewhere", "radiology"), "CT01"), rq)) is None
    assert len(caplog.records) == 1 and "refused by policy" in caplog.text


# -- reload ----------------------------------------------------------------------------------------


def _rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()  # make the change visible even within one mtime tick
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_reload_and_bad_file_keeps_previous(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("default = 'deny'\n")
    pf = PolicyFile(path)
    assert not pf.maybe_reload()  # unchanged
    assert not pf.policy.decide(info(ident())).allowed
    _rewrite(path, "default = 'allow'\n")
    assert pf.maybe_reload()
    assert pf.policy.decide(info(ident())).allowed
    good = pf.policy
    caplog.set_level(logging.WARNING, logger="aiodicom.policy")
    _rewrite(path, "default = 'allow'\n[[rule]]\nservices = ['stroage']\n")
    assert not pf.maybe_reload()
    assert not pf.maybe_reload()  # same bad file: not read again, not warned again
    assert pf.policy is good
    assert len(caplog.records) == 1 and "rule 1: key 'services'" in caplog.text
    path.unlink()
    assert not pf.maybe_reload() and pf.policy is good
    assert len(caplog.records) == 2 and "cannot read" in caplog.text
    path.write_text("default = 'deny'\n")
    assert pf.maybe_reload() and not pf.policy.decide(info(ident())).allowed
    # SIGHUP: reload() reads even when nothing changed
    assert pf.reload()


def test_serve_wires_policy_into_server_and_reloads(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text("default = 'deny'\n")
    options = ServeOptions(port=0, policy=path, storage=tmp_path / "s").check()
    server, reloading = build_server(options)
    assert server.admission.authorize is not None and server.admission.request_filter is not None
    _rewrite(path, "default = 'allow'\n")
    reloading.maybe_reload()
    check = server.admission.request_filter
    assert check is not None and check(info(ident()), CEchoRQ(message_id=1)) is None
    with pytest.raises(ConfigurationError, match="--policy"):
        ServeOptions(port=0, policy=tmp_path / "missing.toml").check()


# -- end to end: a TLS Server and certificates from three organizations ----------------------------


POLICY = """
default = "deny"
[[rule]]
organization = "St Elsewhere"
group = "radiology"
calling_ae = ["CT*"]
services = ["verification", "storage"]
[[rule]]
organization = "Partner Clinic"
services = ["verification"]
"""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("policy-pki")
    ca = tmp / "ca"
    pki.init_ca(ca)
    (tmp / "policy.toml").write_text(POLICY)
    return {
        "ca": ca / "ca.crt",
        "policy": tmp / "policy.toml",
        "server": pki.issue_server(ca, name="localhost", ips=["127.0.0.1"], out=tmp / "srv"),
        "st": pki.issue_client(ca, ae_titles=["CT01"], org="St Elsewhere",
                               groups=["radiology"], out=tmp / "st"),
        "clinic": pki.issue_client(ca, ae_titles=["CT02"], org="Partner Clinic",
                                   out=tmp / "clinic"),
        "stranger": pki.issue_client(ca, ae_titles=["CT03"], org="Elsewhere General",
                                     out=tmp / "stranger"),
    }


def test_tls_server_enforces_policy(run: Any, certs: dict[str, Any], tmp_path: Path,
                                    caplog: pytest.LogCaptureFixture) -> None:
    path = write_ct(tmp_path / "ct.dcm", size=20_000)
    pf = PolicyFile(certs["policy"])
    stored: list[str] = []

    async def store(request: StoreRequest) -> Status:
        stored.append(request.association.calling_ae_title)
        async for _ in request.fragments():
            pass
        return Status.SUCCESS

    def client(name: str) -> ssl.SSLContext:
        issued = certs[name]
        return tls.client_context(cert=issued.cert, key=issued.key, ca=certs["ca"])

    async def session(port: int, name: str, ae: str) -> list[Status]:
        settings = AssociationSettings(ae_title=ae, timeouts=Timeouts(acse=5, dimse=5))
        async with connect("127.0.0.1", port, called_ae_title="AIODICOM", settings=settings,
                           contexts=storage_contexts_for([path]), tls=client(name),
                           server_hostname="localhost") as assoc:
            return [await assoc.echo(), await assoc.store(path), await assoc.echo()]

    async def body() -> None:
        server = Server(
            admission=Admission(
                policy=storage_acceptor_policy("AIODICOM", max_pdu_length=1 << 20),
                identify=tls.identity_from_ssl_object,
                authorize=make_authorizer(pf),
                request_filter=make_request_filter(pf),
            ),
            handlers=Handlers(store=store),
        )
        ctx = tls.server_context(cert=certs["server"].cert, key=certs["server"].key,
                                 ca=certs["ca"])
        _, port = await server.listen("127.0.0.1", 0, tls=ctx)
        try:
            assert await session(port, "st", "CT01") == [Status.SUCCESS] * 3
            assert await session(port, "clinic", "CT02") == [
                Status.SUCCESS, Status.NOT_AUTHORIZED, Status.SUCCESS]
            assert stored == ["CT01"]  # the handler never ran for the refused C-STORE
            with pytest.raises(AssociationRejected) as err:
                await session(port, "stranger", "CT03")
            assert (err.value.result, err.value.source, err.value.reason) == (1, 1, 1)
            assert server.stats.rejected == 1 and server.stats.accepted == 2
        finally:
            await server.close(drain_timeout=2)

    caplog.set_level(logging.WARNING, logger="aiodicom.policy")
    run(body())
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "C-STORE-RQ refused" in lines[0] and "O=Partner Clinic" in lines[0]
    assert "O=Elsewhere General OU=- calling AE 'CT03' matches no rule" in lines[1]
