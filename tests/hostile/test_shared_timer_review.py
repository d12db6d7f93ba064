"""Hostile review of 3852a2a (ARTIM and the idle watchdog on one timer): ARTIM still ends
Sta13 after an A-RELEASE-RP (the watchdog armed with a long network timeout) and after an
A-ASSOCIATE-RJ (no watchdog yet)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from aiodicom.core.pdu import AAssociateRJ, AReleaseRP
from aiodicom.settings import Timeouts
from tests.hostile.conftest import harness, read_pdu, read_until_closed, rq_bytes

RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"


def test_artim_ends_sta13_after_release_with_the_watchdog_armed(
        run: Any, tmp_path: Path) -> None:
    async def main() -> float:
        async with harness(tmp_path, timeouts=Timeouts(artim=0.4, network=60.0,
                                                       dimse=30.0)) as h:
            reader, writer = await h.associate()
            writer.write(RELEASE_RQ)
            assert isinstance(await read_pdu(reader), AReleaseRP)
            loop = asyncio.get_running_loop()
            start = loop.time()
            assert await read_until_closed(reader, 5.0, stop_at_abort=False) == []
            elapsed = loop.time() - start
            writer.close()
            await h.settle()
            return elapsed

    elapsed = run(main())
    assert 0.3 <= elapsed < 2.0, elapsed


def test_artim_ends_sta13_after_reject(run: Any, tmp_path: Path) -> None:
    async def main() -> float:
        async with harness(tmp_path, timeouts=Timeouts(artim=0.4, network=60.0)) as h:
            reader, writer = await h.open()
            rq = rq_bytes()
            assert rq.count(b"1.2.840.10008.3.1.1.1") == 1
            writer.write(rq.replace(b"1.2.840.10008.3.1.1.1", b"1.2.840.10008.3.1.1.9"))
            first = await read_pdu(reader)
            loop = asyncio.get_running_loop()
            start = loop.time()
            rest = await read_until_closed(reader, 5.0, stop_at_abort=False)
            elapsed = loop.time() - start
            writer.close()
            await h.settle()
            return elapsed if isinstance(first, AAssociateRJ) and rest == [] else -1.0

    elapsed = run(main())
    assert 0.3 <= elapsed < 2.0, elapsed

