"""Trust from an object store (issue 14 item 4), against Azurite: nothing mocked.

- `RemoteTrustFile`: conditional GET by ETag, a new version replaces the mirror, a bad
  object or an older CRL (rollback) or an unreachable store keeps the last good one;
- `aiodicom pki publish DIR URL` checks DIR before writing;
- two `aiodicom serve` processes polling the same URLs: a revocation published once is
  refused by both within 10 s (the issue's bound, polled with a deadline); a junk CRL
  published afterwards keeps the last good trust on both, and their metrics say so.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio import tls
from aiodicom.app import pki
from aiodicom.app.pki.publish import publish, publish_async
from aiodicom.app.server.trust_source import RemoteTrustFile
from aiodicom.errors import ConfigurationError
from tests.interop.peers import free_port
from tests.services.azurite import AzuriteServer

AIODICOM = str(Path(sys.executable).with_name("aiodicom"))


@dataclass
class Site:
    ca: Path
    url: str
    env: dict[str, str]
    server: pki.IssuedCertificate
    ct01: pki.IssuedCertificate
    ct02: pki.IssuedCertificate


_containers = iter(range(10**6))


@pytest.fixture
def site(azurite: AzuriteServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    container = f"trust{os.getpid()}x{next(_containers)}"
    azurite.create_container(container)
    for name, value in azurite.env().items():
        monkeypatch.setenv(name, value)
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    pki.write_crl(ca)
    return Site(
        ca=ca, url=f"az://{container}/site", env={**os.environ, **azurite.env()},
        server=pki.issue_server(ca, name="localhost", ips=["127.0.0.1"], out=tmp_path / "srv"),
        ct01=pki.issue_client(ca, ae_titles=["CT01"], out=tmp_path / "ct01"),
        ct02=pki.issue_client(ca, ae_titles=["CT02"], out=tmp_path / "ct02"),
    )


async def _put(site: Site, name: str, data: bytes) -> None:
    import obstore

    from aiodicom.app.objstore import open_store, parse_store_url

    store, _ = open_store(site.url)
    await obstore.put_async(store, parse_store_url(site.url).key(name), data)


def test_conditional_get_new_version_and_what_keeps_the_last_good_crl(
    site: Site, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    publish(site.ca, site.url)
    first = (site.ca / "crl.pem").read_bytes()

    async def main() -> list[Any]:
        mirror = RemoteTrustFile("crl", f"{site.url}/crl.pem", tmp_path)
        out: list[Any] = [await mirror.fetch(), mirror.path.read_bytes() == first]
        out.append(await mirror.fetch())  # 304: unchanged
        pki.revoke(site.ca, site.ct01.cert)
        newer = pki.write_crl(site.ca).read_bytes()
        await publish_async(site.ca, site.url)
        out += [await mirror.fetch(), mirror.path.read_bytes() == newer]
        await _put(site, "crl.pem", first)  # replayed: a rollback
        out += [await mirror.fetch(), mirror.path.read_bytes() == newer]
        await _put(site, "crl.pem", b"-----BEGIN X509 CRL-----\njunk\n")
        out += [await mirror.fetch(), mirror.path.read_bytes() == newer]
        out.append(await mirror.fetch())  # the junk is not fetched again (same ETag: 304)
        await _put(site, "crl.pem", newer)  # the good one again: no change to apply
        out.append(await mirror.fetch())
        return [*out, dict(mirror.stats.results)]

    out = asyncio.run(main())
    assert out[:-1] == [True, True, False, True, True, False, True, False, True, False, False]
    assert out[-1] == {"updated": 2, "unchanged": 3, "refused": 2}
    assert "refused as a rollback" in caplog.text
    assert "the last good version stays in force" in caplog.text


def test_an_unreachable_store_keeps_the_mirror_and_fails_at_start(
    site: Site, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    publish(site.ca, site.url)

    async def main() -> list[Any]:
        mirror = RemoteTrustFile("ca", f"{site.url}/ca.crt", tmp_path / "m")
        (tmp_path / "m").mkdir()
        assert await mirror.fetch()
        mirror.store, _ = __import__("aiodicom.app.objstore").app.objstore.open_store(
            site.url, environ={**site.env, "AZURE_STORAGE_ENDPOINT":
                               f"http://127.0.0.1:{free_port()}/devstoreaccount1"},
            retry_timeout=0.5)
        before = mirror.path.read_bytes()
        changed = await mirror.fetch()
        missing = RemoteTrustFile("policy", f"{site.url}/policy.toml", tmp_path / "m")
        with pytest.raises(ConfigurationError, match="--policy: cannot fetch"):
            await missing.fetch()
        return [changed, mirror.path.read_bytes() == before, mirror.stats.results]

    changed, same, results = asyncio.run(main())
    assert (changed, same) == (False, True)
    assert results == {"updated": 1, "failed": 1}


def test_publish_checks_the_directory_first(site: Site, tmp_path: Path) -> None:
    (site.ca / "crl.pem").unlink()
    with pytest.raises(ConfigurationError, match="aiodicom pki crl"):
        publish(site.ca, site.url)
    pki.init_ca(site.ca, org="East")  # an intermediate the old CRL does not cover
    pki.write_crl(site.ca)
    assert publish(site.ca, site.url).urls == (f"{site.url}/crl.pem", f"{site.url}/ca.crt")
    with pytest.raises(ConfigurationError, match="not an object-store URL"):
        asyncio.run(publish_async(site.ca, "/tmp/x"))
    out = subprocess.run([AIODICOM, "pki", "publish", str(site.ca), site.url],
                         capture_output=True, text=True, env=site.env, timeout=60)
    assert out.returncode == 0, out.stderr  # never obstore's abort at exit (REFERENCE.md)
    assert f"wrote {site.url}/crl.pem" in out.stdout and f"wrote {site.url}/ca.crt" in out.stdout


# -- two nodes ----------------------------------------------------------------------------------


def _accepted(port: int, client: pki.IssuedCertificate, ca: Path) -> bool:
    from aiodicom.aio.client import connect
    from aiodicom.core.dimse import Status
    from aiodicom.errors import DicomError
    from aiodicom.settings import AssociationSettings

    ctx = tls.client_context(cert=client.cert, key=client.key, ca=ca)

    async def main() -> bool:
        async with connect("127.0.0.1", port, tls=ctx, server_hostname="localhost",
                           settings=AssociationSettings(ae_title=client.record.ae_titles[0])
                           ) as assoc:
            return await assoc.echo() == Status.SUCCESS

    try:
        return asyncio.run(main())
    except (DicomError, OSError, ssl.SSLError):
        return False


def _until(predicate: Any, timeout: float, what: str) -> float:
    """Seconds it took for ``predicate()`` to hold; fails after ``timeout``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():
            return time.monotonic() - start
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s: {what}")


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        return str(answer.read().decode())


@contextlib.contextmanager
def _nodes(site: Site, tmp_path: Path, count: int, *extra: str,
           interval: float = 1.0) -> Iterator[list[tuple[int, int, int]]]:
    """``count`` `aiodicom serve` processes with --ca/--crl from the same URLs:
    (tls port, metrics port, pid) each."""
    publish(site.ca, site.url)
    procs, ports = [], []
    for i in range(count):
        port, metrics = free_port(), free_port()
        procs.append(subprocess.Popen(
            [AIODICOM, "serve", "--tls-port", str(port), "--cert", str(site.server.cert),
             "--key", str(site.server.key), "--ca", f"{site.url}/ca.crt",
             "--crl", f"{site.url}/crl.pem", "--storage", str(tmp_path / f"s{i}"),
             "--metrics", str(metrics), "--trust-poll-interval", str(interval), *extra],
            env=site.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
        ports.append((port, metrics, procs[-1].pid))
    try:
        for port, _, _ in ports:
            _until(lambda port=port: _accepted(port, site.ct02, site.ca / "ca.crt"), 30,
                   "the node answering")
        yield ports
    finally:
        codes = []
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes.append(proc.wait(30))
            except subprocess.TimeoutExpired:
                proc.kill()
                codes.append(proc.wait())
            assert proc.stdout is not None
            print(proc.stdout.read().decode(errors="replace"))
            proc.stdout.close()
        assert codes == [0] * count  # drained, mirrors removed, never obstore's abort at exit


@pytest.fixture
def nodes(site: Site, tmp_path: Path) -> Iterator[list[tuple[int, int, int]]]:
    with _nodes(site, tmp_path, 2) as ports:
        yield ports


def test_a_revocation_published_once_is_refused_by_every_node_within_10_s(
    site: Site, nodes: list[tuple[int, int, int]]
) -> None:
    ca = site.ca / "ca.crt"
    assert all(_accepted(port, site.ct01, ca) for port, _, _ in nodes)
    pki.revoke(site.ca, site.ct01.cert)
    pki.write_crl(site.ca)
    publish(site.ca, site.url)  # once
    for port, _, _ in nodes:
        _until(lambda port=port: not _accepted(port, site.ct01, ca), 10,
               f"node {port} refusing the revoked certificate")
        assert _accepted(port, site.ct02, ca)  # the others still get in

    # A junk CRL (and then a replayed older one) keeps the last good trust on every node.
    before = [_scrape(metrics) for _, metrics, _ in nodes]
    asyncio.run(_put(site, "crl.pem", b"not a CRL"))
    for port, metrics, _ in nodes:
        _until(lambda metrics=metrics: 'aiodicom_trust_fetches_total{option="crl",'
               'result="refused"} 1.0' in _scrape(metrics), 10, "the junk refused")
        assert not _accepted(port, site.ct01, ca)
        assert _accepted(port, site.ct02, ca)
    assert all('result="refused"} 0.0' in text for text in before)


def test_sighup_fetches_at_once(site: Site, tmp_path: Path) -> None:
    """A node polling every 10 minutes applies a revocation at SIGHUP."""
    ca = site.ca / "ca.crt"
    with _nodes(site, tmp_path, 1, interval=600) as [(port, metrics, pid)]:
        assert _accepted(port, site.ct01, ca)
        pki.revoke(site.ca, site.ct01.cert)
        pki.write_crl(site.ca)
        publish(site.ca, site.url)
        assert _accepted(port, site.ct01, ca)  # not polled yet: the old CRL is in force
        os.kill(pid, signal.SIGHUP)
        _until(lambda: not _accepted(port, site.ct01, ca), 10, "the revocation after SIGHUP")
        text = _scrape(metrics)
    assert 'aiodicom_trust_fetches_total{option="crl",result="updated"} 2.0' in text
    assert "aiodicom_tls_reload_failing 0.0" in text


def test_policy_from_a_url_follows_the_store(site: Site, tmp_path: Path) -> None:
    """--policy URL: a new policy published is in force after the next poll; a policy the
    server would refuse keeps the previous one."""
    from aiodicom.app.server.policy import PolicyFile
    from aiodicom.app.server.trust_source import TrustMirrors

    allow = b'default = "allow"\n'
    deny = b'default = "deny"\n'

    async def main() -> list[str]:
        await _put(site, "policy.toml", allow)
        mirrors = TrustMirrors([RemoteTrustFile("policy", f"{site.url}/policy.toml", tmp_path)],
                               tmp_path, interval=0.1)
        await mirrors.poll()
        policy = PolicyFile(mirrors.files[0].path)
        mirrors.on_change = policy.reload
        seen = [policy.policy.default]
        await _put(site, "policy.toml", deny)
        await mirrors.poll()
        seen.append(policy.policy.default)
        await _put(site, "policy.toml", b'default = "maybe"\n')
        await mirrors.poll()
        seen.append(policy.policy.default)
        return seen

    assert asyncio.run(main()) == ["allow", "deny", "deny"]
