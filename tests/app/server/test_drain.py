"""Graceful shutdown of the real `aiodicom serve`: a transfer in flight completes after SIGTERM.

The server runs as a subprocess with ``--drain-timeout 20``. One association stores 30 files
of 2 MB, paced by short pauses; SIGTERM arrives while a C-STORE is in flight. The association
must finish with every status success and every file stored, a new connection made after the
signal must be refused, and the server must exit 0 once the association is released.
"""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from aiodicom.aio.client import open_association, storage_contexts_for
from aiodicom.core.dimse import Status
from aiodicom.errors import DicomError
from aiodicom.settings import AssociationSettings
from tests.app.server.test_serve_cli import ServeProcess
from tests.conftest import make_runner, write_ct

FILES = 30
SIZE = 2 * 1024 * 1024
SIGNAL_AT = 5
"""The store during which SIGTERM is sent."""


def write_files(folder: Path) -> list[Path]:
    """FILES CT instances of SIZE bytes of pixel data (one pydicom template, new UIDs)."""
    folder.mkdir()
    ds = pydicom.dcmread(write_ct(folder / "template.dcm"))
    (folder / "template.dcm").unlink()
    ds.Columns = 1024
    ds.Rows = SIZE // 2048
    ds.PixelData = bytes(range(256)) * (SIZE // 256)
    paths = []
    for i in range(FILES):
        uid = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        path = folder / f"{i:02d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


async def wait_for_log(serve: ServeProcess, text: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while text not in serve.log():
        assert time.monotonic() < deadline, f"server never logged {text!r}:\n{serve.log()}"
        await asyncio.sleep(0.02)


def test_transfer_in_flight_completes_after_sigterm(tmp_path: Path) -> None:
    paths = write_files(tmp_path / "out")
    storage = tmp_path / "storage"
    serve = ServeProcess.start("--port", "0", "--drain-timeout", "20", "--storage", storage)
    port = serve.ports["dicom"]
    settings = AssociationSettings(ae_title="MODALITY")

    async def main() -> tuple[list[Status], BaseException | None, int | None]:
        assoc = await open_association("127.0.0.1", port, settings=settings,
                                       contexts=storage_contexts_for(paths[:1]))
        statuses: list[Status] = []
        refused: BaseException | None = None
        try:
            for i, path in enumerate(paths):
                store = asyncio.create_task(assoc.store(path))
                if i == SIGNAL_AT:
                    await asyncio.sleep(0)  # the C-STORE starts going out
                    assert not store.done()
                    serve.proc.send_signal(signal.SIGTERM)
                    await wait_for_log(serve, "shutting down: draining 1 association(s)")
                    try:
                        late = await open_association("127.0.0.1", port, settings=settings)
                    except (OSError, DicomError) as exc:
                        refused = exc
                    else:
                        late.abort()
                statuses.append(await store)
                await asyncio.sleep(0.05)  # a slow modality: the drain spans seconds
            running = serve.proc.poll()  # still draining while we hold the association
        except BaseException:
            assoc.abort()
            raise
        await assoc.release()
        return statuses, refused, running

    start = time.monotonic()
    try:
        statuses, refused, running = make_runner("asyncio")(main())
    except BaseException:
        serve.stop()
        raise
    assert running is None, "the server exited while an association was still open"
    assert serve.proc.wait(timeout=15) == 0, serve.log()
    serve.stop()
    assert time.monotonic() - start < 40
    assert statuses == [Status.SUCCESS] * FILES
    assert refused is not None, "a new association was accepted after SIGTERM"
    # Refused (listener closed), rejected (A-ASSOCIATE-RJ), or reset: a connection the
    # kernel queued just before the listener closed is reset, never served.
    assert isinstance(refused, ConnectionError | DicomError), repr(refused)
    assert any(word in str(refused) for word in ("refused", "rejected", "reset")), repr(refused)
    after = serve.log().split("shutting down", 1)[1]
    assert after.count(": stored ") >= FILES - SIGNAL_AT - 1, serve.log()  # served in the drain
    stored = {p.stem for p in storage.rglob("*.dcm")}
    sent = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in paths}
    assert sent <= stored, sorted(sent - stored)
    assert "Traceback" not in serve.log()
