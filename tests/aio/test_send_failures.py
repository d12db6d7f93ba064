"""Once a C-STORE's command is on the wire, any failure of its data set aborts the
association: a half message would corrupt the next one (PS3.8 Annex E.1)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aiodicom.aio.association as association
from aiodicom.aio.client import open_association
from aiodicom.core.negotiation import EXPLICIT_VR_LITTLE_ENDIAN
from tests.aio.test_conformance_send import CT, _server
from tests.conftest import write_ct


@pytest.mark.parametrize("how", ["error", "cancel"])
def test_failure_after_the_command_aborts(run: Any, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    path = write_ct(tmp_path / "ct.dcm", size=200_000)
    streaming = asyncio.Event()

    def stream(info: Any, chunk: int) -> Iterator[bytearray]:
        yield bytearray(chunk)  # the command and this first fragment go out
        streaming.set()
        if how == "error":
            raise ValueError("the reader failed half way")
        while True:
            yield bytearray(chunk)

    monkeypatch.setattr(association, "stream_dataset", stream)
    got: list[Any] = []

    async def main() -> tuple[BaseException | None, bool]:
        server = await _server((EXPLICIT_VR_LITTLE_ENDIAN,), got)
        host, port = await server.listen()
        try:
            assoc = await open_association(host, port,
                                           contexts=[(CT, [EXPLICIT_VR_LITTLE_ENDIAN])])
            task = asyncio.ensure_future(assoc.store(path))
            if how == "cancel":
                await streaming.wait()
                task.cancel()
            err: BaseException | None = None
            try:
                await task
            except BaseException as exc:  # noqa: BLE001 - the test inspects it
                err = exc
            return err, assoc.is_established
        finally:
            await server.close()

    err, established = run(main())
    assert err is not None
    assert not established, "half a message on the wire and the association still up"
