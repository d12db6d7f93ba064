"""A console on 127.0.0.1:0 over a fresh CA, and an HTTP client for it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from aiodicom.app.pki import init_ca


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    directory = tmp_path / "pki"
    init_ca(directory)
    init_ca(directory, org="Radiology East")
    init_ca(directory, org="Cardiology West")
    return directory


class Client:
    """An aiohttp client with the console's URL, a login helper and the CSRF token."""

    def __init__(self, console: Any, session: Any) -> None:
        self.console, self.http, self.url = console, session, console.url
        self.csrf = ""

    async def login(self) -> None:
        response = await self.http.get(self.console.login_link(), allow_redirects=False)
        assert response.status == 303
        data = await (await self.http.get(f"{self.url}/api/session")).json()
        self.csrf = data["csrf"]

    async def post_json(self, path: str, body: dict[str, Any], **headers: str) -> Any:
        return await self.http.post(f"{self.url}{path}", json=body,
                                    headers={"X-CSRF-Token": self.csrf, **headers})


@asynccontextmanager
async def running(pki: Path, **settings: Any) -> AsyncIterator[Client]:
    import aiohttp

    from aiodicom.app.console import ConsoleSettings, start_console

    console = await start_console(ConsoleSettings(pki=pki, **{
        k: v for k, v in settings.items() if k not in ("server", "reload_trust")}),
        server=settings.get("server"), reload_trust=settings.get("reload_trust"))
    try:
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            yield Client(console, http)
    finally:
        await console.close()


@pytest.fixture
def arun() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run(asyncio.wait_for(coro, 60))

    return run
