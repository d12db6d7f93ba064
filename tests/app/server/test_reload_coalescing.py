"""SIGHUP bursts: one reload pending at most, and nothing rebuilt when nothing changed
(`app/server/reloading.CoalescedReload`, installed by `run._on_hup`)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import pytest

from aiodicom.aio import tls
from aiodicom.app import pki
from aiodicom.app.server.policy import PolicyFile
from aiodicom.app.server.run import _on_hup, _Reloaders


class Counting:
    """A reloader that counts what SIGHUP asked of it."""

    def __init__(self) -> None:
        self.calls = 0

    def reload_changed(self) -> bool:
        self.calls += 1
        return False

    reload = reload_changed


class Wakes:
    def __init__(self) -> None:
        self.calls = 0

    def wake(self) -> None:
        self.calls += 1


async def _burst(handler: object, signals: int) -> None:
    """Deliver `signals` real SIGHUPs to this process through the loop's handler, then let
    the loop run every callback they scheduled."""
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, handler)  # type: ignore[arg-type]
    try:
        for _ in range(signals):
            os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(20):
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        for _ in range(20):
            await asyncio.sleep(0)
    finally:
        loop.remove_signal_handler(signal.SIGHUP)


def test_a_burst_of_sighups_is_at_most_one_reload_per_loop_turn() -> None:
    part, mirrors = Counting(), Wakes()
    handler = _on_hup(_Reloaders(None, part), mirrors)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(10):  # ten signals handled in one turn of the loop
            loop.call_soon(handler)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        await _burst(handler, 5)

    asyncio.run(main())
    assert mirrors.calls == 15  # the mirrors' wake is itself coalesced: passed on each time
    assert 1 <= part.calls <= 1 + 5, part.calls
    assert part.calls < 15


def test_sighup_rebuilds_nothing_when_nothing_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pki.init_ca(tmp_path / "ca")
    server = pki.issue_server(tmp_path / "ca", name="localhost", ips=["127.0.0.1"],
                              out=tmp_path / "srv")
    rctx = tls.ReloadingServerContext(cert=server.cert, key=server.key,
                                      ca=tmp_path / "ca" / "ca.crt", check_interval=3600)
    policy_path = tmp_path / "policy.toml"
    policy_path.write_text("default = 'deny'\n")
    policy = PolicyFile(policy_path)
    handler = _on_hup(_Reloaders(_Reloaders(rctx, policy), None), None)
    generation = rctx.generation

    async def main() -> None:
        await _burst(handler, 4)
        assert rctx.generation == generation  # the same files: no TLS rebuild at all
        policy_path.write_text("default = 'allow'\n")
        st = policy_path.stat()
        os.utime(policy_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        await _burst(handler, 3)

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    assert rctx.generation == generation
    assert caplog.text.count("policy reloaded") == 1, caplog.text
    assert "TLS trust files reloaded" not in caplog.text
    assert policy.policy.default == "allow"
