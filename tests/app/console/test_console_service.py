"""Starting the console: `aiodicom console` prints a login link and serves; plain HTTP
beyond loopback is refused; HTTPS with a certificate sets Secure __Host- cookies; a server
without --console never imports aiohttp or jinja2."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiodicom.app.console.service import parse_console_address
from aiodicom.app.pki import ensure_dev_pki
from aiodicom.errors import ConfigurationError
from tests.app.console.conftest import running

CLI = [sys.executable, "-c", "import sys; from aiodicom.app.cli import main; sys.exit(main())"]


def test_console_address() -> None:
    assert parse_console_address("8443") == ("127.0.0.1", 8443)
    assert parse_console_address("0.0.0.0:8443") == ("0.0.0.0", 8443)
    assert parse_console_address("[::1]:8443") == ("::1", 8443)
    for bad in ("", "host:", ":80", "99999", "a:b"):
        with pytest.raises(ConfigurationError):
            parse_console_address(bad)


def test_console_command_prints_a_login_link_that_works(pki: Path, tmp_path: Path) -> None:
    import urllib.request

    out = tmp_path / "out.txt"
    with open(out, "wb") as fo:
        proc = subprocess.Popen([*CLI, "console", "--pki", str(pki), "127.0.0.1:0",
                                 "--operator", "night ops"],
                                stdout=fo, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not (found := re.search(r"log in \(once\) with: (\S+)", out.read_text())):
            assert proc.poll() is None and time.monotonic() < deadline, out.read_text()
            time.sleep(0.1)
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
        with opener.open(found.group(1)) as response:  # follows the redirect, with cookie
            assert response.url.endswith("/certificates")
            assert "Certificates" in response.read().decode()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    assert "signs in as night ops" in out.read_text()
    audit = (pki / "console" / "audit.log").read_text()
    assert 'UserID="night ops"' in audit and "signed in with the one-time login link" in audit


def test_console_command_refuses_plain_http_beyond_loopback(pki: Path) -> None:
    result = subprocess.run([*CLI, "console", "--pki", str(pki), "0.0.0.0:0"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "beyond loopback" in result.stderr and "HTTPS" in result.stderr


def test_https_sets_secure_host_cookies(tmp_path: Path, arun: Callable[..., Any]) -> None:
    import ssl

    dev = ensure_dev_pki(tmp_path / "dev")

    async def go() -> None:
        async with running(dev.directory, cert=dev.server_cert, key=dev.server_key) as c:
            assert c.url.startswith("https://")
            tls = ssl.create_default_context(cafile=str(dev.ca_cert))
            response = await c.http.get(c.console.login_link(), allow_redirects=False,
                                        ssl=tls)
            cookie = response.headers["Set-Cookie"]
            assert cookie.startswith("__Host-aiodicom-console=")
            assert "Secure" in cookie and "HttpOnly" in cookie
            assert "max-age" in response.headers["Strict-Transport-Security"]
            # The certificate's names are hosts the console answers to; others are not.
            assert "localhost" in c.console.context.allowed_hosts
            port = c.url.rsplit(":", 1)[1]
            other = await c.http.get(c.url + "/login", ssl=tls,
                                     headers={"Host": f"pacs.evil.example:{port}"})
            assert other.status == 421

    arun(go())


def test_serve_without_console_does_not_import_the_web_stack() -> None:
    code = ("import sys\n"
            "from aiodicom.app.cli.main import _build_parser\n"
            "import aiodicom.app.server.run\n"
            "_build_parser().parse_args(['serve', '--port', '0'])\n"
            "print(sorted(m for m in ('aiohttp', 'jinja2') if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "[]"


def test_serve_console_options_are_checked(tmp_path: Path) -> None:
    from aiodicom.app.server.config import merge

    base = {"port": 0, "console": "127.0.0.1:0"}
    with pytest.raises(ConfigurationError, match="console needs the CA directory"):
        merge({}, base)
    with pytest.raises(ConfigurationError, match="workers = 1"):
        merge({}, {**base, "console_pki": tmp_path, "workers": 2})
    with pytest.raises(ConfigurationError, match=r"\[HOST:\]PORT"):
        merge({}, {**base, "console": "nowhere:", "console_pki": tmp_path})
    options = merge({}, {**base, "ca": tmp_path / "ca.crt"})
    assert options.console_pki_dir() == tmp_path


def test_login_link_signs_in_as_the_operator_named(pki: Path, arun: Callable[..., Any]) -> None:
    async def go() -> str:
        async with running(pki) as c:
            for bad in ("", "a\nb", " ops", "x" * 65, "ops\x1b[2J"):
                with pytest.raises(ValueError, match="operator name"):
                    c.console.login_link(name=bad)
            response = await c.http.get(c.console.login_link(name="dana"),
                                        allow_redirects=False)
            assert response.status == 303
            return str((await (await c.http.get(c.url + "/api/session")).json())["admin"])

    assert arun(go()) == "dana"
    audit = (pki / "console" / "audit.log").read_text()
    assert 'UserID="dana"' in audit and 'UserID="admin"' not in audit
