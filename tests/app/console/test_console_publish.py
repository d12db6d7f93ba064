"""Shared trust: the console publishes the CA and the CRL to an object store (Azurite) after a
revocation, so every node polling it refuses the certificate (`aiodicom pki publish`)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.app.console.conftest import running
from tests.services.azurite import AzuriteServer


def test_revocation_is_published_to_the_shared_store(
        pki: Path, azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch,
        arun: Callable[..., Any]) -> None:
    azurite.create_container("trust")
    for name, value in azurite.env().items():
        monkeypatch.setenv(name, value)

    async def go() -> dict[str, Any]:
        async with running(pki, publish="az://trust/site") as c:
            await c.login()
            data = await (await c.post_json("/api/enrol", {
                "ae_titles": ["CT01"], "org": "Radiology East"})).json()
            response = await c.post_json(
                f"/api/certificates/{data['certificate']['serial']}/revoke",
                {"reason": "stolen"})
            assert response.status == 200, await response.text()
            result: dict[str, Any] = await response.json()
            return result

    result = arun(go())
    assert result["published"] == "az://trust/site"
    status, crl = azurite.request("GET", "trust/site/crl.pem")
    assert status == 200 and crl == (pki / "crl.pem").read_bytes()
    status, ca = azurite.request("GET", "trust/site/ca.crt")
    assert status == 200 and ca == (pki / "ca.crt").read_bytes()
    assert "console publish: published az://trust/site/crl.pem" in (
        pki / "console" / "audit.log").read_text()
