"""The Activity page and /api/activity show an organization's administrator that
organization's entries only, and filter on an entry's exact organization (review of issue
15: ``?org=Cardiology%20West`` showed West's entries to East's administrator, and the filter
matched substrings)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiodicom.aio.user_identity import hash_passcode
from aiodicom.app.console.auth import Admin
from tests.app.console.conftest import Client, running


def _users(tmp_path: Path) -> Path:
    users = tmp_path / "users.toml"
    users.write_text(f'[users.east]\npasscode = "{hash_passcode("east")}"\n'
                     'org = "Radiology East"\n')
    return users


def _write_entries(c: Client) -> None:
    audit = c.console.context.audit
    audit.change(Admin(name="west", org="Cardiology West"), "U", "revoked CN=WESTCT",
                 event="revoke", object_id="1", object_name="CN=WESTCT",
                 org="Cardiology West")
    audit.change(Admin(name="east", org="Radiology East"), "U", "revoked CN=EASTCT",
                 event="revoke", object_id="2", object_name="CN=EASTCT", org="Radiology East")
    audit.change(Admin(name="admin", org=None), "U", "added Radiology East Annex",
                 event="organization", object_id="3", object_name="O=Radiology East Annex",
                 org="Radiology East Annex")


async def _descriptions(c: Client, query: str = "") -> list[str]:
    data = await (await c.http.get(f"{c.url}/api/activity{query}")).json()
    return [e["description"] for e in data["entries"]]


def test_an_organization_admin_reads_only_that_organization_activity(
        pki: Path, tmp_path: Path, arun: Callable[..., Any]) -> None:
    async def go() -> tuple[list[list[str]], str]:
        async with running(pki, users=_users(tmp_path)) as c:
            _write_entries(c)
            response = await c.http.post(c.url + "/login",
                                         data={"name": "east", "passcode": "east"},
                                         allow_redirects=False)
            assert response.status == 303
            seen = [await _descriptions(c, "?org=Cardiology%20West"),
                    await _descriptions(c, "?event=revoke"),
                    await _descriptions(c, "?org=Radiology%20East%20Annex")]
            page = await (await c.http.get(c.url + "/activity?org=Cardiology%20West")).text()
            return seen, page

    seen, page = arun(go())
    assert seen[0] == []
    assert seen[1] == ["console revoke: revoked CN=EASTCT"]
    assert seen[2] == []
    assert "WESTCT" not in page and "Annex" not in page


def test_every_organization_admin_sees_all_and_filters_on_the_exact_organization(
        pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> list[list[str]]:
        async with running(pki) as c:
            _write_entries(c)
            await c.login()
            return [await _descriptions(c, "?event=console%20"),
                    await _descriptions(c, "?org=Radiology"),
                    await _descriptions(c, "?org=radiology%20east"),
                    await _descriptions(c, "?org=Cardiology%20West")]

    every, partial, east, west = arun(go())
    assert [d for d in every if "console login" not in d] == [
        "console organization: added Radiology East Annex",
        "console revoke: revoked CN=EASTCT", "console revoke: revoked CN=WESTCT"]
    assert partial == []
    assert east == ["console revoke: revoked CN=EASTCT"]
    assert west == ["console revoke: revoked CN=WESTCT"]
