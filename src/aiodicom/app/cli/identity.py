"""User identity (PS3.7 D.3.3.7) on the client command line: the request from flags.

Passcodes and tokens are read from files or stdin by preference: a flag's value is visible
to other local users in the process list. The server's side is `aiodicom.app.server.users`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from aiodicom.core.user_items import UserIdentityRQ, UserIdentityType
from aiodicom.errors import ConfigurationError

__all__ = ["add_client_flags", "request_from_args"]


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
