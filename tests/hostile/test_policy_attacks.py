"""Issue 17 item 6: the access policy fails closed (a half-written file, a plain-port peer
that only names an AE title, a file that does not parse)."""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from aiodicom.aio import tls
from aiodicom.aio.association import AssociationInfo
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.policy import AccessPolicy, PolicyFile, make_authorizer
from aiodicom.app.server.run import build_server
from aiodicom.core.negotiation import build_request
from aiodicom.errors import ConfigurationError
from tests.conftest import make_runner

sync = make_runner("asyncio")

FULL = """default = "deny"

[[rule]]
organization = "St Elsewhere"
group = "reading"
services = ["verification", "query", "retrieve"]

[[rule]]
organization = "St Elsewhere"
group = "radiology"
calling_ae = ["CT*"]
services = ["verification"]
"""


def reader(calling: str = "WS1") -> AssociationInfo:
    identity = tls.PeerIdentity(subject=f"CN={calling},OU=radiology,O=St Elsewhere",
                                organization="St Elsewhere", groups=("radiology",),
                                common_name=calling, ae_titles=(), fingerprint_sha256="00",
                                serial=1, not_after=datetime(2100, 1, 1, tzinfo=UTC))
    return AssociationInfo(id=1, calling_ae_title="CT01", called_ae_title="AIODICOM",
                           peer_address=("10.0.0.9", 1), identity=identity)


def plain(calling: str) -> AssociationInfo:
    return AssociationInfo(id=2, calling_ae_title=calling, called_ae_title="AIODICOM",
                           peer_address=("10.0.0.9", 2))


def _rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_policy_read_half_written_grants_nothing_it_does_not_list(tmp_path: Path) -> None:
    """Attacker wins a race with the admin's editor: the poll reads the file cut just before
    the last rule's ``services``. That rule used to grant every service; it grants none."""
    path = tmp_path / "policy.toml"
    path.write_text(FULL)
    policy = PolicyFile(path)
    assert policy.policy.allowed_services(reader()) == {"verification"}
    _rewrite(path, FULL[: FULL.rindex("services")])
    assert policy.maybe_reload()  # valid TOML: it is the policy now
    decision = policy.policy.decide(reader())
    assert not decision.allowed and decision.services == frozenset()


def test_policy_cut_mid_value_keeps_the_old_policy_and_logs_an_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(FULL)
    policy = PolicyFile(path)
    _rewrite(path, FULL[: FULL.rindex('"verification"]') + 5])
    with caplog.at_level(logging.ERROR):
        assert not policy.maybe_reload()
    assert [r.levelno for r in caplog.records] == [logging.ERROR]
    assert policy.policy.allowed_services(reader()) == {"verification"}


def test_a_policy_that_does_not_parse_stops_the_server_at_start(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(FULL[:40])
    with pytest.raises(ConfigurationError, match="not valid TOML"):
        build_server(ServeOptions(port=0, policy=path, storage=tmp_path / "s"))


def test_calling_ae_rule_does_not_admit_a_plain_port_peer() -> None:
    """Attacker on the plain port claims a calling AE title a rule names: refused, since
    only a ``plain = true`` rule governs peers without a certificate."""
    p = AccessPolicy.from_toml('[[rule]]\ncalling_ae = ["CT*"]\nservices = ["storage"]\n')
    assert not p.decide(plain("CT01")).allowed
    rq = build_request(calling_ae="CT01", called_ae="AIODICOM",
                       contexts=[("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])])
    assert sync(make_authorizer(p)(plain("CT01"), rq)) is not None  # A-ASSOCIATE-RJ
    explicit = AccessPolicy.from_toml(
        '[[rule]]\nplain = true\ncalling_ae = ["CT*"]\nservices = ["storage"]\n')
    assert explicit.allowed_services(plain("CT01")) == {"storage"}


def test_rule_without_services_is_a_deny_rule() -> None:
    p = AccessPolicy.from_toml('default = "allow"\n[[rule]]\norganization = "St Elsewhere"\n')
    decision = p.decide(reader())
    assert not decision.allowed and decision.rule == 1
