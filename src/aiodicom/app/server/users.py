"""The server's user identity verifier (PS3.7 D.3.3.7) from ``--users``/``--jwt-key``, and
``aiodicom user hash``.

The users file is TOML: ``[users]`` maps a name to a `hash_passcode` hash, so the file never
holds a passcode.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

from aiodicom.aio.user_identity import (
    IdentityVerifier,
    JWTVerifier,
    PasswordVerifier,
    by_type,
    hash_passcode,
)
from aiodicom.core.user_items import UserIdentityType
from aiodicom.errors import ConfigurationError

__all__ = ["add_user_subparsers", "build_verifier", "load_users"]


def load_users(path: Path) -> dict[str, str]:
    """``[users] name = "hash"`` from a TOML file; a bad hash is refused at start-up."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
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


def build_verifier(
    users: Path | None, jwt_key: Path | None, jwt_algorithm: str
) -> IdentityVerifier | None:
    """`by_type` over a `PasswordVerifier` (--users) and a `JWTVerifier` (--jwt-key)."""
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
        verifiers[UserIdentityType.JWT] = JWTVerifier(key, (jwt_algorithm,))
    return by_type(verifiers) if verifiers else None


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
