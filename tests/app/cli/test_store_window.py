"""`aiodicom store --window N`: propose N outstanding C-STOREs and pipeline up to what the
peer grants (PS3.7 D.3.3.3), against an in-process Server that counts the requests
outstanding, against `aiodicom serve`, and against a pynetdicom SCP (which grants 1)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.app.cli.main import main
from aiodicom.core.dimse import Status
from tests.aio.test_operations_window import Counter
from tests.app.server.test_serve_cli import ServeProcess, cli
from tests.conftest import write_ct

IMPLICIT = "1.2.840.10008.1.2"


class ThreadServer:
    """A Server on its own loop in a thread, so the synchronous CLI can talk to it."""

    def __init__(self, counter: Counter, *, refuse: frozenset[str] = frozenset()) -> None:
        self.counter = counter
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = counter.server(performed=8)
        if refuse:
            on_store = self.server.handlers.store
            assert on_store is not None

            async def refusing(request: Any) -> Status:
                status = await on_store(request)
                return Status.OUT_OF_RESOURCES if request.sop_instance_uid in refuse else status

            self.server.handlers = type(self.server.handlers)(
                store=refusing, echo=self.server.handlers.echo)
        _, self.port = self._call(self.server.listen())

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    def close(self) -> None:
        self._call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture
def counting_server() -> Iterator[ThreadServer]:
    server = ThreadServer(Counter())
    try:
        yield server
    finally:
        server.close()


def _files(folder: Path, n: int) -> list[Path]:
    folder.mkdir()
    return [write_ct(folder / f"{i}.dcm", size=2048) for i in range(n)]


def test_store_window_pipelines_within_the_window(
    tmp_path: Path, counting_server: ThreadServer, capsys: pytest.CaptureFixture[str]
) -> None:
    _files(tmp_path / "in", 12)
    argv = ["store", "127.0.0.1", str(counting_server.port), str(tmp_path / "in"), "-q",
            "--window", "4"]
    assert main(argv) == 0
    assert "sent 12 of 12" in capsys.readouterr().out
    counter = counting_server.counter
    assert counter.arrived == 12 and 1 < counter.peak <= 4


def test_store_without_window_sends_one_at_a_time(
    tmp_path: Path, counting_server: ThreadServer
) -> None:
    _files(tmp_path / "in", 5)
    argv = ["store", "127.0.0.1", str(counting_server.port), str(tmp_path / "in"), "-q",
            "-n", "1"]
    assert main(argv) == 0
    assert counting_server.counter.arrived == 5 and counting_server.counter.peak == 1


def test_store_window_exits_1_when_one_instance_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = _files(tmp_path / "in", 6)
    import pydicom

    bad = str(pydicom.dcmread(files[3]).SOPInstanceUID)
    server = ThreadServer(Counter(), refuse=frozenset({bad}))
    try:
        argv = ["store", "127.0.0.1", str(server.port), str(tmp_path / "in"), "-q",
                "--window", "3"]
        assert main(argv) == 1
    finally:
        server.close()
    out = capsys.readouterr().out
    assert "sent 5 of 6" in out and f"FAILED {files[3]}" in out and "0xA700" in out
    assert server.counter.arrived == 6 and server.counter.peak > 1


@pytest.mark.parametrize("bad", ["0", "65536", "x"])
def test_store_window_must_be_1_to_65535(bad: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["store", "127.0.0.1", "104", str(tmp_path), "--window", bad])
    assert exc.value.code == 2


def test_store_window_against_serve(tmp_path: Path) -> None:
    """The bundled server performs at most 8 at once: --window 16 is granted 8."""
    files = _files(tmp_path / "in", 20)
    server = ServeProcess.start("--port", "0", "--storage", tmp_path / "store")
    try:
        result = cli("store", "127.0.0.1", str(server.ports["dicom"]), tmp_path / "in", "-q",
                     "--window", "16")
    finally:
        assert server.stop() == 0
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sent 20 of 20" in result.stdout and "window 8 granted of 16" in result.stdout
    stored = [p for p in (tmp_path / "store").rglob("*.dcm") if ".incoming" not in p.parts]
    assert len(stored) == len(files)


@pytest.fixture(params=["no answer", "answers 1/1"])
def pynetdicom_scp(request: pytest.FixtureRequest) -> Iterator[tuple[int, list[str]]]:
    """A pynetdicom SCP: it never performs more than one operation at a time; without an
    EVT_ASYNC_OPS handler its A-ASSOCIATE-AC has no window item (= 1), with one it answers
    (1, 1)."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage, Verification

    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.dataset.SOPInstanceUID))
        return 0

    handlers: list[Any] = [(evt.EVT_C_STORE, on_store)]
    if request.param == "answers 1/1":
        handlers.append((evt.EVT_ASYNC_OPS, lambda event: (1, 1)))
    ae = AE(ae_title="PYSCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, [IMPLICIT, "1.2.840.10008.1.2.1"])
    scp = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
    try:
        yield scp.server_address[1], received
    finally:
        scp.shutdown()


def test_store_window_against_pynetdicom(
    tmp_path: Path, pynetdicom_scp: tuple[int, list[str]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    port, received = pynetdicom_scp
    files = _files(tmp_path / "in", 6)
    argv = ["store", "127.0.0.1", str(port), str(tmp_path / "in"), "-aec", "PYSCP", "-q",
            "--window", "8"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "sent 6 of 6" in out and "window 1 granted of 8" in out
    assert len(received) == len(files)

    async def library() -> tuple[list[Status], int, int]:
        async with connect("127.0.0.1", port, called_ae_title="PYSCP",
                           contexts=storage_contexts_for(files),
                           max_operations_invoked=8) as assoc:
            statuses = await asyncio.gather(*(assoc.store(p) for p in files))
            window = assoc._invoked
            assert window is not None and assoc.negotiated is not None
            return statuses, assoc.negotiated.max_operations_invoked, window.peak

    statuses, granted, peak = asyncio.run(library())
    assert statuses == [Status.SUCCESS] * 6 and granted == 1 and peak == 1
    assert len(received) == 2 * len(files)
