"""An organization's administrator acts on that organization only, also on things that
belong to no organization: a root-issued client, the server's own certificate, an
association without an organization, a request filed for no organization (review of
issue 15: "no organization" used to mean "yours")."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from aiodicom.aio.user_identity import hash_passcode
from aiodicom.app.console import actions
from aiodicom.app.console.auth import Admin
from aiodicom.app.pki.ca import issue_client, issue_server
from aiodicom.app.pki.files import read_index
from tests.app.console.conftest import Client, running


def _users(tmp_path: Path) -> Path:
    users = tmp_path / "users.toml"
    users.write_text("".join(
        f'[users.{name}]\npasscode = "{hash_passcode(name)}"\n{extra}\n'
        for name, extra in (("east", 'org = "Radiology East"'),
                            ("anytech", 'role = "requester"'))))
    return users


async def _as(c: Client, name: str) -> None:
    c.http.cookie_jar.clear()
    response = await c.http.post(c.url + "/login", data={"name": name, "passcode": name},
                                 allow_redirects=False)
    assert response.status == 303
    c.csrf = (await (await c.http.get(c.url + "/api/session")).json())["csrf"]


def test_organization_admin_cannot_revoke_certificates_of_no_organization(
        pki: Path, tmp_path: Path, arun: Callable[..., Any]) -> None:
    root_client = issue_client(pki, ae_titles=["ROOTCL"], out=tmp_path / "rootcl").record
    server = issue_server(pki, name="dicom.example", out=tmp_path / "server").record

    async def go() -> list[int]:
        async with running(pki, users=_users(tmp_path)) as c:
            await _as(c, "east")
            statuses = []
            for record in (root_client, server):
                response = await c.post_json(f"/api/certificates/{record.serial:X}/revoke",
                                             {"reason": "not mine"})
                statuses.append(response.status)
            return statuses

    assert arun(go()) == [403, 403]
    assert not any(r.revoked for r in read_index(pki).records)
    audit = (pki / "console" / "audit.log").read_text()
    assert "refused revocation" in audit and 'UserID="east"' in audit


def test_organization_admin_cannot_abort_an_association_of_no_organization() -> None:
    row = {"id": 7, "organization": None, "calling_ae": "OTHER", "peer": "10.0.0.9:4000",
           "subject": None, "serial": None}
    aborted: list[int] = []
    live = SimpleNamespace(rows=lambda: [row], abort=lambda i: aborted.append(i) or row)
    ctx: Any = SimpleNamespace(live=live, audit=SimpleNamespace(change=lambda *a, **k: None))
    east = Admin(name="east", org="Radiology East")
    with pytest.raises(actions.ActionError) as refused:
        actions.abort_association(ctx, east, 7)
    assert refused.value.status == 403 and aborted == []
    assert actions.abort_association(ctx, Admin(name="root", org=None), 7) is row
    assert aborted == [7]


def test_organization_admin_cannot_approve_a_request_of_no_organization(
        pki: Path, tmp_path: Path, arun: Callable[..., Any]) -> None:
    async def go() -> int:
        async with running(pki, users=_users(tmp_path)) as c:
            await _as(c, "anytech")
            filed = await c.post_json("/api/enrol", {"ae_titles": ["NOORG1"]})
            assert filed.status == 202
            request = (await filed.json())["request"]
            assert request["org"] is None
            await _as(c, "east")
            approved = await c.post_json(f"/api/requests/{request['id']}/approve", {})
            return approved.status

    assert arun(go()) == 403
    assert [r for r in read_index(pki).records if r.kind.value == "client"] == []


def test_requester_only_files_requests(pki: Path, tmp_path: Path,
                                       arun: Callable[..., Any]) -> None:
    """A requester ("files requests; an administrator approves") neither revokes, nor aborts,
    nor creates an organization's intermediate CA."""
    east_client = issue_client(pki, ae_titles=["EASTCT"], org="Radiology East",
                               out=tmp_path / "eastct").record
    users = tmp_path / "users.toml"
    users.write_text("".join(
        f'[users.{name}]\npasscode = "{hash_passcode(name)}"\n{extra}\n'
        for name, extra in (("tech", 'org = "Radiology East"\nrole = "requester"'),
                            ("anytech", 'role = "requester"'))))

    async def go() -> list[int]:
        async with running(pki, users=users) as c:
            await _as(c, "tech")
            revoke = await c.post_json(f"/api/certificates/{east_client.serial:X}/revoke",
                                       {"reason": "oops"})
            await _as(c, "anytech")
            org = await c.post_json("/api/organizations", {"name": "Rogue Clinic"})
            return [revoke.status, org.status]

    assert arun(go()) == [403, 403]
    assert not any(r.revoked for r in read_index(pki).records)
    assert not (pki / "orgs" / "Rogue Clinic").exists()
    row = {"id": 3, "organization": "Radiology East", "calling_ae": "EASTCT", "peer": "",
           "subject": None, "serial": None}
    ctx: Any = SimpleNamespace(live=SimpleNamespace(rows=lambda: [row], abort=lambda i: row),
                               audit=SimpleNamespace(change=lambda *a, **k: None))
    with pytest.raises(actions.ActionError) as refused:
        actions.abort_association(ctx, Admin(name="tech", org="Radiology East",
                                             role="requester"), 3)
    assert refused.value.status == 403


def test_refused_sign_ins_are_audited(pki: Path, tmp_path: Path,
                                      arun: Callable[..., Any]) -> None:
    """A wrong passcode and a used login link leave a failed login in the audit trail, with
    the name tried and the address (a guessing attack is seen)."""
    async def go() -> None:
        async with running(pki, users=_users(tmp_path)) as c:
            bad = await c.http.post(c.url + "/login", data={"name": "east", "passcode": "x"},
                                    allow_redirects=False)
            assert bad.status == 403
            link = c.console.login_link()
            assert (await c.http.get(link, allow_redirects=False)).status == 303
            c.http.cookie_jar.clear()
            assert (await c.http.get(link, allow_redirects=False)).status == 403

    arun(go())
    audit = (pki / "console" / "audit.log").read_text()
    refused = [line for line in audit.splitlines() if 'EventOutcomeIndicator="4"' in line
               and "console login" in line]
    assert len(refused) == 2, audit
    assert 'UserID="east"' in refused[0] and "127.0.0.1" in refused[0]


@pytest.mark.parametrize("given", ["cert", "key", "policy"])
def test_console_refuses_what_it_cannot_honour(pki: Path, tmp_path: Path, given: str,
                                               arun: Callable[..., Any]) -> None:
    """--cert without --key (or the reverse) used to serve plain HTTP on loopback, and a
    missing --policy file started a console whose policy page only said so: the user asked
    for HTTPS or that policy, so the start fails (exit 1), naming what is missing."""
    server = issue_server(pki, name="localhost", ips=["127.0.0.1"], out=tmp_path / "srv")
    settings: dict[str, Any] = {
        "cert": {"cert": server.cert},
        "key": {"key": server.key},
        "policy": {"policy": tmp_path / "no-such-policy.toml"},
    }[given]

    async def go() -> None:
        async with running(pki, **settings):
            pass

    from aiodicom.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="--key|--cert|policy"):
        arun(go())


def test_a_key_download_is_for_the_administrator_who_made_it(
        pki: Path, tmp_path: Path, arun: Callable[..., Any]) -> None:
    """The download link (the key's only copy) leaked to another administrator (a shared
    screen, browser history) hands nothing over; its maker still gets it once."""
    users = tmp_path / "users.toml"
    users.write_text("".join(
        f'[users.{name}]\npasscode = "{hash_passcode(name)}"\n{extra}\n'
        for name, extra in (("east", 'org = "Radiology East"'),
                            ("west", 'org = "Cardiology West"'))))

    async def go() -> list[int]:
        async with running(pki, users=users) as c:
            await _as(c, "west")
            made = await c.post_json("/api/enrol", {"ae_titles": ["ECHO1"],
                                                    "org": "Cardiology West"})
            link = c.url + (await made.json())["download"]
            await _as(c, "east")
            stolen = (await c.http.get(link)).status
            await _as(c, "west")
            mine = (await c.http.get(link)).status
            again = (await c.http.get(link)).status
            return [stolen, mine, again]

    assert arun(go()) == [404, 200, 404]


def test_organization_admin_sees_only_its_organization(
        pki: Path, tmp_path: Path, arun: Callable[..., Any]) -> None:
    """Many hospitals, one console: an organization's administrator does not list another
    organization's certificates, requests (with their CSRs) or organization."""
    users = tmp_path / "users.toml"
    users.write_text("".join(
        f'[users.{name}]\npasscode = "{hash_passcode(name)}"\n{extra}\n'
        for name, extra in (("east", 'org = "Radiology East"'),
                            ("west", 'org = "Cardiology West"'),
                            ("wtech", 'org = "Cardiology West"\nrole = "requester"'))))

    async def go() -> None:
        async with running(pki, users=users) as c:
            await _as(c, "west")
            assert (await c.post_json("/api/enrol", {"ae_titles": ["ECHO1"]})).status == 201
            await _as(c, "wtech")
            assert (await c.post_json("/api/enrol", {"ae_titles": ["ECHO2"]})).status == 202
            await _as(c, "east")
            assert (await c.post_json("/api/enrol", {"ae_titles": ["CT01"]})).status == 201
            certs = (await (await c.http.get(c.url + "/api/certificates")).json())
            assert {r["organization"] for r in certs["certificates"]} == {"Radiology East"}
            requests = (await (await c.http.get(c.url + "/api/requests")).json())
            assert requests["requests"] == []
            orgs = (await (await c.http.get(c.url + "/api/organizations")).json())
            assert [o["name"] for o in orgs["organizations"]] == ["Radiology East"]
            west_serial = [r for r in read_index(pki).records if r.ae_titles == ("ECHO1",)][0]
            one = await c.http.get(f"{c.url}/api/certificates/{west_serial.serial:X}")
            assert one.status == 404
            for page in ("/certificates", "/requests", "/organizations"):
                text = await (await c.http.get(c.url + page)).text()
                assert "ECHO1" not in text and "ECHO2" not in text, page
                assert "CT01" in text or page == "/requests", page

    arun(go())
