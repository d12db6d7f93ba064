"""ServeOptions from TOML: timeouts reach the server; bad values name the key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from aiodicom.app.server.config import load_config, merge
from aiodicom.app.server.run import build_server
from aiodicom.errors import ConfigurationError


def test_timeouts_reach_the_server(tmp_path: Path) -> None:
    config = tmp_path / "a.toml"
    config.write_text(
        f'port = 0\nstorage = "{tmp_path / "s"}"\nidle_timeout = 12.5\nacse_timeout = 3\n'
        "dimse_timeout = 7\nartim_timeout = 2\ntls_handshake_timeout = 4\n"
    )
    options = merge(load_config(config), {"artim_timeout": 1.5})  # a flag overrides the file

    async def build() -> tuple[float | None, ...]:
        server, _ = build_server(options)
        t = server.settings.timeouts
        return t.network, t.acse, t.dimse, t.artim, t.tls_handshake

    assert asyncio.run(build()) == (12.5, 3, 7, 1.5, 4)


@pytest.mark.parametrize("text, key", [
    ("dimse_timeout = 0", "dimse_timeout"),
    ("idle_timeout = -1", "idle_timeout"),
    ('artim_timeout = "soon"', "artim_timeout"),
    ("tls_handshake_timout = 3", "tls_handshake_timout"),
])
def test_bad_timeouts_name_the_key(tmp_path: Path, text: str, key: str) -> None:
    config = tmp_path / "b.toml"
    config.write_text(f"port = 0\n{text}\n")
    with pytest.raises(ConfigurationError, match=key):
        merge(load_config(config), {})
