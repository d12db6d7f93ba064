"""User identity and TLS profile on the real command line: `aiodicom user hash`, `serve --users
--jwt-key --require-user-identity --tls-profile`, and `echo`/`store --username --password
--jwt --tls-profile` in subprocesses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aiodicom.aio.user_identity import verify_passcode
from aiodicom.app import pki
from aiodicom.app.server.config import load_config, merge
from aiodicom.errors import ConfigurationError
from tests.app.server.test_serve_cli import AIODICOM, ServeProcess, cli
from tests.conftest import write_ct

PASSWORD = "correct horse battery"
SECRET = b"0123456789abcdef0123456789abcdef-shared"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def hs256(claims: dict[str, object], secret: bytes = SECRET) -> str:
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(claims).encode())
    sig = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(sig)}"


def user_hash(passcode: str) -> str:
    done = subprocess.run([AIODICOM, "user", "hash"], input=passcode + "\n",
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@dataclass
class Setup:
    serve: ServeProcess
    tmp: Path
    tls: list[str | Path]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("identity")
    root = tmp / "ca"
    pki.init_ca(root)
    server = pki.issue_server(root, name="localhost", ips=["127.0.0.1"], out=tmp / "server")
    client = pki.issue_client(root, ae_titles=["MODALITY"], out=tmp / "modality")
    users = tmp / "users.toml"
    users.write_text(f'[users]\nalice = "{user_hash(PASSWORD)}"\n')
    (tmp / "jwt.key").write_bytes(SECRET + b"\n")
    (tmp / "serve.toml").write_text('tls_profile = "bcp195-modified"\n'
                                    "require_user_identity = true\n")
    serve = ServeProcess.start(
        "--config", tmp / "serve.toml", "--port", "0", "--tls-port", "0",
        "--cert", server.cert, "--key", server.key, "--ca", root / "ca.crt",
        "--users", users, "--jwt-key", tmp / "jwt.key", "--jwt-algorithm", "HS256",
        "--storage", tmp / "storage", expect=("dicom", "dicom+tls"),
    )
    tls: list[str | Path] = ["--tls", "--cert", client.cert, "--key", client.key,
                             "--ca", root / "ca.crt", "--calling-ae", "MODALITY"]
    try:
        yield Setup(serve=serve, tmp=tmp, tls=tls)
    finally:
        assert serve.stop() == 0, serve.log()


def echo(s: Setup, *args: str | Path, tls: bool = False) -> subprocess.CompletedProcess[str]:
    port = s.serve.ports["dicom+tls" if tls else "dicom"]
    return cli("echo", "127.0.0.1", port, *(s.tls if tls else []), *args)


def test_user_hash_prints_a_verifiable_hash() -> None:
    stored = user_hash("s3cret")
    assert stored.startswith("scrypt$")
    assert verify_passcode(b"s3cret", stored)
    assert not verify_passcode(b"s3cre", stored)


def test_right_password_accepted(setup: Setup) -> None:
    done = echo(setup, "--username", "alice", "--password", PASSWORD, "--identity-response")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "status 0x0000" in done.stdout


def test_password_file_over_tls_with_bcp195_modified(setup: Setup) -> None:
    secret = setup.tmp / "alice.pass"
    secret.write_text(PASSWORD + "\n")
    done = echo(setup, "--username", "alice", "--password-file", secret,
                "--tls-profile", "bcp195-modified", tls=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_store_with_password(setup: Setup) -> None:
    path = write_ct(setup.tmp / "one.dcm")
    done = cli("store", "127.0.0.1", setup.serve.ports["dicom"], path, "-q",
               "--username", "alice", "--password", PASSWORD)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sent 1 of 1" in done.stdout


@pytest.mark.parametrize("who", [("alice", "wrong"), ("mallory", PASSWORD)])
def test_wrong_password_or_user_refused_clearly(setup: Setup, who: tuple[str, str]) -> None:
    done = echo(setup, "--username", who[0], "--password", who[1])
    assert done.returncode == 1, done.stdout
    assert "rejected" in done.stderr and "no reason given" in done.stderr, done.stderr
    assert "user identity" in done.stderr
    assert "Traceback" not in done.stderr
    assert PASSWORD not in setup.serve.log() and "wrong" not in done.stderr


def test_no_identity_refused(setup: Setup) -> None:
    done = echo(setup)
    assert done.returncode == 1, done.stdout
    assert "no reason given" in done.stderr and "--username" in done.stderr
    stored = cli("store", "127.0.0.1", setup.serve.ports["dicom"],
                 write_ct(setup.tmp / "refused.dcm"), "-q")
    assert stored.returncode == 1 and "sent 0 of 1" in stored.stdout


def test_jwt_accepted_and_expired_refused(setup: Setup) -> None:
    now = int(time.time())
    good = hs256({"sub": "bob", "exp": now + 300, "iat": now})
    done = echo(setup, "--jwt", good, "--identity-response", tls=True)
    assert done.returncode == 0, done.stdout + done.stderr
    token_file = setup.tmp / "token.jwt"
    token_file.write_text(good + "\n")
    assert echo(setup, "--jwt-file", token_file).returncode == 0
    expired = hs256({"sub": "bob", "exp": now - 3600, "iat": now - 7200})
    done = echo(setup, "--jwt", expired, tls=True)
    assert done.returncode == 1, done.stdout
    assert "no reason given" in done.stderr
    forged = hs256({"sub": "bob", "exp": now + 300}, secret=b"x" * 40)
    assert echo(setup, "--jwt", forged).returncode == 1
    assert "the token has expired" in setup.serve.log()  # the server logs why, not the peer


def test_client_flag_misuse_is_a_clear_error(setup: Setup) -> None:
    done = echo(setup, "--password", "x")
    assert done.returncode == 1 and "--password/--password-file need --username" in done.stderr
    done = echo(setup, "--username", "alice", "--jwt", "t")
    assert done.returncode == 2 and "not allowed with" in done.stderr


def test_unknown_tls_profile_names_the_key(tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('tls_profile = "tls13-only"\n')
    with pytest.raises(ConfigurationError, match="tls_profile"):
        merge(load_config(config), {"port": 0})
    assert merge(load_config(config), {"port": 0, "tls_profile": "bcp195"}).tls_profile == "bcp195"
    done = cli("serve", "--port", "0", "--tls-profile", "nope")
    assert done.returncode == 1 and "tls_profile" in done.stderr, done.stderr
    done = cli("echo", "127.0.0.1", "1", "--tls-profile", "nope")
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_identity_config_checked_at_start(tmp_path: Path) -> None:
    done = cli("serve", "--port", "0", "--require-user-identity")
    assert done.returncode == 1 and "--users" in done.stderr, done.stderr
    done = cli("serve", "--port", "0", "--users", tmp_path / "missing.toml")
    assert done.returncode == 1 and "no such file" in done.stderr
    bad = tmp_path / "users.toml"
    bad.write_text('[users]\nalice = "plaintext"\n')
    done = cli("serve", "--port", "0", "--users", bad, "--storage", tmp_path / "s")
    assert done.returncode == 1 and "hash" in done.stderr, done.stderr
    short = tmp_path / "short.key"
    short.write_bytes(b"too short")
    done = cli("serve", "--port", "0", "--jwt-key", short, "--storage", tmp_path / "s")
    assert done.returncode == 1 and "32 bytes" in done.stderr, done.stderr
