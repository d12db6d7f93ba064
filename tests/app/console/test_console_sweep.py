"""Unclaimed downloads (a key the console made) are forgotten once their time is past even
when nobody downloads anything afterwards (review of issue 15: they were swept only when
someone else took a download)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiodicom.app.console import pki_ops, service
from tests.app.console.conftest import running

ENROL = {"ae_titles": ["CT01"], "org": "Radiology East", "groups": [], "days": 30}


def test_expired_unclaimed_downloads_are_swept_periodically(
        pki: Path, arun: Callable[..., Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(service, "SWEEP_SECONDS", 0.05)

    async def go() -> tuple[int, int, int]:
        async with running(pki) as c:
            await c.login()
            downloads = c.console.context.pki.downloads
            assert (await c.post_json("/api/enrol", ENROL)).status == 201
            fresh = len(downloads)  # within its 10 minutes: kept
            await asyncio.sleep(0.3)
            kept = len(downloads)
            monkeypatch.setattr(pki_ops, "DOWNLOAD_SECONDS", -1.0)  # born expired
            assert (await c.post_json("/api/enrol", {**ENROL, "ae_titles": ["CT02"]})
                    ).status == 201
            for _ in range(200):  # the sweeper runs every 0.05 s; no request is made
                if len(downloads) < 2:
                    break
                await asyncio.sleep(0.05)
            return fresh, kept, len(downloads)

    assert arun(go()) == (1, 1, 1)
