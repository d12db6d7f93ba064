"""What an idle association keeps on the server's Python heap (issue 18 item 3).

The server runs in this process under tracemalloc; 200 associations are opened from a
client in a subprocess (so none of the client's objects are counted) and held idle. The
bytes allocated directly by aiodicom's code (innermost frame in the package) that are
still alive, per association, are bounded: the association, its protocol, upper layer,
state machine, receive buffer, timers and dicts. The loop's transport and socket objects
and the kernel's and OpenSSL's buffers are not ours and not counted here; bench/concurrency.py
measures the whole RSS per mutual-TLS association.
"""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import tracemalloc
from typing import Any

from aiodicom.aio.admission import Admission
from aiodicom.aio.requests import EchoRequest, Handlers
from aiodicom.aio.server import Server
from aiodicom.core.dimse import Status
from aiodicom.core.negotiation import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    AcceptorPolicy,
)

N = 200
OURS_PER_ASSOCIATION = 12 * 1024
"""Bytes of aiodicom-allocated Python objects per idle association: measured 4.5 KB on the
default loop and 5.4 KB on uvloop (2026-12-04); the bound leaves room, a regression to a per-
association buffer or dict of buffers would cross it."""

_CLIENT = """
import asyncio, sys
from aiodicom.aio.client import open_association

async def main(port: int, n: int) -> None:
    held = [await open_association("127.0.0.1", port, called_ae_title="AIODICOM")
            for _ in range(n)]
    print("held", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for assoc in held:
        await assoc.release()

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def _ours(snapshot: tracemalloc.Snapshot) -> int:
    mine = snapshot.filter_traces([tracemalloc.Filter(True, "*/aiodicom/*")])
    return sum(stat.size for stat in mine.statistics("filename"))


async def _hold(n: int) -> tuple[int, int]:
    async def on_echo(request: EchoRequest) -> Status:
        return Status.SUCCESS

    syntaxes = {VERIFICATION_SOP_CLASS: (IMPLICIT_VR_LITTLE_ENDIAN,)}
    policy = AcceptorPolicy(abstract_syntaxes=syntaxes)
    server = Server(admission=Admission(policy=policy), handlers=Handlers(echo=on_echo))
    host, port = await server.listen()
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, str(port), "1",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    await _until_held(client, server, 1)  # warm: first-association caches are not per association
    await _release(client)
    gc.collect()
    before = tracemalloc.take_snapshot()
    client = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _CLIENT, str(port), str(n),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    await _until_held(client, server, n)
    gc.collect()
    after = tracemalloc.take_snapshot()
    await _release(client)
    await server.close()
    return _ours(after) - _ours(before), server.active


async def _until_held(client: Any, server: Server, n: int) -> None:
    assert await client.stdout.readline() == b"held\n"
    for _ in range(500):
        if server.active == n:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{server.active} associations active, expected {n}")


async def _release(client: Any) -> None:
    client.stdin.write(b"\n")
    await client.stdin.drain()
    assert await client.wait() == 0


def test_idle_association_heap_is_bounded(run: Any) -> None:
    tracemalloc.start(1)
    try:
        grown, active_after = run(_hold(N))
    finally:
        tracemalloc.stop()
    per_association = grown / N
    print(f"aiodicom-allocated heap per idle association: {per_association:.0f} bytes")
    assert active_after == 0
    assert 0 < per_association < OURS_PER_ASSOCIATION
