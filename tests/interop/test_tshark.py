"""A packet capture proves that a mutual-TLS session carries no PHI in clear (PS3.15 B.12).

An in-process `Server` on 127.0.0.1 port 0; dumpcap (Wireshark's capture engine, what
``tshark -w`` runs) records the loopback traffic of that port while `connect` stores a CT file
whose PatientName and PatientID hold a marker. The capture must hold TLS records and not the
marker (ASCII or UTF-16) nor the SOP Instance UID. The same exchange on a plain listener must
show the marker: the method can see PHI when it is there.

dumpcap and tshark are installed by `make peers` (CI); a missing one fails with instructions.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest

from aiodicom.aio import tls
from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.requests import StoreRequest
from aiodicom.aio.server import Admission, Handlers, Server
from aiodicom.app import pki
from aiodicom.app.server.run import storage_acceptor_policy
from aiodicom.core.dimse import Status
from aiodicom.settings import AssociationSettings
from tests.conftest import make_runner, write_ct

pytestmark = pytest.mark.interop

MARKER = "PHI-MARKER-7f3a"
CAPTURE_START_TIMEOUT = 15.0


def wireshark_tool(name: str) -> str:
    path = Path("/usr/bin") / name
    if not path.exists():
        found = shutil.which(name)
        raise AssertionError(
            f"{name} is missing at {path} (found: {found}); install it with "
            "`sudo apt-get install tshark` or run `make peers` (capturing on lo needs root "
            "or the wireshark group's dumpcap capabilities)"
        )
    return str(path)


@dataclass
class PKI:
    ca: Path
    server: pki.IssuedCertificate
    client: pki.IssuedCertificate


@pytest.fixture(scope="module")
def p(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    tmp = tmp_path_factory.mktemp("tshark")
    root = tmp / "ca"
    pki.init_ca(root)
    return PKI(
        ca=root / "ca.crt",
        server=pki.issue_server(root, name="localhost", ips=["127.0.0.1"], out=tmp / "server"),
        client=pki.issue_client(root, ae_titles=["MODALITY"], out=tmp / "modality"),
    )


def phi_file(path: Path) -> tuple[Path, str]:
    write_ct(path, size=64 * 1024)
    ds = pydicom.dcmread(path)
    ds.PatientName = f"{MARKER}^Jane"
    ds.PatientID = MARKER
    ds.save_as(path, enforce_file_format=True)
    return path, str(ds.SOPInstanceUID)


class Capture:
    """dumpcap on lo for the listener's port and a probe port of our own.

    dumpcap says "Capturing on" a few hundred milliseconds before packets really reach it,
    so `start` also waits until a probe connection shows up in the file, and `stop` probes
    again before SIGINT so the exchange's last packets are in the file too.
    """

    def __init__(self, port: int, out: Path) -> None:
        self.port = port
        self.out = out
        self.proc: asyncio.subprocess.Process | None = None
        self.probe: asyncio.Server | None = None
        self.probe_port = 0

    def _size(self) -> int:
        return self.out.stat().st_size if self.out.exists() else 0

    async def _probed(self) -> None:
        """Connect to the probe port until dumpcap has written more to the file (bounded)."""
        size = self._size()
        async with asyncio.timeout(CAPTURE_START_TIMEOUT):
            while self._size() <= size:
                assert self.proc is not None and self.proc.returncode is None, "dumpcap died"
                _, writer = await asyncio.open_connection("127.0.0.1", self.probe_port)
                writer.close()
                await writer.wait_closed()
                await asyncio.sleep(0.05)

    async def start(self) -> None:
        async def ignore(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        self.probe = await asyncio.start_server(ignore, "127.0.0.1", 0)
        self.probe_port = self.probe.sockets[0].getsockname()[1]
        self.proc = await asyncio.create_subprocess_exec(
            wireshark_tool("dumpcap"), "-i", "lo", "-f",
            f"tcp port {self.port} or tcp port {self.probe_port}", "-w", str(self.out),
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        assert self.proc.stderr is not None
        seen: list[str] = []
        try:
            async with asyncio.timeout(CAPTURE_START_TIMEOUT):
                while "Capturing on" not in "".join(seen):
                    line = (await self.proc.stderr.readline()).decode(errors="replace")
                    if not line:
                        raise AssertionError("dumpcap exited before capturing:\n"
                                             + "".join(seen))
                    seen.append(line)
            await self._probed()
        except BaseException:
            await self.stop(clean=False)
            raise

    async def stop(self, *, clean: bool = True) -> None:
        try:
            if clean:
                await self._probed()
                await asyncio.sleep(0.2)
        finally:
            if self.probe is not None:
                self.probe.close()
            if self.proc is not None and self.proc.returncode is None:
                self.proc.send_signal(signal.SIGINT)
                try:
                    async with asyncio.timeout(10):
                        await self.proc.communicate()
                except TimeoutError:
                    self.proc.kill()
                    await self.proc.wait()
                    raise AssertionError("dumpcap did not stop within 10 s of SIGINT") from None
        assert self.out.is_file(), "dumpcap wrote no capture file"


async def capture_store(
    out: Path, path: Path, *, server_tls: Any = None, client_tls: Any = None
) -> tuple[Status, int]:
    """Serve, capture, C-STORE `path` once, stop the capture and the server; the status and
    the listener's port."""
    stored: list[str] = []

    async def on_store(request: StoreRequest) -> Status:
        stored.append(request.sop_instance_uid)
        return Status.SUCCESS

    server = Server(
        admission=Admission(
            policy=storage_acceptor_policy("AIODICOM", max_pdu_length=16384),
            identify=tls.identity_from_ssl_object if server_tls else None,
        ),
        handlers=Handlers(store=on_store),
    )
    _, port = await server.listen("127.0.0.1", 0, tls=server_tls)
    try:
        capture = Capture(port, out)
        await capture.start()
        try:
            async with connect("127.0.0.1", port, contexts=storage_contexts_for([path]),
                               tls=client_tls,
                               settings=AssociationSettings(ae_title="MODALITY")) as assoc:
                status = await assoc.store(path)
        finally:
            await capture.stop()
    finally:
        await server.close(drain_timeout=5)
    assert len(stored) == 1
    return status, port


def tls_record_types(pcap: Path, port: int | None = None) -> list[str]:
    """The content type of every TLS record tshark decodes in the capture (TLS 1.3 hides the
    real type of encrypted records: their outer ``opaque_type`` is 23, application data)."""
    argv = [wireshark_tool("tshark"), "-r", str(pcap), "-Y", "tls", "-T", "fields",
            "-e", "tls.record.content_type", "-e", "tls.record.opaque_type"]
    if port is not None:
        argv[3:3] = ["-d", f"tcp.port=={port},tls"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return [t for line in done.stdout.split() for t in line.split(",") if t]


def assert_no_phi(data: bytes, uid: str) -> None:
    for needle in (MARKER.encode("ascii"), MARKER.encode("utf-16-le"),
                   MARKER.encode("utf-16-be"), uid.encode("ascii")):
        assert needle not in data, f"{needle!r} is in clear in the capture"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_tls_session_carries_no_phi_in_clear(p: PKI, tmp_path: Path, loop: str) -> None:
    path, uid = phi_file(tmp_path / "phi.dcm")
    assert MARKER.encode() in path.read_bytes()  # the file itself does hold the PHI
    pcap = tmp_path / "tls.pcapng"
    server_tls = tls.server_context(cert=p.server.cert, key=p.server.key, ca=p.ca)
    client_tls = tls.client_context(cert=p.client.cert, key=p.client.key, ca=p.ca)
    status, port = make_runner(loop)(capture_store(pcap, path, server_tls=server_tls,
                                                   client_tls=client_tls))
    assert status == Status.SUCCESS
    data = pcap.read_bytes()
    assert len(data) > 64 * 1024, "the capture is smaller than the data set: traffic missed"
    assert_no_phi(data, uid)
    types = tls_record_types(pcap, port)
    assert "22" in types, types  # handshake records
    assert types.count("23") >= 3, types  # application data carried the association


def test_control_plain_listener_shows_phi(tmp_path: Path) -> None:
    path, uid = phi_file(tmp_path / "phi.dcm")
    pcap = tmp_path / "plain.pcapng"
    status, port = make_runner("asyncio")(capture_store(pcap, path))
    assert status == Status.SUCCESS
    data = pcap.read_bytes()
    assert MARKER.encode("ascii") in data
    assert uid.encode("ascii") in data
    assert tls_record_types(pcap, port) == []  # decoded as TLS, the plain stream has none
