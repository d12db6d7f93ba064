"""`aiodicom serve --proxy-protocol/--proxy-from` and the TOML keys proxy_protocol/proxy_from."""

from __future__ import annotations

import ipaddress
import tomllib
from pathlib import Path

import pytest

from aiodicom.app.cli.main import _build_parser as build_parser
from aiodicom.app.server.config import ServeOptions, load_config, merge
from aiodicom.app.server.workers import worker_config
from aiodicom.errors import ConfigurationError


def test_off_by_default() -> None:
    assert ServeOptions(port=0).check().proxy() is None


def test_toml_keys(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text('port = 0\nproxy_protocol = true\nproxy_from = "10.0.0.0/8, 192.0.2.7"\n')
    proxy = merge(load_config(cfg), {}).proxy()
    assert proxy is not None
    assert proxy.allowed == (ipaddress.ip_network("10.0.0.0/8"),
                             ipaddress.ip_network("192.0.2.7/32"))


def test_flags_override_and_default_to_this_machine(tmp_path: Path) -> None:
    args = build_parser().parse_args(["serve", "--port", "0", "--proxy-protocol"])
    assert args.proxy_protocol is True and args.proxy_from is None
    proxy = merge({}, {"port": 0, "proxy_protocol": True}).proxy()
    assert proxy is not None and proxy.allows("127.0.0.1") and proxy.allows("::1")
    assert not proxy.allows("10.0.0.1")
    args = build_parser().parse_args(["serve", "--proxy-from", "203.0.113.0/24"])
    assert args.proxy_from == "203.0.113.0/24"


@pytest.mark.parametrize(("values", "message"), [
    ({"proxy_protocol": True, "proxy_from": "10.0.0.0/33"}, "'10.0.0.0/33' is not an address"),
    ({"proxy_protocol": True, "proxy_from": ""}, "at least one address"),
    ({"proxy_from": "10.0.0.0/8"}, "proxy_from needs proxy_protocol"),
])
def test_bad_values_named(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        merge({}, {"port": 0, **values})


def test_wrong_toml_type_named(tmp_path: Path) -> None:
    cfg = tmp_path / "serve.toml"
    cfg.write_text('proxy_protocol = "yes"\n')
    with pytest.raises(ConfigurationError, match="'proxy_protocol' must be bool"):
        load_config(cfg)


def test_workers_inherit_the_proxy_options() -> None:
    options = merge({}, {"port": 11112, "proxy_protocol": True, "proxy_from": "10.1.0.0/16"})
    text = worker_config(options)
    values = tomllib.loads(text)
    assert values["proxy_protocol"] is True and values["proxy_from"] == "10.1.0.0/16"
