"""The approval queue: a requester files, an administrator of that organization approves
(never their own request, never another organization's), or rejects with a reason."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiodicom.aio.user_identity import hash_passcode
from aiodicom.app.pki.files import read_index
from tests.app.console.conftest import Client, running


async def _as(c: Client, name: str) -> None:
    c.http.cookie_jar.clear()
    response = await c.http.post(c.url + "/login", data={"name": name, "passcode": name},
                                 allow_redirects=False)
    assert response.status == 303
    c.csrf = (await (await c.http.get(c.url + "/api/session")).json())["csrf"]


def test_requests_wait_for_their_organizations_administrator(
        pki: Path, tmp_path: Path, arun: Callable[..., Any]) -> None:
    users = tmp_path / "users.toml"
    users.write_text("".join(
        f'[users.{name}]\npasscode = "{hash_passcode(name)}"\n{extra}\n'
        for name, extra in (("tech", 'org = "Radiology East"\nrole = "requester"'),
                            ("east", 'org = "Radiology East"'),
                            ("west", 'org = "Cardiology West"'))))

    async def go() -> None:
        async with running(pki, users=users) as c:
            await _as(c, "tech")
            enrol = {"ae_titles": ["US03"], "org": "Radiology East", "groups": ["us"]}
            filed = await c.post_json("/api/enrol", enrol)
            assert filed.status == 202
            first = (await filed.json())["request"]
            assert first["status"] == "pending" and first["ae_titles"] == ["US03"]
            second = (await (await c.post_json("/api/enrol", {
                **enrol, "ae_titles": ["US04"]})).json())["request"]
            assert _clients(pki) == []  # nothing issued yet
            own = await c.post_json(f"/api/requests/{first['id']}/approve", {})
            assert own.status == 403  # requesters do not approve
            await _as(c, "west")
            other = await c.post_json(f"/api/requests/{first['id']}/approve", {})
            assert other.status == 403  # another organization's request
            await _as(c, "east")
            approved = await c.post_json(f"/api/requests/{first['id']}/approve", {})
            assert approved.status == 201
            data = await approved.json()
            assert data["certificate"]["subject"] == "CN=US03,OU=us,O=Radiology East"
            assert (await c.http.get(c.url + data["download"])).status == 200
            again = await c.post_json(f"/api/requests/{first['id']}/approve", {})
            assert again.status == 409
            rejected = await c.post_json(f"/api/requests/{second['id']}/reject",
                                         {"reason": "not our device"})
            assert (await rejected.json())["request"]["status"] == "rejected"
            listing = (await (await c.http.get(c.url + "/api/requests")).json())["requests"]
            assert [(r["status"], r["decided_by"]) for r in listing] == [
                ("approved", "east"), ("rejected", "east")]
            page = await (await c.http.get(c.url + "/requests")).text()
            assert "not our device" in page

    arun(go())
    assert _clients(pki) == [("US03",)]
    audit = (pki / "console" / "audit.log").read_text()
    assert "awaiting approval" in audit and "approved request" in audit


def _clients(pki: Path) -> list[tuple[str, ...]]:
    return [r.ae_titles for r in read_index(pki).records if r.kind.value == "client"]
