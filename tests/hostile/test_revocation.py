"""Revocation that always bites (issue 17, items 1, 2 and the key-mode part of 11).

- a revoked organization intermediate stays refused during a two-root CA rotation, at start
  and after a live reload; a CA in --ca without a CRL is an error, never a silent downgrade;
- a CRL written by a CA whose clock runs 60 s ahead is usable at once (backdated);
- CRL expiry is reported at load, before it happens and when it happens while running, and
  exported as metrics;
- a server key readable by others is reported.
"""

from __future__ import annotations

import logging
import os
import shutil
import ssl
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aiodicom.aio import tls
from aiodicom.app import pki
from aiodicom.app.server.metrics import Metrics, register_crl_metrics
from aiodicom.errors import ConfigurationError
from tests.aio.test_tls import EchoServer, roundtrip, run


@dataclass
class Rotation:
    tmp: Path
    old: Path
    new: Path
    server: pki.IssuedCertificate
    org_client: pki.IssuedCertificate
    old_client: pki.IssuedCertificate
    new_client: pki.IssuedCertificate
    both_cas: Path


@pytest.fixture
def rot(tmp_path: Path) -> Rotation:
    old, new = tmp_path / "old", tmp_path / "new"
    pki.init_ca(old, org="East")
    pki.init_ca(new)
    both = tmp_path / "both-cas.pem"
    both.write_bytes((old / "ca.crt").read_bytes() + (new / "ca.crt").read_bytes())
    return Rotation(
        tmp=tmp_path, old=old, new=new,
        server=pki.issue_server(new, name="localhost", ips=["127.0.0.1"], out=tmp_path / "srv"),
        org_client=pki.issue_client(old, ae_titles=["CT01"], org="East", out=tmp_path / "ct01"),
        old_client=pki.issue_client(old, ae_titles=["CT02"], out=tmp_path / "ct02"),
        new_client=pki.issue_client(new, ae_titles=["CT03"], out=tmp_path / "ct03"),
        both_cas=both,
    )


def _client(r: Rotation, issued: pki.IssuedCertificate) -> ssl.SSLContext:
    return tls.client_context(cert=issued.cert, key=issued.key, ca=r.both_cas)


def _concat(out: Path, *crls: Path) -> Path:
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(b"".join(c.read_bytes() for c in crls))
    os.replace(tmp, out)
    return out


def _accepted(ctx: ssl.SSLContext, *clients: ssl.SSLContext) -> list[bool]:
    async def body(server: EchoServer) -> list[bool]:
        return [await roundtrip(server.port, c) for c in clients]

    async def main() -> list[bool]:
        server = await EchoServer().start(ctx)
        try:
            return await body(server)
        finally:
            await server.stop()

    return list(run(main()))


def test_revoked_intermediate_after_two_root_rotation_still_refused(rot: Rotation) -> None:
    pki.revoke(rot.old, rot.old / "orgs" / "East" / "ca.crt")
    old_crl, new_crl = pki.write_crl(rot.old), pki.write_crl(rot.new)
    # The operator trusts both roots but gives only the old CA's CRLs: before, chain checking
    # was silently off and the revoked intermediate's clients got in. Now: an error naming
    # the new root and what to do.
    with pytest.raises(ConfigurationError, match=r"no CRL from CA .*CN=aiodicom.*cat old/crl"):
        tls.server_context(cert=rot.server.cert, key=rot.server.key, ca=rot.both_cas,
                           crl=old_crl)
    crl = _concat(rot.tmp / "crl.pem", old_crl, new_crl)
    ctx = tls.server_context(cert=rot.server.cert, key=rot.server.key, ca=rot.both_cas, crl=crl)
    assert ctx.verify_flags & ssl.VERIFY_CRL_CHECK_CHAIN
    assert _accepted(ctx, _client(rot, rot.org_client), _client(rot, rot.old_client),
                     _client(rot, rot.new_client)) == [False, True, True]


def test_reload_applies_a_stricter_crl_and_refuses_one_missing_a_root(
    rot: Rotation, caplog: pytest.LogCaptureFixture
) -> None:
    live = _concat(rot.tmp / "live-crl.pem", pki.write_crl(rot.old), pki.write_crl(rot.new))
    rctx = tls.ReloadingServerContext(cert=rot.server.cert, key=rot.server.key,
                                      ca=rot.both_cas, crl=live, check_interval=3600)
    org = _client(rot, rot.org_client)

    async def main() -> list[bool]:
        server = await EchoServer().start(rctx.context)
        try:
            before = await roundtrip(server.port, org)
            pki.revoke(rot.old, rot.old / "orgs" / "East" / "ca.crt")
            old_crl = pki.write_crl(rot.old)
            _concat(live, old_crl)  # forgot the new root's CRL: refused, previous kept
            with caplog.at_level(logging.WARNING, logger="aiodicom.tls"):
                kept = rctx.reload()
            still = await roundtrip(server.port, org)
            _concat(live, old_crl, pki.write_crl(rot.new))
            applied = rctx.reload()
            after = await roundtrip(server.port, org)
            return [before, kept, still, applied, after]
        finally:
            await server.stop()

    assert run(main()) == [True, False, True, True, False]
    assert "no CRL from CA" in caplog.text


def test_reload_refuses_a_context_whose_verify_flags_would_not_apply(rot: Rotation) -> None:
    crl = _concat(rot.tmp / "crl.pem", pki.write_crl(rot.old), pki.write_crl(rot.new))
    rctx = tls.ReloadingServerContext(cert=rot.server.cert, key=rot.server.key,
                                      ca=rot.both_cas, crl=crl)
    rctx.crl = None  # a rebuild now yields different flags than the listener's
    assert rctx.reload() is False
    assert rctx.last_error is not None and "verify flags" in rctx.last_error
    assert rctx.current is rctx.context


def test_crl_from_a_ca_clock_60_seconds_ahead_is_accepted(rot: Rotation) -> None:
    ahead = datetime.now(UTC) + timedelta(seconds=60)
    old_crl = pki.write_crl(rot.old, now=ahead)
    crl = _concat(rot.tmp / "crl.pem", old_crl, pki.write_crl(rot.new, now=ahead))
    ctx = tls.server_context(cert=rot.server.cert, key=rot.server.key, ca=rot.both_cas, crl=crl)
    assert _accepted(ctx, _client(rot, rot.old_client), _client(rot, rot.new_client)) == [
        True, True]
    first = tls.load_pem_crls(old_crl.read_bytes())[0]
    assert first.last_update_utc < datetime.now(UTC) - timedelta(minutes=3)


def test_crl_expiry_warned_at_load_before_and_when_it_happens(
    rot: Rotation, caplog: pytest.LogCaptureFixture
) -> None:
    crl = _concat(rot.tmp / "crl.pem", pki.write_crl(rot.old, days=2),
                  pki.write_crl(rot.new, days=30))
    wall = [datetime.now(UTC)]
    mono = [0.0]
    with caplog.at_level(logging.WARNING, logger="aiodicom.tls"):
        rctx = tls.ReloadingServerContext(
            cert=rot.server.cert, key=rot.server.key, ca=rot.both_cas, crl=crl,
            check_interval=1.0, clock=lambda: mono[0], wall_clock=lambda: wall[0])
    assert "expires at" in caplog.text  # at load
    validity = rctx.crl_validity
    assert validity is not None and validity.next_update is not None
    assert validity.next_update - datetime.now(UTC) < timedelta(days=2, minutes=1)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="aiodicom.tls"):
        for step in range(1, 5):  # periodic: once an hour, not every check
            mono[0] = step * 2.0
            rctx.maybe_reload()
        warned = [r for r in caplog.records if "expires at" in r.message]
        assert len(warned) == 1
        wall[0] = validity.next_update + timedelta(seconds=1)
        for step in range(5, 8):
            mono[0] = step * 2.0
            rctx.maybe_reload()
    expired = [r for r in caplog.records if "expired at" in r.message]
    assert len(expired) == 1 and expired[0].levelno == logging.ERROR

    metrics = Metrics()
    register_crl_metrics(metrics, rctx)
    text = metrics.render()
    age = next(x for x in text.splitlines() if x.startswith("aiodicom_tls_crl_age_seconds "))
    assert 0 < float(age.split()[1]) < 3600
    line = next(x for x in text.splitlines()
                if x.startswith("aiodicom_tls_crl_next_update_timestamp_seconds "))
    assert abs(float(line.split()[1]) - validity.next_update.timestamp()) < 1


def test_crl_metrics_absent_without_crl() -> None:
    metrics = Metrics()
    register_crl_metrics(metrics, None)
    assert not [x for x in metrics.render().splitlines() if x.startswith("aiodicom_tls_crl")]


def test_server_key_readable_by_others_is_reported(
    rot: Rotation, caplog: pytest.LogCaptureFixture
) -> None:
    key = rot.tmp / "exposed.key"
    shutil.copyfile(rot.server.key, key)
    key.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="aiodicom.tls"):
        tls.server_context(cert=rot.server.cert, key=key, ca=rot.both_cas)
    assert "chmod 600" in caplog.text and "0644" in caplog.text
    caplog.clear()
    key.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="aiodicom.tls"):
        tls.server_context(cert=rot.server.cert, key=key, ca=rot.both_cas)
    assert "chmod" not in caplog.text
