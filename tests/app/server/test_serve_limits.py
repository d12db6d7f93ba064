"""`aiodicom serve` exposes `ConnectionLimits` (the caps on unauthenticated work) as TOML keys
and flags named as its fields; unset keys keep the library defaults."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest

from aiodicom.aio.server import ConnectionLimits
from aiodicom.app.cli.main import _build_parser
from aiodicom.app.server.config import ServeOptions, load_config, merge
from aiodicom.app.server.run import build_server
from aiodicom.errors import ConfigurationError


def test_toml_keys_reach_the_server(tmp_path: Path) -> None:
    config = tmp_path / "aiodicom.toml"
    config.write_text("max_pending_handshakes_per_peer = 8\nmax_associate_length = 65536\n")
    options = merge(load_config(config), {"port": 0, "storage": tmp_path / "s"})
    server, _ = build_server(options)
    assert server.connection_limits == ConnectionLimits(
        max_pending_handshakes_per_peer=8, max_associate_length=65536)
    default, _ = build_server(ServeOptions(port=0, storage=tmp_path / "s").check())
    assert default.connection_limits == ConnectionLimits()


def test_flags_override_and_floors_name_the_key(tmp_path: Path) -> None:
    args = _build_parser().parse_args(
        ["serve", "--port", "0", "--max-pre-association", "5", "--max-pending-handshakes", "7"])
    assert (args.max_pre_association, args.max_pending_handshakes) == (5, 7)
    with mock.patch("aiodicom.app.server.run.serve_main", return_value=0) as serve_main:
        assert args.func(args) == 0
    limits = serve_main.call_args.args[0].connection_limits()
    assert (limits.max_pre_association, limits.max_pending_handshakes) == (5, 7)
    with pytest.raises(ConfigurationError, match="max_pre_association_per_peer must be at least"):
        ServeOptions(port=0, max_pre_association_per_peer=0).check()
    with pytest.raises(ConfigurationError, match="max_associate_length must be at least 4096"):
        ServeOptions(port=0, max_associate_length=100).check()
