"""The server's user identity verifier (PS3.7 D.3.3.7) from ``--users``/``--jwt-key``, and
``aiodicom user hash``.

The users file is TOML: ``[users]`` maps a name to a `hash_passcode` hash, so the file never
holds a passcode.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from pathlib import Path

from aiodicom.aio.association import AssociationInfo
from aiodicom.aio.user_identity import (
    IdentityVerdict,
    IdentityVerifier,
    JWTVerifier,
    PasswordVerifier,
    by_type,
    hash_passcode,
)
from aiodicom.app.server.reloading import PolledFiles
from aiodicom.core.user_items import UserIdentityRQ, UserIdentityType
from aiodicom.errors import ConfigurationError

__all__ = ["IdentityFiles", "add_user_subparsers", "build_verifier", "load_users"]

log = logging.getLogger("aiodicom.users")


def load_users(path: Path) -> dict[str, str]:
    """``[users] name = "hash"`` from a TOML file; a bad hash is refused at start-up."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigurationError(f"--users {path} is not UTF-8: {exc}") from exc
    except OSError as exc:
        raise ConfigurationError(f"--users {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"--users {path} is not valid TOML: {exc}") from exc
    users = data.get("users")
    if not isinstance(users, dict) or not all(isinstance(v, str) for v in users.values()):
        raise ConfigurationError(
            f'--users {path}: expected a [users] table of name = "hash" '
            "(make a hash with `aiodicom user hash`)")
    return dict(users)


def _make_verifier(users: Path | None, jwt_key: Path | None, jwt_algorithm: str,
                   jwt_audience: str | None, jwt_issuer: str | None) -> IdentityVerifier:
    verifiers: dict[UserIdentityType, IdentityVerifier] = {}
    if users is not None:
        passwords = PasswordVerifier(load_users(Path(users)))
        verifiers[UserIdentityType.USERNAME_AND_PASSCODE] = passwords
        verifiers[UserIdentityType.USERNAME] = passwords  # refuses: username-only is off
    if jwt_key is not None:
        try:
            key = Path(jwt_key).read_bytes()
        except OSError as exc:
            raise ConfigurationError(f"--jwt-key {jwt_key}: {exc}") from exc
        if jwt_algorithm.startswith("HS"):
            key = key.strip()
        verifiers[UserIdentityType.JWT] = JWTVerifier(
            key, (jwt_algorithm,), audience=jwt_audience, issuer=jwt_issuer)
    return by_type(verifiers)


class IdentityFiles(PolledFiles):
    """The verifier from ``--users`` and ``--jwt-key``, rebuilt when either file changes.

    Like the trust files: polled (`maybe_reload`) and reloaded on SIGHUP (`reload`); a file
    that does not load keeps the previous verifier in force and logs one error. At start a
    bad file is a `ConfigurationError`.
    """

    what = "user identity files"

    def __init__(self, users: Path | None, jwt_key: Path | None, jwt_algorithm: str = "HS256",
                 *, jwt_audience: str | None = None, jwt_issuer: str | None = None) -> None:
        self._args = (users, jwt_key, jwt_algorithm, jwt_audience, jwt_issuer)
        super().__init__([Path(p) for p in (users, jwt_key) if p is not None])
        self.verifier = _make_verifier(*self._args)
        """The verifier in force (replaced as a whole on a good reload)."""

    async def __call__(self, info: AssociationInfo, request: UserIdentityRQ) -> IdentityVerdict:
        return await self.verifier(info, request)

    def _load(self) -> str:
        self.verifier = _make_verifier(*self._args)
        return ""


def build_verifier(
    users: Path | None, jwt_key: Path | None, jwt_algorithm: str = "HS256", *,
    jwt_audience: str | None = None, jwt_issuer: str | None = None,
) -> IdentityFiles | None:
    """`by_type` over a `PasswordVerifier` (--users) and a `JWTVerifier` (--jwt-key), as an
    `IdentityFiles` that reloads them; None when neither is given."""
    if users is None and jwt_key is None:
        return None
    return IdentityFiles(users, jwt_key, jwt_algorithm, jwt_audience=jwt_audience,
                         jwt_issuer=jwt_issuer)


def cmd_user_hash(args: argparse.Namespace) -> int:
    """``aiodicom user hash``: the passcode on stdin (first line), its hash on stdout."""
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise ConfigurationError("no passcode on stdin (e.g. `aiodicom user hash < file`)")
    print(hash_passcode(line, method=args.method))
    return 0


def add_user_subparsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = sub.add_parser("user", help="user identity helpers",
                          description="Helpers for `aiodicom serve --users FILE`.")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION")
    hash_p = user_sub.add_parser(
        "hash", help="hash a passcode read from stdin",
        description='Read a passcode (first line of stdin), print a hash for the [users] '
                    'table of --users FILE: alice = "<hash>".')
    hash_p.add_argument("--method", choices=("scrypt", "pbkdf2_sha256"), default="scrypt")
    hash_p.set_defaults(func=cmd_user_hash)
