"""Sign-ins with a passcode are throttled per address and per console user: after 5
failures a guess is refused (429) for a delay that doubles, without hashing the passcode,
and memory stays bounded (review of issue 15: unlimited scrypt guesses)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.user_identity import hash_passcode
from aiodicom.app.console import auth
from aiodicom.app.console.auth import ConsoleUser, LoginThrottled, Sessions
from tests.app.console.conftest import running


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def hashes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Counts the passcodes hashed (each one is an scrypt)."""
    seen: list[bytes] = []
    real = auth.verify_passcode

    def counting(passcode: bytes, hashed: str) -> bool:
        seen.append(passcode)
        return real(passcode, hashed)

    monkeypatch.setattr(auth, "verify_passcode", counting)
    return seen


def _sessions(clock: Clock) -> Sessions:
    users = {n: ConsoleUser(name=n, passcode_hash=hash_passcode(n)) for n in ("alice", "bob")}
    return Sessions(users, clock=clock)


def test_five_failures_then_refused_without_hashing_for_a_doubling_delay(
        hashes: list[bytes]) -> None:
    clock = Clock()
    sessions = _sessions(clock)
    for _ in range(5):
        assert sessions.sign_in("alice", "wrong", "192.0.2.7") is None
    assert len(hashes) == 5
    with pytest.raises(LoginThrottled) as first:
        sessions.sign_in("alice", "alice", "192.0.2.7")  # even the right passcode waits
    assert first.value.retry_after == pytest.approx(1.0)
    assert len(hashes) == 5
    clock.now += 1.5
    assert sessions.sign_in("alice", "wrong", "192.0.2.7") is None
    with pytest.raises(LoginThrottled) as second:
        sessions.sign_in("alice", "wrong", "192.0.2.7")
    assert second.value.retry_after == pytest.approx(2.0)
    assert len(hashes) == 6
    clock.now += 2.5
    assert sessions.sign_in("alice", "alice", "192.0.2.7") is not None  # success clears
    assert sessions.sign_in("alice", "wrong", "192.0.2.7") is None


def test_a_console_user_is_throttled_whatever_the_address(hashes: list[bytes]) -> None:
    clock = Clock()
    sessions = _sessions(clock)
    for n in range(5):
        assert sessions.sign_in("alice", "wrong", f"192.0.2.{n}") is None
    with pytest.raises(LoginThrottled):
        sessions.sign_in("alice", "alice", "198.51.100.1")
    assert sessions.sign_in("bob", "bob", "198.51.100.1") is not None  # others still sign in


def test_an_address_is_throttled_whatever_the_names_and_ipv6_by_its_64(
        hashes: list[bytes]) -> None:
    clock = Clock()
    sessions = _sessions(clock)
    for n in range(5):
        assert sessions.sign_in(f"nobody{n}", "x", f"2001:db8::{n}") is None
    with pytest.raises(LoginThrottled):
        sessions.sign_in("bob", "bob", "2001:db8::ffff")
    assert sessions.sign_in("bob", "bob", "2001:db8:1::1") is not None
    assert len(hashes) == 6


def test_tracked_addresses_are_bounded_and_failures_forgotten(
        hashes: list[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(auth, "MAX_TRACKED", 3)
    clock = Clock()
    sessions = _sessions(clock)
    for n in range(10):
        sessions.sign_in("nobody", "x", f"192.0.2.{n}")
    assert len(sessions._by_address) == 3
    for _ in range(4):
        sessions.sign_in("nobody", "x", "203.0.113.9")
    clock.now += auth.FORGET_SECONDS + 1
    for _ in range(4):  # the earlier four are forgotten: not throttled yet
        assert sessions.sign_in("nobody", "x", "203.0.113.9") is None


def test_login_form_answers_429_with_retry_after_and_audits_it(
        pki: Path, tmp_path: Path, arun: Callable[..., Any]) -> None:
    users = tmp_path / "users.toml"
    users.write_text(f'[users.alice]\npasscode = "{hash_passcode("alice")}"\n')

    async def go() -> list[tuple[int, str | None]]:
        async with running(pki, users=users) as c:
            c.console.context.sessions._clock = Clock()  # no time passes: scrypt can be slow
            answers = []
            for passcode in ["wrong"] * 5 + ["alice"]:
                response = await c.http.post(c.url + "/login",
                                             data={"name": "alice", "passcode": passcode},
                                             allow_redirects=False)
                answers.append((response.status, response.headers.get("Retry-After")))
            return answers

    answers = arun(go())
    assert answers == [(403, None)] * 5 + [(429, "1")]
    audit = (pki / "console" / "audit.log").read_text()
    assert audit.count("refused sign-in: an unknown user or a wrong passcode") == 5
    assert "refused sign-in: too many failed sign-ins" in audit
    assert "signed in with a passcode" not in audit
