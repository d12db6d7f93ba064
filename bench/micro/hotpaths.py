"""Per-operation cost of aiodicom's hot paths, in CPU time or in instructions (callgrind).

    python bench/micro/hotpaths.py                    # CPU µs per operation, every case
    python bench/micro/hotpaths.py --callgrind        # instructions per operation (~2-4 min)
    python bench/micro/hotpaths.py --case accept --profile   # cProfile of the measured loop

Cases (one operation each):
- ``decode-echo`` / ``decode-store``: `decode_message` of a C-ECHO-RQ / C-STORE-RQ command set.
- ``assemble-store``: `MessageAssembler.feed` of a P-DATA-TF holding a C-STORE-RQ command
  PDV and a last (2-byte) data-set PDV: PDVs -> typed message + fragment event.
- ``receive-16k`` / ``receive-1m``: one P-DATA-TF of 16 KiB / 1 MiB (one PDV) through
  `ReceiveBuffer` in 64 KiB reads (`get_buffer`/`buffer_updated`, as the protocol does) and
  `decode_pdu`.
- ``associate-rq`` / ``associate-rq-120``: `decode_pdu` of an A-ASSOCIATE-RQ body with one
  presentation context (as echoscu sends) / 120 contexts of 3 transfer syntaxes each (the
  shape of storescu's default proposal), then `negotiate` against an acceptor of the storage
  SOP classes and `encode_pdu` of the A-ASSOCIATE-AC: the whole association set-up in core.
- ``accept``: one associate + C-ECHO + release (+ close) through the bundled server built
  as `aiodicom serve` builds it (`run_server`: index, log observer at INFO to a file),
  plain TCP on 127.0.0.1. The client is a separate process (pre-encoded PDUs, blocking
  sockets), so only the server's work is counted.
- ``echo-on-association`` / ``store-on-association``: one C-ECHO / one C-STORE of a ~2 KB
  data set on an association already established with the same server (`per_message.py`):
  the per-message cost alone.

CPU time is `time.process_time` over the measured loop (all threads of this process; the
client process is not counted): it does not depend on what else the machine runs, but it
has the kernel's tick resolution, so loops are long. ``--callgrind`` runs each case again
under ``valgrind --tool=callgrind`` collecting only inside the measured loop (it runs inside
a ctypes callback and collection is toggled on ``ffi_call``), and prints instructions per
operation: repeatable to a fraction of a percent on a loaded machine.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import per_message  # noqa: E402
from macro.assoc_client import RELEASE_RQ, associate_rq, echo_rq  # noqa: E402

CASES = ("decode-echo", "decode-store", "assemble-store", "receive-16k", "receive-1m",
         "associate-rq", "associate-rq-120", "accept", *per_message.CASES)
DEFAULT_N = {"decode-echo": 20000, "decode-store": 20000, "assemble-store": 20000,
             "receive-16k": 20000, "receive-1m": 400, "associate-rq": 20000,
             "associate-rq-120": 500, "accept": 1000, **per_message.DEFAULT_N}
CALLGRIND_N = {"decode-echo": 2000, "decode-store": 2000, "assemble-store": 2000,
               "receive-16k": 1000, "receive-1m": 40, "associate-rq": 2000,
               "associate-rq-120": 50, "accept": 200, **per_message.CALLGRIND_N}
STORE_CLASS = "1.2.840.10008.5.1.4.1.1.2"
STORE_INSTANCE = "1.2.826.0.1.3680043.8.498.10229876543210123456789.1"


def _measured(body: Callable[[], None], profile: bool) -> float:
    """Run ``body`` (the measured loop); return its CPU seconds. Under callgrind
    (AIODICOM_CALLGRIND=1) it runs inside a ctypes callback so only it is collected."""
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.runcall(body)
        lines = int(os.environ.get("PROFILE_LINES", "35"))
        pstats.Stats(prof).sort_stats("tottime").print_stats(lines)
        return 0.0
    t0 = time.process_time()
    if os.environ.get("AIODICOM_CALLGRIND") == "1":
        ctypes.PYFUNCTYPE(None)(body)()
    else:
        body()
    return time.process_time() - t0


# ---------------------------------------------------------------- codec cases


def _command_bytes(kind: str) -> bytes:
    from aiodicom.core.dimse import CEchoRQ, CStoreRQ, encode_message

    if kind == "echo":
        msg: object = CEchoRQ(message_id=7)
    else:
        msg = CStoreRQ(message_id=7, affected_sop_class_uid=STORE_CLASS,
                       affected_sop_instance_uid=STORE_INSTANCE)
    return bytes(encode_message(msg))  # type: ignore[arg-type]


def _case_decode(kind: str, n: int, profile: bool) -> float:
    from aiodicom.core.dimse import decode_message

    data = memoryview(_command_bytes(kind))
    for _ in range(200):
        decode_message(data)

    def body() -> None:
        for _ in range(n):
            decode_message(data)

    return _measured(body, profile)


def _case_assemble(n: int, profile: bool) -> float:
    from aiodicom.core.dimse import MessageAssembler
    from aiodicom.core.pdu import decode_pdu_bytes

    command = _command_bytes("store")
    pdv = (struct.pack(">IBB", len(command) + 2, 1, 0x03) + command
           + struct.pack(">IBB", 4, 1, 0x02) + b"\0\0")  # + a one-fragment data set
    pdu = decode_pdu_bytes(struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv)
    assembler = MessageAssembler()
    for _ in range(200):
        assembler.feed(pdu)  # type: ignore[arg-type]

    def body() -> None:
        feed = assembler.feed
        for _ in range(n):
            feed(pdu)  # type: ignore[arg-type]

    return _measured(body, profile)


def _case_associate(contexts: int, n: int, profile: bool) -> float:
    from aiodicom.core.negotiation import AcceptorPolicy, negotiate_as_acceptor
    from aiodicom.core.pdu import decode_pdu, encode_pdu

    rq = associate_rq("ANY-SCP", "ECHOSCU") if contexts == 1 else _many_contexts_rq(contexts)
    body = memoryview(rq)[6:]
    policy = AcceptorPolicy(accept_any_abstract_syntax=True)

    def once() -> None:
        request = decode_pdu(0x01, body)
        encode_pdu(negotiate_as_acceptor(request, policy))  # type: ignore[arg-type]

    for _ in range(50):
        once()

    def loop() -> None:
        for _ in range(n):
            once()

    return _measured(loop, profile)


def _many_contexts_rq(contexts: int) -> bytes:
    """An A-ASSOCIATE-RQ shaped like storescu's default: ``contexts`` storage classes."""
    from aiodicom.core.items import PresentationContextRQ
    from aiodicom.core.pdu import AAssociateRQ, encode_pdu
    from aiodicom.core.user_items import UserInformation

    base = "1.2.840.10008.5.1.4.1.1."
    ts = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2")
    pcs = tuple(PresentationContextRQ(context_id=2 * i + 1,
                                      abstract_syntax=f"{base}{i // 10 + 1}.{i % 10 + 1}",
                                      transfer_syntaxes=ts) for i in range(contexts))
    return encode_pdu(AAssociateRQ(called_ae_title="ANY-SCP", calling_ae_title="STORESCU",
                                   presentation_contexts=pcs,
                                   user_information=UserInformation(maximum_length=16384)))


def _case_receive(pdu_size: int, n: int, profile: bool) -> float:
    from aiodicom.core.buffer import ReceiveBuffer
    from aiodicom.core.pdu import decode_pdu

    value = bytes(pdu_size - 12)
    pdv = struct.pack(">IBB", len(value) + 2, 1, 0x00) + value
    wire = struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv
    chunk = 64 * 1024
    pieces = [memoryview(wire)[i:i + chunk] for i in range(0, len(wire), chunk)]
    buffer = ReceiveBuffer(max_body=1 << 24)

    def one() -> None:
        for piece in pieces:
            size = len(piece)
            at = 0
            while at < size:
                view = buffer.get_buffer(chunk)
                take = min(len(view), size - at)
                view[:take] = piece[at:at + take]
                buffer.buffer_updated(take)
                at += take
                for raw in buffer:
                    decode_pdu(raw.pdu_type, raw.body)

    for _ in range(20):
        one()

    def body() -> None:
        for _ in range(n):
            one()

    return _measured(body, profile)


# ---------------------------------------------------------------- the accept case


CLIENT = r"""
import socket, struct, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rq, echo, release = (bytes.fromhex(x) for x in sys.argv[4:7])
def pdu(s):
    head = b""
    while len(head) < 6:
        got = s.recv(6 - len(head))
        if not got: raise SystemExit("closed")
        head += got
    kind, _, length = struct.unpack(">BBI", head)
    body = b""
    while len(body) < length:
        got = s.recv(length - len(body))
        if not got: raise SystemExit("closed")
        body += got
    return kind
for _ in range(n):
    s = socket.create_connection((host, port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(rq)
    if pdu(s) != 2: raise SystemExit("not accepted")
    s.sendall(echo)
    if pdu(s) != 4: raise SystemExit("no echo")
    s.sendall(release)
    if pdu(s) != 6: raise SystemExit("no release")
    s.close()
"""


def _case_accept(n: int, profile: bool) -> float:
    from aiodicom.aio.loop import loop_factory
    from aiodicom.app.server.config import ServeOptions
    from aiodicom.app.server.logs import configure_logging
    from aiodicom.app.server.run import run_server

    work = Path(tempfile.mkdtemp(prefix="aiodicom-micro-"))
    log_file = (work / "server.log").open("w")
    real_stderr, sys.stderr = sys.stderr, log_file
    try:
        configure_logging("text", "info")  # the handler binds sys.stderr now: the file
    finally:
        sys.stderr = real_stderr
    options = ServeOptions(port=0, storage=work / "storage")
    loop = loop_factory()()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()
    bound: list[tuple[str, str, int]] = []
    server = loop.create_task(run_server(options, started=bound.extend, stop=stop))
    while not bound:
        loop.run_until_complete(asyncio.sleep(0.01))
    _, host, port = bound[0]
    hexes = [associate_rq("AIODICOM", "STORESCU").hex(), echo_rq().hex(), RELEASE_RQ.hex()]

    def client(count: int) -> None:
        subprocess.run([sys.executable, "-c", CLIENT, host, str(port), str(count), *hexes],
                       check=True)

    async def drive(count: int) -> None:
        await loop.run_in_executor(None, client, count)

    try:
        loop.run_until_complete(drive(50))  # warm-up: imports, caches, first index write

        def body() -> None:
            loop.run_until_complete(drive(n))

        return _measured(body, profile)
    finally:
        stop.set()
        loop.run_until_complete(server)
        loop.close()
        log_file.close()
        shutil.rmtree(work, ignore_errors=True)


def run_case(case: str, n: int, profile: bool = False) -> float:
    """CPU seconds of ``n`` operations of ``case``."""
    if case.startswith("decode-"):
        return _case_decode(case.removeprefix("decode-"), n, profile)
    if case == "assemble-store":
        return _case_assemble(n, profile)
    if case == "receive-16k":
        return _case_receive(16 * 1024, n, profile)
    if case == "receive-1m":
        return _case_receive(1 << 20, n, profile)
    if case == "associate-rq":
        return _case_associate(1, n, profile)
    if case == "associate-rq-120":
        return _case_associate(120, n, profile)
    if case == "accept":
        return _case_accept(n, profile)
    if case in per_message.CASES:
        return per_message.run(case, n, profile, _measured)
    raise SystemExit(f"unknown case {case}")


def _callgrind(case: str, n: int) -> int:
    """Instructions of ``n`` operations of ``case``, collected in a child under callgrind."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--callgrind needs valgrind on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "AIODICOM_CALLGRIND": "1", "PYTHONHASHSEED": "0"}
        subprocess.run(
            [valgrind, "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=ffi_call*",
             f"--callgrind-out-file={out}", sys.executable, __file__, "--case", case,
             "--n", str(n), "--inner"],
            check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for line in out.read_text().splitlines():
            if line.startswith("totals:") or line.startswith("summary:"):
                return int(line.split()[1])
    raise SystemExit(f"no totals in callgrind output for {case}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", action="append", choices=CASES, help="repeatable")
    parser.add_argument("--n", type=int, help="operations per case (default per case)")
    parser.add_argument("--callgrind", action="store_true", help="instructions per operation")
    parser.add_argument("--profile", action="store_true", help="cProfile the measured loop")
    parser.add_argument("--json", action="store_true", help="one JSON object per case")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for case in args.case or CASES:
        if args.inner or args.profile:
            run_case(case, args.n or DEFAULT_N[case], profile=args.profile)
            continue
        if args.callgrind:
            n = args.n or CALLGRIND_N[case]
            per_op = _callgrind(case, n) / n
            row = {"case": case, "n": n, "instructions_per_op": round(per_op)}
            text = f"{case:15} {per_op:>14,.0f} instructions/op  (n={n})"
        else:
            n = args.n or DEFAULT_N[case]
            seconds = min(run_case(case, n) for _ in range(3))
            row = {"case": case, "n": n, "cpu_us_per_op": round(seconds / n * 1e6, 3)}
            text = f"{case:15} {seconds / n * 1e6:>10.2f} CPU µs/op  (n={n}, best of 3)"
        print(json.dumps(row) if args.json else text, flush=True)
    return 0


if __name__ == "__main__":
    socket.setdefaulttimeout(60)
    sys.exit(main())
