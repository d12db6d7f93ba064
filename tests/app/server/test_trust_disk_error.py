"""A failing local disk while a trust mirror is written (ENOSPC in the temporary directory)
must not end the polling: the last good trust stays, the error is counted, and the next
poll (the disk back) applies the new version, e.g. a revocation."""

from __future__ import annotations

import asyncio
import errno
from pathlib import Path
from typing import Any

import pytest

from aiodicom.app.server.trust_source import RemoteTrustFile, TrustMirrors
from tests.conftest import make_runner

run = make_runner("asyncio")
POLICY_1 = b'[defaults]\nallow = ["C-ECHO"]\n'
POLICY_2 = b'[defaults]\nallow = ["C-ECHO", "C-FIND"]\n'


def _mirrored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[RemoteTrustFile, Any]:
    from obstore.store import MemoryStore

    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")
    remote = RemoteTrustFile("policy", "az://trust/site/policy.toml", tmp_path)
    remote.store = MemoryStore()
    remote._check = lambda data, previous, path: None  # the policy parser is not under test
    return remote, remote.store


def test_a_disk_error_writing_the_mirror_keeps_the_poller_alive(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import obstore

    remote, store = _mirrored(tmp_path, monkeypatch)
    mirrors = TrustMirrors([remote], tmp_path, interval=0.05)
    changes: list[int] = []
    mirrors.on_change = lambda: changes.append(1)
    real_write = Path.write_bytes
    failing = {"on": False}

    def write_bytes(self: Path, data: bytes) -> int:
        if failing["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(Path, "write_bytes", write_bytes)

    async def main() -> tuple[bool, bytes]:
        await obstore.put_async(store, remote.key, POLICY_1)
        await mirrors.poll()  # the first version, as at start
        failing["on"] = True
        await obstore.put_async(store, remote.key, POLICY_2)
        poller = asyncio.create_task(mirrors.run())
        await asyncio.sleep(0.3)  # several polls on the full disk
        failing["on"] = False
        for _ in range(100):
            if remote.path.read_bytes() == POLICY_2 or poller.done():
                break
            await asyncio.sleep(0.05)
        alive = not poller.done()
        poller.cancel()
        await asyncio.gather(poller, return_exceptions=True)
        return alive, remote.path.read_bytes()

    alive, mirrored = run(main())
    assert alive, "the trust poller ended on a disk error: no revocation is applied again"
    assert mirrored == POLICY_2
    assert remote.stats.results.get("failed", 0) >= 1
    assert len(changes) == 2


def test_a_mirror_removed_under_the_server_is_written_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A /tmp cleaner (systemd-tmpfiles' 10-day age on RHEL and Fedora) removes a mirror that
    has not changed, typically the CA bundle: the next reload (the CRL's daily update) would
    then fail and keep the old CRL in force. The next poll writes it back, unchanged store
    or not."""
    import obstore

    directory = tmp_path / "mirrors"
    directory.mkdir()
    remote, store = _mirrored(directory, monkeypatch)
    mirrors = TrustMirrors([remote], directory, interval=60)

    async def main() -> None:
        await obstore.put_async(store, remote.key, POLICY_1)
        await mirrors.poll()
        remote.path.unlink()
        directory.rmdir()
        await mirrors.poll()  # the object is unchanged (304)

    run(main())
    assert remote.path.read_bytes() == POLICY_1
    assert (directory.stat().st_mode & 0o777) == 0o700
