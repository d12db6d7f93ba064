"""Running the reference peers (DCMTK, pynetdicom) beside our code in tests.

A missing peer is a test failure with instructions, never a skip: CI installs DCMTK
(`make peers`) and pynetdicom (the dev extra).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Callable, Sequence
from pathlib import Path

DCMTK = Path("/usr/bin")


def dcmtk(tool: str) -> str:
    """Absolute path of a DCMTK tool (pynetdicom's same-named scripts shadow them in a venv)."""
    path = DCMTK / tool
    if not path.exists():
        found = shutil.which(tool, path="/usr/local/bin:/usr/bin")
        raise AssertionError(
            f"DCMTK's {tool} is missing at {path} (found: {found}); install it with "
            "`sudo apt-get install dcmtk` or run `make peers`"
        )
    return str(path)


def dcmtk_env() -> dict[str, str]:
    """DCMTK leaves Nagle on unless TCP_NODELAY=1 is set (50x slower)."""
    return {**os.environ, "TCP_NODELAY": "1"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def run_tool(*argv: str, timeout: float = 60) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env=dcmtk_env(),
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise AssertionError(f"{argv[0]} did not finish within {timeout} s") from None
    return proc.returncode or 0, out.decode(errors="replace")


async def wait_listening(port: int, proc: asyncio.subprocess.Process, timeout: float = 10) -> None:
    """Wait until a peer we started accepts connections (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if proc.returncode is not None:
            raise AssertionError(f"peer exited early with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise AssertionError(f"peer did not listen on {port} within {timeout} s")


def same_dataset(a: Path, b: Path) -> None:
    """The two files hold the same data set (file meta aside)."""
    import pydicom

    da, db = pydicom.dcmread(a), pydicom.dcmread(b)
    assert da.file_meta.MediaStorageSOPInstanceUID == db.file_meta.MediaStorageSOPInstanceUID
    for elem in da:
        assert elem.tag in db, f"{elem.tag} missing"
        assert db[elem.tag].value == elem.value, f"{elem.tag} differs"
    assert len(da) == len(db)


async def start_listening(argv: Callable[[int], Sequence[str]], *, attempts: int = 5,
                          ) -> tuple[asyncio.subprocess.Process, int]:
    """Start a DCMTK peer that listens on a port we pick, and wait until it accepts.

    DCMTK binds without SO_REUSEADDR, so a port free_port() saw free can still be refused
    (TIME_WAIT, or another test took it meanwhile): a peer that exits at start is tried
    again on another port."""
    for _attempt in range(attempts):
        port = free_port()
        proc = await asyncio.create_subprocess_exec(
            *argv(port), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            env=dcmtk_env())
        try:
            await wait_listening(port, proc)
        except AssertionError:
            if proc.returncode is None:
                proc.terminate()
                await proc.wait()
                raise
            continue
        return proc, port
    raise AssertionError(f"{argv(0)[0]} exited at start {attempts} times")
