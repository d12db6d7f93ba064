"""Issue 17 items 7 and 8: --jwt-audience/--jwt-issuer from flags and config; the users file
and the JWT key reload like the trust files (poll and SIGHUP), keeping the last good ones."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import jwt
import pytest

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.user_identity import IdentityVerdict, hash_passcode
from aiodicom.app.cli.main import _build_parser
from aiodicom.app.server.config import ServeOptions, load_config, merge
from aiodicom.app.server.run import build_server
from aiodicom.app.server.users import IdentityFiles
from aiodicom.core.user_items import UserIdentityRQ, UserIdentityType
from aiodicom.errors import ConfigurationError
from tests.conftest import make_runner

INFO = AssociationInfo(id=1, calling_ae_title="CT01", called_ae_title="AIODICOM",
                       peer_address=("127.0.0.1", 1))
SECRET = b"a" * 40
sync = make_runner("asyncio")


def verdict(verifier: Any, rq: UserIdentityRQ) -> IdentityVerdict:
    result: IdentityVerdict = sync(verifier(INFO, rq))
    return result


def login(user: str, passcode: str) -> UserIdentityRQ:
    return UserIdentityRQ(identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
                          positive_response_requested=False, primary_field=user.encode(),
                          secondary_field=passcode.encode())


def bearer(secret: bytes, **claims: Any) -> UserIdentityRQ:
    import time

    body = {"sub": "carol", "exp": time.time() + 300, **claims}
    return UserIdentityRQ(identity_type=UserIdentityType.JWT, positive_response_requested=False,
                          primary_field=jwt.encode(body, secret, algorithm="HS256").encode())


def _touch_later(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))


def test_users_file_reloads_and_a_bad_file_keeps_the_old_users(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    users = tmp_path / "users.toml"
    alice = hash_passcode("a-pass", method="pbkdf2_sha256")
    users.write_text(f'[users]\nalice = "{alice}"\n')
    files = IdentityFiles(users, None)
    assert verdict(files, login("alice", "a-pass")).accepted
    assert not files.maybe_reload()  # unchanged
    bob = hash_passcode("b-pass", method="pbkdf2_sha256")
    users.write_text(f'[users]\nbob = "{bob}"\n')  # alice removed, bob added
    _touch_later(users)
    assert files.maybe_reload()
    assert not verdict(files, login("alice", "a-pass")).accepted
    assert verdict(files, login("bob", "b-pass")).accepted
    users.write_text('[users]\nbob = "scrypt$1024$')  # half-written
    _touch_later(users)
    with caplog.at_level(logging.ERROR):
        assert not files.maybe_reload()
        assert not files.maybe_reload()  # reported once, not on every poll
    assert caplog.text.count("not reloaded") == 1
    assert verdict(files, login("bob", "b-pass")).accepted  # the last good file stays


def test_jwt_key_rotation_applies_on_sighup_reload(tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"
    key.write_bytes(SECRET)
    files = IdentityFiles(None, key)
    assert verdict(files, bearer(SECRET)).user == "carol"
    new_secret = b"b" * 40
    key.write_bytes(new_secret)
    assert files.reload()  # SIGHUP
    assert not verdict(files, bearer(SECRET)).accepted  # the retired key no longer signs in
    assert verdict(files, bearer(new_secret)).accepted


def test_jwt_audience_and_issuer_from_config_and_flags(tmp_path: Path) -> None:
    key = tmp_path / "jwt.key"
    key.write_bytes(SECRET)
    config = tmp_path / "serve.toml"
    config.write_text(f'port = 0\njwt_key = "{key}"\njwt_audience = "pacs-1"\n'
                      f'jwt_issuer = "idp"\nstorage = "{tmp_path / "s"}"\n')
    options = merge(load_config(config), {})
    assert (options.jwt_audience, options.jwt_issuer) == ("pacs-1", "idp")
    server, _ = build_server(options)
    verify = server.admission.verify_identity
    assert verdict(verify, bearer(SECRET, aud="pacs-1", iss="idp")).accepted
    assert not verdict(verify, bearer(SECRET, aud="billing", iss="idp")).accepted
    assert not verdict(verify, bearer(SECRET, aud="pacs-1", iss="other")).accepted
    assert not verdict(verify, bearer(SECRET, iss="idp")).accepted  # aud required
    args = _build_parser().parse_args(
        ["serve", "--port", "0", "--jwt-key", str(key), "--jwt-audience", "pacs-2",
         "--jwt-issuer", "idp2"])
    assert (args.jwt_audience, args.jwt_issuer) == ("pacs-2", "idp2")


def test_jwt_audience_without_a_key_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="jwt_audience needs"):
        ServeOptions(port=0, jwt_audience="x").check()


def test_server_reloads_users_with_the_trust_files(tmp_path: Path) -> None:
    """build_server hands the identity files to the same poll/SIGHUP reloader."""
    users = tmp_path / "users.toml"
    users.write_text("[users]\n")
    server, reloading = build_server(ServeOptions(port=0, users=users, storage=tmp_path / "s"))
    assert reloading is not None
    assert server.admission.verify_identity in reloading.parts
    hashed = hash_passcode("d-pass", method="pbkdf2_sha256")
    users.write_text(f'[users]\ndave = "{hashed}"\n')
    _touch_later(users)
    reloading.maybe_reload()
    assert verdict(server.admission.verify_identity, login("dave", "d-pass")).accepted
