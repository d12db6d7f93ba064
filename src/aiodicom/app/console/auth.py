"""Who may use the console: one-time login links, console users, sessions and CSRF tokens.

A login link (printed at start, as Jupyter does) carries a random token that is consumed on
first use and turned into a session. Console users sign in with a name and a passcode hashed
as in the DICOM users file (`aiodicom user hash`). A session lives in an HttpOnly,
SameSite=Strict cookie and carries its own CSRF token, required on every form and on every
mutating /api call. Nothing here touches the network: `web` enforces it per request.
"""

from __future__ import annotations

import hmac
import secrets
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiodicom.aio.user_identity import verify_passcode
from aiodicom.errors import ConfigurationError

__all__ = ["Admin", "ConsoleUser", "Session", "Sessions", "load_console_users"]

SESSION_SECONDS = 8 * 3600.0
LOGIN_LINK_SECONDS = 24 * 3600.0


@dataclass(frozen=True, slots=True, kw_only=True)
class ConsoleUser:
    """One console administrator from the users file."""

    name: str
    passcode_hash: str
    org: str | None = None
    """The organization this administrator manages; None: every organization."""
    role: str = "admin"
    """"admin", or "requester": enrolments wait in the approval queue."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Admin:
    """The administrator behind a session (what the audit trail names)."""

    name: str
    org: str | None
    address: str = ""
    role: str = "admin"


@dataclass(slots=True, kw_only=True)
class Session:
    admin: Admin
    csrf: str
    expires: float


def load_console_users(path: Path) -> dict[str, ConsoleUser]:
    """Console users from TOML: ``[users] alice = "HASH"`` (the DICOM users file format) or
    ``[users.alice] passcode = "HASH"`` with an optional ``org = "Radiology East"``."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"console users file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"console users file {path} is not valid TOML: {exc}") from exc
    table = data.get("users")
    if not isinstance(table, dict):
        raise ConfigurationError(
            f'{path}: expected a [users] table (name = "hash", or [users.NAME] with passcode '
            "and org); make a hash with `aiodicom user hash`")
    users: dict[str, ConsoleUser] = {}
    for name, value in table.items():
        org: Any = None
        role: Any = "admin"
        if isinstance(value, dict):
            unknown = set(value) - {"passcode", "org", "role"}
            if unknown:
                raise ConfigurationError(f"{path}: users.{name}: unknown key(s) {sorted(unknown)}")
            hashed, org = value.get("passcode"), value.get("org")
            role = value.get("role", "admin")
        else:
            hashed = value
        if role not in ("admin", "requester"):
            raise ConfigurationError(f'{path}: users.{name}: role must be "admin" or '
                                     f'"requester", not {role!r}')
        if not isinstance(hashed, str) or (org is not None and not isinstance(org, str)):
            raise ConfigurationError(f"{path}: users.{name} needs a passcode hash string "
                                     "(and org, if given, a string)")
        verify_passcode(b"", hashed)  # a malformed hash is refused at start (ConfigurationError)
        users[name] = ConsoleUser(name=name, passcode_hash=hashed, org=org, role=role)
    return users


class Sessions:
    """Login tokens, users and live sessions of one console (in memory: a restart logs out)."""

    def __init__(self, users: dict[str, ConsoleUser] | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.users = dict(users or {})
        self._clock = clock
        self._login_tokens: dict[str, tuple[float, Admin]] = {}
        self._sessions: dict[str, Session] = {}

    def login_link_token(self, name: str = "admin", org: str | None = None) -> str:
        """A new one-time login token (for the link printed at start)."""
        token = secrets.token_urlsafe(32)
        self._login_tokens[token] = (self._clock() + LOGIN_LINK_SECONDS,
                                     Admin(name=name, org=org))
        return token

    def redeem(self, token: str, address: str) -> tuple[str, Session] | None:
        """Consume a login token; (session id, session) or None if unknown, used or expired."""
        for known in list(self._login_tokens):
            if hmac.compare_digest(known.encode(), token.encode()):
                expires, admin = self._login_tokens.pop(known)
                if expires < self._clock():
                    return None
                return self._open(Admin(name=admin.name, org=admin.org, address=address))
        return None

    def sign_in(self, name: str, passcode: str, address: str) -> tuple[str, Session] | None:
        """Check a console user's passcode; unknown names cost what known ones do."""
        user = self.users.get(name)
        if user is None:
            decoy = next(iter(self.users.values()), None)
            if decoy is not None:
                verify_passcode(passcode.encode(), decoy.passcode_hash)
            return None
        if not verify_passcode(passcode.encode(), user.passcode_hash):
            return None
        return self._open(Admin(name=user.name, org=user.org, address=address, role=user.role))

    def _open(self, admin: Admin) -> tuple[str, Session]:
        self._expire()
        sid = secrets.token_urlsafe(32)
        session = Session(admin=admin, csrf=secrets.token_urlsafe(32),
                          expires=self._clock() + SESSION_SECONDS)
        self._sessions[sid] = session
        return sid, session

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        session = self._sessions.get(sid)
        if session is None:
            return None
        if session.expires < self._clock():
            del self._sessions[sid]
            return None
        return session

    def close(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def _expire(self) -> None:
        now = self._clock()
        for sid in [s for s, v in self._sessions.items() if v.expires < now]:
            del self._sessions[sid]


def csrf_ok(session: Session, presented: str | None) -> bool:
    """Constant-time check of a presented CSRF token against the session's."""
    if not presented:
        return False
    return hmac.compare_digest(session.csrf.encode(), presented.encode())
