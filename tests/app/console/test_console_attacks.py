"""The console from an attacker's side: no session, forged CSRF, another origin, a wrong
Host, path traversal in downloads, a used login link, AE titles of another organization,
and plain HTTP beyond loopback."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.user_identity import hash_passcode
from aiodicom.app.pki.files import read_index
from aiodicom.errors import ConfigurationError
from tests.app.console.conftest import running

ENROL = {"ae_titles": ["CT01"], "org": "Radiology East", "groups": ["ct"], "days": 30}


def _issued(pki: Path) -> int:
    return sum(1 for r in read_index(pki).records if r.kind.value == "client")


def test_no_session_gets_nothing(pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> None:
        async with running(pki) as c:
            for path in ("/api/certificates", "/api/associations", "/api/activity"):
                response = await c.http.get(c.url + path)
                assert response.status == 401, path
            response = await c.http.post(c.url + "/api/enrol", json=ENROL)
            assert response.status == 401
            page = await c.http.get(c.url + "/certificates", allow_redirects=False)
            assert page.status == 303 and page.headers["Location"] == "/login"
            bogus = await c.http.get(c.url + "/api/certificates",
                                     cookies={"aiodicom-console": "forged-session-id"})
            assert bogus.status == 401

    arun(go())
    assert _issued(pki) == 0


def test_forged_or_missing_csrf_is_refused(pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> None:
        async with running(pki) as c:
            await c.login()
            real = c.csrf
            c.csrf = real[:-2] + ("AA" if not real.endswith("AA") else "BB")
            assert (await c.post_json("/api/enrol", ENROL)).status == 403
            response = await c.http.post(c.url + "/api/enrol", json=ENROL)  # no header
            assert response.status == 403
            form = await c.http.post(c.url + "/enrol", data={**ENROL, "ae_titles": "CT01",
                                                              "groups": "ct", "csrf": "x"})
            assert form.status == 403
            assert _issued(pki) == 0
            c.csrf = real
            assert (await c.post_json("/api/enrol", ENROL)).status == 201

    arun(go())
    assert _issued(pki) == 1


def test_cookie_presented_from_another_origin_is_refused(
        pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> None:
        async with running(pki) as c:
            await c.login()
            evil = {"Origin": "https://evil.example"}
            assert (await c.post_json("/api/enrol", ENROL, **evil)).status == 403
            read = await c.http.get(c.url + "/api/certificates", headers=evil)
            assert read.status == 403
            site = await c.http.get(c.url + "/api/certificates",
                                    headers={"Sec-Fetch-Site": "cross-site"})
            assert site.status == 403
            rebinding = await c.http.get(c.url + "/api/certificates",
                                         headers={"Host": "evil.example:80"})
            assert rebinding.status == 421
            same = await c.post_json("/api/enrol", ENROL, Origin=c.url)
            assert same.status == 201

    arun(go())
    assert _issued(pki) == 1


def test_session_cookie_flags_and_security_headers(pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> None:
        async with running(pki) as c:
            response = await c.http.get(c.console.login_link(), allow_redirects=False)
            cookie = response.headers["Set-Cookie"]
            assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
            page = await c.http.get(c.url + "/certificates")
            csp = page.headers["Content-Security-Policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert page.headers["X-Frame-Options"] == "DENY"
            html = await page.text()
            assert not re.search(r"<script(?![^>]*\bsrc=)", html)  # no inline script
            assert not re.search(r"\son[a-z]+=", html)  # no inline event handler

    arun(go())


def test_login_link_works_once(pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> None:
        async with running(pki) as c:
            link = c.console.login_link()
            assert (await c.http.get(link, allow_redirects=False)).status == 303
            c.http.cookie_jar.clear()
            again = await c.http.get(link, allow_redirects=False)
            assert again.status == 403
            assert (await c.http.get(c.url + "/api/session")).status == 401

    arun(go())


def test_path_traversal_in_downloads(pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> None:
        async with running(pki) as c:
            await c.login()
            enrolled = await (await c.post_json("/api/enrol", ENROL)).json()
            for path in ("/download/..%2F..%2Fca.key", "/download/../../ca.key",
                         "/download/%2e%2e/ca.key", "/static/..%2F..%2F..%2Fpki%2Fca.key",
                         "/static/../auth.py", "/download/" + "A" * 80):
                response = await c.http.get(c.url + path)
                body = await response.read()
                assert response.status in (403, 404), path
                assert b"PRIVATE KEY" not in body and b"import" not in body, path
            first = await c.http.get(c.url + enrolled["download"])
            assert first.status == 200 and first.headers["Content-Type"] == "application/zip"
            assert "attachment" in first.headers["Content-Disposition"]
            second = await c.http.get(c.url + enrolled["download"])
            assert second.status == 404  # one download only

    arun(go())


def test_organization_admin_cannot_take_another_organizations_ae_title(
        pki: Path, tmp_path: Path, arun: Callable[..., Any]) -> None:
    users = tmp_path / "users.toml"
    users.write_text(f'[users.east]\npasscode = "{hash_passcode("e-pass")}"\n'
                     f'org = "Radiology East"\n'
                     f'[users.west]\npasscode = "{hash_passcode("w-pass")}"\n'
                     f'org = "Cardiology West"\n')

    async def sign_in(c: Any, name: str, passcode: str) -> None:
        c.http.cookie_jar.clear()
        response = await c.http.post(c.url + "/login", data={"name": name,
                                                              "passcode": passcode},
                                     allow_redirects=False)
        assert response.status == 303
        c.csrf = (await (await c.http.get(c.url + "/api/session")).json())["csrf"]

    async def go() -> None:
        async with running(pki, users=users) as c:
            bad = await c.http.post(c.url + "/login", data={"name": "east", "passcode": "no"},
                                    allow_redirects=False)
            assert bad.status == 403
            await sign_in(c, "east", "e-pass")
            assert (await c.post_json("/api/enrol", ENROL)).status == 201
            # East cannot enrol for West...
            west = {**ENROL, "ae_titles": ["ECHO9"], "org": "Cardiology West"}
            assert (await c.post_json("/api/enrol", west)).status == 403
            await sign_in(c, "west", "w-pass")
            # ...and West cannot take CT01, which a valid East certificate binds.
            steal = {**ENROL, "org": "Cardiology West"}
            response = await c.post_json("/api/enrol", steal)
            assert response.status == 400
            assert "belongs to 'Radiology East'" in (await response.json())["error"]
            serial = [r for r in read_index(pki).records if r.ae_titles == ("CT01",)][0].serial
            revoke = await c.post_json(f"/api/certificates/{serial:X}/revoke",
                                       {"reason": "mine now"})
            assert revoke.status == 403

    arun(go())
    records = [r for r in read_index(pki).records if r.kind.value == "client"]
    assert [(r.ae_titles, r.org, r.revoked) for r in records] == [
        (("CT01",), "Radiology East", False)]
    audit = (pki / "console" / "audit.log").read_text()
    assert 'UserID="west"' in audit and "refused enrolment" in audit


def test_plain_http_beyond_loopback_is_refused(pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> None:
        async with running(pki, host="0.0.0.0"):
            pass

    with pytest.raises(ConfigurationError, match="beyond loopback"):
        arun(go())
