"""User identity (PS3.7 D.3.3.7) on the command line: the client's request from flags, the
server's verifier from ``--users``/``--jwt-key``, and ``aiodicom user hash``.

The users file is TOML: ``[users]`` maps a name to a `hash_passcode` hash, so the file never
holds a passcode. Passcodes and tokens are read from files or stdin by preference: a flag's
value is visible to other local users in the process list.
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
from aiodicom.core.user_items import UserIdentityRQ, UserIdentityType
from aiodicom.errors import ConfigurationError

__all__ = ["add_client_flags", "build_verifier", "load_users", "request_from_args"]


def add_client_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("user identity (PS3.7 D.3.3.7; use it over --tls)")
    who = g.add_mutually_exclusive_group()
    who.add_argument("--username", help="send a username (with --password/--password-file)")
    who.add_argument("--jwt", metavar="TOKEN", help="send a JSON Web Token")
    who.add_argument("--jwt-file", type=Path, metavar="FILE", help="send the JWT in FILE")
    secret = g.add_mutually_exclusive_group()
    secret.add_argument("--password", help="the passcode (prefer --password-file)")
    secret.add_argument("--password-file", type=Path, metavar="FILE",
                        help="read the passcode from FILE (first line)")
    g.add_argument("--identity-response", action="store_true",
                   help="ask the server for a positive response (sub-item 0x59)")


def _first_line(path: Path, what: str) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigurationError(f"cannot read the {what} file {path}: {exc}") from exc
    lines = text.splitlines()
    return lines[0] if lines else ""


def request_from_args(args: argparse.Namespace) -> UserIdentityRQ | None:
    """The UserIdentityRQ the client flags ask for, or None when none was given."""
    password = args.password
    if args.password_file is not None:
        password = _first_line(args.password_file, "--password-file")
    respond = bool(args.identity_response)
    if args.username is not None:
        if not args.username:
            raise ConfigurationError("--username must not be empty")
        if password is None:
            return UserIdentityRQ(identity_type=UserIdentityType.USERNAME,
                                  positive_response_requested=respond,
                                  primary_field=args.username.encode("utf-8"))
        return UserIdentityRQ(identity_type=UserIdentityType.USERNAME_AND_PASSCODE,
                              positive_response_requested=respond,
                              primary_field=args.username.encode("utf-8"),
                              secondary_field=password.encode("utf-8"))
    if password is not None:
        raise ConfigurationError("--password/--password-file need --username")
    token = args.jwt
    if args.jwt_file is not None:
        token = _first_line(args.jwt_file, "--jwt-file").strip()
    if token is not None:
        if not token:
            raise ConfigurationError("the JWT is empty")
        return UserIdentityRQ(identity_type=UserIdentityType.JWT,
                              positive_response_requested=respond,
                              primary_field=token.encode("ascii", "replace"))
    if respond:
        raise ConfigurationError("--identity-response needs --username or --jwt/--jwt-file")
    return None


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
