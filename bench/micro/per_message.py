"""Per-message cases of `hotpaths.py`: C-ECHO and a small C-STORE on one established association.

The server is the bundled one as `aiodicom serve` builds it (`run_server`: index, the log
observer at INFO to a file), plain TCP on 127.0.0.1. A client process (blocking socket,
PDUs pre-encoded here, outside the measured loop) associates once, warms up, then on a
signal sends N requests one at a time, each after the previous response; only the server's
work on those N round trips is measured (association set-up and release are not).

- ``echo-on-association``: C-ECHO-RQ -> C-ECHO-RSP.
- ``store-on-association``: C-STORE-RQ of a ~2 KB data set (implicit VR little endian, one
  P-DATA-TF for the command and one for the data set, as storescu sends them) -> Part 10
  file renamed into place, index write queued, C-STORE-RSP. Each request has its own SOP
  Instance UID (fixed length, patched by the client), so every store writes a new file.
- ``echo-on-association-tls``: the C-ECHO case over mutual TLS (``serve --tls-port`` with
  the certificates `aiodicom pki` issues, as bench/macro/servers.py makes them; the client
  presents the STORESCU client certificate and checks the server's against the CA). Over
  TLS the client writes each P-DATA-TF as echoscu/storescu do (strace): the 12 bytes of PDU
  and PDV header, then the body, so an echo is two TLS records and a 128 KiB PDU is 1 + 8.
- ``store512k-on-association``, ``store512k-on-association-tls``: C-STORE-RQ of a
  524,288-byte pixel data set (plain, and over mutual TLS), sent as DCMTK storescu sends the
  bench row: data P-DATA-TF PDUs of 131,072 bytes (4 full + a tail), one PDV each. This is
  the per-image unit of the "200 x 512 KiB" rows.

The client's request PDUs go through a file (a 512 KiB data set does not fit an argument).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

CASES = ("echo-on-association", "store-on-association", "echo-on-association-tls",
         "store512k-on-association", "store512k-on-association-tls")
DEFAULT_N = {"echo-on-association": 5000, "store-on-association": 1000,
             "echo-on-association-tls": 5000, "store512k-on-association": 200,
             "store512k-on-association-tls": 200}
CALLGRIND_N = {"echo-on-association": 500, "store-on-association": 200,
               "echo-on-association-tls": 500, "store512k-on-association": 40,
               "store512k-on-association-tls": 40}
STORESCU_PDU = 131072  # storescu's P-DATA-TF size against our 1 MiB offer (store-attribution.md)

VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
IMPLICIT_LE = "1.2.840.10008.1.2"
UID_PREFIX = "1.2.826.0.1.3680043.8.498.77."
UID_DIGITS = 10  # prefix (29) + 10 digits + trailing NUL pad: 40 bytes, even
WARM_UP = 50

CLIENT = r"""
import socket, ssl, struct, sys
host, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[5]
n, warm = int(sys.argv[3]), int(sys.argv[4])
with open(sys.argv[6]) as f:
    rq, release, cmd, data = (bytes.fromhex(x) for x in f.read().split())
marker = sys.argv[7].encode()
digits = int(sys.argv[8])
tls = sys.argv[9:12]  # CA, client certificate, client key; none for plain TCP
def pdu(s):
    head = b""
    while len(head) < 6:
        got = s.recv(6 - len(head))
        if not got: raise SystemExit("closed")
        head += got
    kind_, _, length = struct.unpack(">BBI", head)
    body = b""
    while len(body) < length:
        got = s.recv(length - len(body))
        if not got: raise SystemExit("closed")
        body += got
    return kind_, body
cmd, data = bytearray(cmd), bytearray(data)
mid_at = cmd.index(b"\x00\x00\x10\x01\x02\x00\x00\x00") + 8
uid_at = [buf.index(marker) + len(marker) for buf in (cmd, data)] if kind != "echo" else []
counter = [0]
def send(s, buf):
    if not tls:
        s.sendall(buf)
        return
    view, at = memoryview(buf), 0
    while at < len(buf):  # as DCMTK does over TLS: PDU + PDV header, then the body
        end = at + 6 + struct.unpack_from(">I", buf, at + 2)[0]
        s.sendall(view[at:at + 12])
        s.sendall(view[at + 12:end])
        at = end
def one(s):
    counter[0] += 1
    c = counter[0]
    struct.pack_into("<H", cmd, mid_at, c % 65535 + 1)
    if uid_at:
        d = str(10 ** (digits - 1) + c).encode()
        cmd[uid_at[0]:uid_at[0] + digits] = d
        data[uid_at[1]:uid_at[1] + digits] = d
        send(s, cmd)
        send(s, data)
    else:
        send(s, cmd)
    k, body = pdu(s)
    if k != 4: raise SystemExit(f"answered with PDU type {k}")
    at = 6
    while at + 8 <= len(body):
        group, elem, vlen = struct.unpack_from("<HHI", body, at)
        if (group, elem) == (0, 0x0900):
            break
        at += 8 + vlen
    if body[at + 8:at + 10] != b"\0\0": raise SystemExit(f"status {body[at + 8:at + 10].hex()}")
s = socket.create_connection((host, port))
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
if tls:
    context = ssl.create_default_context(cafile=tls[0])
    context.load_cert_chain(tls[1], tls[2])
    s = context.wrap_socket(s, server_hostname="localhost")
    print("tls", s.version(), *s.cipher()[:1], file=sys.stderr, flush=True)
s.sendall(rq)
if pdu(s)[0] != 2: raise SystemExit("not accepted")
for _ in range(warm): one(s)
print("ready", flush=True)
for line in sys.stdin:
    if line.strip() == "go":
        for _ in range(n): one(s)
        print("done", flush=True)
    else:
        break
s.sendall(release)
if pdu(s)[0] != 6: raise SystemExit("no release")
s.close()
"""


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def associate_rq(called: str, calling: str) -> bytes:
    """A-ASSOCIATE-RQ: Verification (context 1) and CT Image Storage (3), implicit VR LE."""
    pcs = b"".join(
        _item(0x20, bytes([cid, 0, 0, 0]) + _item(0x30, sop.encode())
              + _item(0x40, IMPLICIT_LE.encode()))
        for cid, sop in ((1, VERIFICATION), (3, CT_STORAGE)))
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384))
                 + _item(0x52, b"1.2.826.0.1.3680043.8.498.1"))
    body = (struct.pack(">HH", 1, 0) + called.encode().ljust(16) + calling.encode().ljust(16)
            + bytes(32) + _item(0x10, b"1.2.840.10008.3.1.1.1") + pcs + user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _pdata(context_id: int, control: int, value: bytes) -> bytes:
    pdv = struct.pack(">IBB", len(value) + 2, context_id, control) + value
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


def request_pdus(kind: str) -> tuple[bytes, bytes]:
    """(command P-DATA-TF, data-set P-DATA-TF(s) or b"") with the UID digits 10...0.

    ``store512k``: the data set in P-DATA-TF PDUs of `STORESCU_PDU` bytes, one PDV each."""
    from aiodicom.core.dimse import CEchoRQ, CStoreRQ, encode_message

    if kind == "echo":
        return _pdata(1, 0x03, bytes(encode_message(CEchoRQ(message_id=1)))), b""
    uid = UID_PREFIX + "1" + "0" * (UID_DIGITS - 1)
    command = bytes(encode_message(CStoreRQ(
        message_id=1, affected_sop_class_uid=CT_STORAGE, affected_sop_instance_uid=uid)))
    if kind == "store":
        return _pdata(3, 0x03, command), _pdata(3, 0x02, small_dataset(uid))
    dataset = small_dataset(uid, rows=512, columns=512)
    step = STORESCU_PDU - 12  # PDU header 6, PDV length 4, context and control 2
    parts = [dataset[at:at + step] for at in range(0, len(dataset), step)]
    return _pdata(3, 0x03, command), b"".join(
        _pdata(3, 0x02 if i == len(parts) - 1 else 0x00, part) for i, part in enumerate(parts))


def make_certs(folder: Path) -> tuple[Path, Path, Path, Path, Path]:
    """(CA, server cert, server key, client cert, client key) from `aiodicom pki` (EC
    P-256), as bench/macro/servers.py makes them for the TLS bench rows."""
    tool = str(Path(sys.executable).with_name("aiodicom"))
    for argv in (
        [tool, "pki", "init", str(folder)],
        [tool, "pki", "issue", str(folder), "server", "--name", "localhost",
         "--ip", "127.0.0.1", "--out", str(folder / "server")],
        [tool, "pki", "issue", str(folder), "client", "--ae-title", "STORESCU",
         "--out", str(folder / "client")],
    ):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return (folder / "ca.crt", folder / "server.crt", folder / "server.key",
            folder / "client.crt", folder / "client.key")


def small_dataset(sop_instance_uid: str, rows: int = 20, columns: int = 40) -> bytes:
    """A CT image header and a ``rows`` x ``columns`` 16-bit pixel stand-in (default ~2 KB,
    1,600 bytes of pixels), implicit VR little endian."""
    from pydicom.dataset import Dataset

    from aiodicom.core.part10 import encode_dataset

    ds = Dataset()
    ds.SOPClassUID = CT_STORAGE
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyInstanceUID = UID_PREFIX + "1"
    ds.SeriesInstanceUID = UID_PREFIX + "2"
    ds.PatientName = "PER^MESSAGE"
    ds.PatientID = "PM-1"
    ds.StudyDate = "20261204"
    ds.Modality = "CT"
    ds.AccessionNumber = "A1"
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Rows = rows
    ds.Columns = columns
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(rows * columns * 2)
    return bytes(encode_dataset(ds, IMPLICIT_LE))


def run(case: str, n: int, profile: bool,
        measured: Callable[[Callable[[], None], bool], float]) -> float:
    """CPU seconds of ``n`` requests of ``case`` on one association (see the module doc)."""
    from aiodicom.aio.loop import loop_factory
    from aiodicom.app.server.config import ServeOptions
    from aiodicom.app.server.logs import configure_logging
    from aiodicom.app.server.run import run_server

    kind = case.split("-", 1)[0]
    work = Path(tempfile.mkdtemp(prefix="aiodicom-micro-"))
    tls: list[str] = []
    options = ServeOptions(port=0, storage=work / "storage")
    if case.endswith("-tls"):
        ca, cert, key, client_cert, client_key = make_certs(work / "pki")
        options = ServeOptions(tls_port=0, cert=cert, key=key, ca=ca, storage=work / "storage")
        tls = [str(ca), str(client_cert), str(client_key)]
    log_file = (work / "server.log").open("w")
    real_stderr, sys.stderr = sys.stderr, log_file
    try:
        configure_logging("text", "info")  # the handler binds sys.stderr now: the file
    finally:
        sys.stderr = real_stderr
    loop = loop_factory()()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    bound: list[tuple[str, str, int]] = []
    server = loop.create_task(run_server(options, started=bound.extend, stop=stop))
    while not bound:
        loop.run_until_complete(asyncio.sleep(0.01))
    _, host, port = bound[0]
    command, data = request_pdus(kind)
    pdus = work / "pdus.hex"
    pdus.write_text(" ".join((associate_rq("AIODICOM", "STORESCU").hex(),
                              struct.pack(">BBII", 5, 0, 4, 0).hex(), command.hex(),
                              data.hex() or "00")))
    client = subprocess.Popen(
        [sys.executable, "-c", CLIENT, host, str(port), str(n), str(WARM_UP), kind,
         str(pdus), UID_PREFIX, str(UID_DIGITS), *tls],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert client.stdin is not None and client.stdout is not None
    stdin, stdout = client.stdin, client.stdout

    async def expect(word: str) -> None:
        line = await loop.run_in_executor(None, stdout.readline)
        if line.strip() != word:
            raise SystemExit(f"client: expected {word!r}, got {line!r}")

    try:
        loop.run_until_complete(expect("ready"))  # associated, warm-up requests answered

        def body() -> None:
            stdin.write("go\n")
            stdin.flush()
            loop.run_until_complete(expect("done"))

        return measured(body, profile)
    finally:
        stdin.write("end\n")
        stdin.flush()
        loop.run_until_complete(loop.run_in_executor(None, client.wait))
        stop.set()
        loop.run_until_complete(server)
        loop.close()
        log_file.close()
        shutil.rmtree(work, ignore_errors=True)
        if client.returncode:
            raise SystemExit(f"client exited {client.returncode}")
