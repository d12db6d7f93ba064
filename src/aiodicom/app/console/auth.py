"""Who may use the console: one-time login links, console users, sessions and CSRF tokens.

A login link (printed at start, as Jupyter does) carries a random token that is consumed on
first use and turned into a session. Console users sign in with a name and a passcode hashed
as in the DICOM users file (`aiodicom user hash`). A session lives in an HttpOnly,
SameSite=Strict cookie and carries its own CSRF token, required on every form and on every
mutating /api call. Nothing here touches the network: `web` enforces it per request.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import time
import tomllib
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiodicom.aio.user_identity import verify_passcode
from aiodicom.errors import ConfigurationError

__all__ = ["Admin", "ConsoleUser", "LoginThrottled", "Session", "Sessions",
           "load_console_users"]

SESSION_SECONDS = 8 * 3600.0
LOGIN_LINK_SECONDS = 24 * 3600.0
FREE_FAILURES = 5
"""Failed passcodes per address (and per console user) before sign-ins are throttled."""
FIRST_DELAY = 1.0
MAX_DELAY = 15 * 60.0
"""Each failure past FREE_FAILURES doubles the refusal delay, from 1 s up to 15 minutes."""
FORGET_SECONDS = 3600.0
"""A key's failures are forgotten an hour after its last failure (and its delay) ended."""
MAX_TRACKED = 10_000
"""Addresses tracked at most (least recently failed forgotten first): memory is bounded."""


class LoginThrottled(Exception):
    """Too many failed sign-ins from this address or for this user: try again later.

    Raised before the passcode is hashed (a guess costs the console nothing)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many failed sign-ins: try again in {retry_after:.0f} s")
        self.retry_after = retry_after


@dataclass(slots=True, kw_only=True)
class _Failures:
    count: int = 0
    last: float = 0.0
    """Clock time of the last failure."""
    until: float = 0.0
    """Sign-ins refused (429) before this clock time."""


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
        self._by_address: OrderedDict[str, _Failures] = OrderedDict()
        """Failures per address, least recently failed first (at most MAX_TRACKED)."""
        self._by_user: dict[str, _Failures] = {}
        """Failures per console user (bounded by the users file; never evicted)."""

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
        """Check a console user's passcode; unknown names cost what known ones do.

        After FREE_FAILURES failures from one address (an IPv6 /64) or for one console user,
        `LoginThrottled` is raised, without hashing, until a delay that doubles with each
        further failure has passed. A success clears both counts."""
        user = self.users.get(name)
        keys: list[tuple[dict[str, _Failures], str]] = [(self._by_address,
                                                          _address_key(address))]
        if user is not None:
            keys.append((self._by_user, name))
        now = self._clock()
        wait = max(self._blocked(table, key, now) for table, key in keys)
        if wait > 0:
            raise LoginThrottled(wait)
        if user is None:
            decoy = next(iter(self.users.values()), None)
            if decoy is not None:
                verify_passcode(passcode.encode(), decoy.passcode_hash)
            self._failed(keys, now)
            return None
        if not verify_passcode(passcode.encode(), user.passcode_hash):
            self._failed(keys, now)
            return None
        for table, key in keys:
            table.pop(key, None)
        return self._open(Admin(name=user.name, org=user.org, address=address, role=user.role))

    @staticmethod
    def _blocked(table: dict[str, _Failures], key: str, now: float) -> float:
        record = table.get(key)
        if record is None:
            return 0.0
        if now > max(record.until, record.last) + FORGET_SECONDS:
            del table[key]
            return 0.0
        return max(0.0, record.until - now)

    def _failed(self, keys: list[tuple[dict[str, _Failures], str]], now: float) -> None:
        for table, key in keys:
            record = table.pop(key, None) or _Failures()
            record.count += 1
            record.last = now
            if record.count >= FREE_FAILURES:
                record.until = now + min(MAX_DELAY,
                                         FIRST_DELAY * 2.0 ** (record.count - FREE_FAILURES))
            table[key] = record  # most recent last
        while len(self._by_address) > MAX_TRACKED:
            self._by_address.popitem(last=False)

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


def _address_key(address: str) -> str:
    """The throttled unit: an IPv4 address, or an IPv6 address's /64 (one host's share)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def csrf_ok(session: Session, presented: str | None) -> bool:
    """Constant-time check of a presented CSRF token against the session's."""
    if not presented:
        return False
    return hmac.compare_digest(session.csrf.encode(), presented.encode())
