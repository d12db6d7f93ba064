"""The real `aiodicom` command line in subprocesses: pki, serve (plain and mutual TLS), echo,
store, shutdown on SIGTERM, configuration errors and help texts.

`serve --port 0` picks free ports; the test reads them from the "listening for dicom on
HOST:PORT" lines the server logs at INFO on stderr.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
import pytest

from tests.conftest import write_ct

AIODICOM = str(Path(sys.executable).with_name("aiodicom"))
LISTENING = re.compile(r"listening for (dicom\+tls|dicom) on ([0-9.]+):(\d+)")


def cli(*args: str | Path, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AIODICOM, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)


@dataclass
class ServeProcess:
    proc: subprocess.Popen[str]
    ports: dict[str, int] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, *args: str | Path, expect: tuple[str, ...] = ("dicom",)) -> ServeProcess:
        proc = subprocess.Popen([AIODICOM, "serve", *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        self = cls(proc)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + 20
        while not all(kind in self.ports for kind in expect):
            if proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise AssertionError("serve did not log its ports:\n" + self.log())
            time.sleep(0.02)
        return self

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if m := LISTENING.search(line):
                self.ports[m.group(1)] = int(m.group(3))

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("serve did not exit within 15 s of SIGTERM") from None
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        return code


@dataclass
class Setup:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    storage: Path
    serve: ServeProcess
    tmp: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    tmp = tmp_path_factory.mktemp("cli")
    ca = tmp / "ca"
    for args in (
        ("pki", "init", ca),
        ("pki", "issue", ca, "server", "--name", "localhost", "--ip", "127.0.0.1",
         "--out", tmp / "server"),
        ("pki", "issue", ca, "client", "--ae-title", "MODALITY", "--org", "Hospital",
         "--out", tmp / "modality"),
    ):
        done = cli(*args)
        assert done.returncode == 0, done.stderr
    config = tmp / "serve.toml"
    storage = tmp / "storage"
    config.write_text(f'ae_title = "CLI-SCP"\nduplicates = "reject"\nstorage = "{storage}"\n')
    serve = ServeProcess.start(
        "--config", config, "--port", "0", "--tls-port", "0",
        "--cert", tmp / "server.crt", "--key", tmp / "server.key", "--ca", ca / "ca.crt",
        expect=("dicom", "dicom+tls"),
    )
    try:
        yield Setup(ca=ca / "ca.crt", server_cert=tmp / "server.crt",
                    server_key=tmp / "server.key", client_cert=tmp / "modality.crt",
                    client_key=tmp / "modality.key", storage=storage, serve=serve, tmp=tmp)
    finally:
        assert serve.stop() == 0, serve.log()


def _tls_flags(s: Setup) -> list[str | Path]:
    return ["--tls", "--cert", s.client_cert, "--key", s.client_key, "--ca", s.ca,
            "--calling-ae", "MODALITY"]


def test_listening_lines_name_bound_ports(setup: Setup) -> None:
    ports = setup.serve.ports
    assert set(ports) == {"dicom", "dicom+tls"}
    assert all(0 < port < 65536 for port in ports.values())
    assert ports["dicom"] != ports["dicom+tls"]
    assert "'CLI-SCP'" in setup.serve.log()  # the AE title from the TOML file


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_echo(setup: Setup, transport: str) -> None:
    port = setup.serve.ports["dicom" if transport == "plain" else "dicom+tls"]
    extra = _tls_flags(setup) if transport == "tls" else []
    done = cli("echo", "127.0.0.1", port, "--called-ae", "CLI-SCP", "--repeat", "2", *extra)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "status 0x0000" in done.stdout


def test_store_folder_over_tls_lands_in_storage_and_index(setup: Setup) -> None:
    folder = setup.tmp / "study"
    (folder / "sub").mkdir(parents=True)
    sent = [write_ct(folder / "a.dcm", series_uid="1.2.3.4.5.6"),
            write_ct(folder / "sub" / "b.dcm", series_uid="1.2.3.4.5.7")]
    (folder / "notes.txt").write_text("not DICOM")
    done = cli("store", "127.0.0.1", setup.serve.ports["dicom+tls"], folder, "-q",
               *_tls_flags(setup))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sent 2 of 2 file(s)" in done.stdout
    assert "skipped" in done.stdout and "notes.txt" in done.stdout
    for path in sent:
        ds = pydicom.dcmread(path)
        stored = (setup.storage / ds.StudyInstanceUID / ds.SeriesInstanceUID
                  / f"{ds.SOPInstanceUID}.dcm")
        assert stored.is_file(), sorted(setup.storage.rglob("*"))
        assert pydicom.dcmread(stored).PixelData == ds.PixelData
    with sqlite3.connect(setup.storage / "index.sqlite") as db:
        uids = {row[0] for row in db.execute('SELECT "SOPInstanceUID" FROM instance')}
    assert {str(pydicom.dcmread(path).SOPInstanceUID) for path in sent} <= uids

    # duplicates = "reject" in the TOML file: sending the same instance again fails.
    again = cli("store", "127.0.0.1", setup.serve.ports["dicom"], sent[0], "-q")
    assert again.returncode != 0, again.stdout
    assert "FAILED" in again.stdout and "status 0x" in again.stdout, again.stdout


def test_tls_client_with_unbound_ae_title_fails_clearly(setup: Setup) -> None:
    flags = _tls_flags(setup)
    flags[-1] = "SPOOFED"
    done = cli("echo", "127.0.0.1", setup.serve.ports["dicom+tls"], *flags)
    assert done.returncode == 1
    assert "aiodicom echo: error:" in done.stderr and "reject" in done.stderr.lower()
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("mix", ["tls-to-plain-port", "plain-to-tls-port"])
def test_wrong_protocol_for_the_port_fails_clearly(setup: Setup, mix: str) -> None:
    if mix == "tls-to-plain-port":
        done = cli("echo", "127.0.0.1", setup.serve.ports["dicom"], *_tls_flags(setup))
    else:
        done = cli("echo", "127.0.0.1", setup.serve.ports["dicom+tls"], "--calling-ae",
                   "MODALITY")
    assert done.returncode == 1, done.stdout
    assert "aiodicom echo: error:" in done.stderr
    assert "TLS" in done.stderr  # the message points at the likely cause
    assert "Traceback" not in done.stderr
    # and the server is still fine
    assert cli("echo", "127.0.0.1", setup.serve.ports["dicom"]).returncode == 0


def test_store_to_closed_port_fails_clearly(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        done = cli("store", "127.0.0.1", port, write_ct(tmp_path / "x.dcm"), "-q")
    assert done.returncode != 0
    assert "refused the connection" in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_drains_then_exits_0(tmp_path: Path) -> None:
    """SIGTERM with an association still open: the server waits --drain-timeout, aborts it,
    and exits 0."""
    from aiodicom.aio.client import open_association
    from aiodicom.core.dimse import Status

    serve = ServeProcess.start("--port", "0", "--storage", tmp_path / "s", "--drain-timeout",
                               "1")
    port = serve.ports["dicom"]
    assert cli("echo", "127.0.0.1", port).returncode == 0

    async def hold_open_then_sigterm() -> tuple[int, float, bool]:
        assoc = await open_association("127.0.0.1", port)
        assert await assoc.echo() == Status.SUCCESS
        start = time.monotonic()
        serve.proc.send_signal(signal.SIGTERM)
        while serve.proc.poll() is None and time.monotonic() - start < 10:
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - start
        await asyncio.sleep(0.1)
        established = assoc.is_established
        assoc.abort()
        return serve.stop(), elapsed, established

    code, elapsed, established = asyncio.run(hold_open_then_sigterm())
    assert code == 0, serve.log()
    assert 0.8 <= elapsed < 5
    assert not established  # the server aborted what was left after the drain
    assert "shutting down: draining 1 association(s)" in serve.log()


def test_unknown_config_key_names_it(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text('port = 0\nmax_pdu_lenght = 65536\n')
    done = cli("serve", "--config", config)
    assert done.returncode != 0
    assert "max_pdu_lenght" in done.stderr
    assert "Traceback" not in done.stderr


def test_version_and_help() -> None:
    from aiodicom import __version__

    done = cli("--version")
    assert done.returncode == 0 and __version__ in done.stdout
    for command in ("serve", "echo", "store", "pki"):
        done = cli(command, "--help")
        assert done.returncode == 0, done.stderr
        assert f"aiodicom {command}" in done.stdout
