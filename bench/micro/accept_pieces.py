"""What one plain association (associate + C-ECHO + release + close) costs the server, piece
by piece, each piece measured alone (issue 18; bench/results/2026-12-04-attribution.md).

    .venv/bin/python bench/micro/accept_pieces.py --callgrind     # instructions/op
    .venv/bin/python bench/micro/accept_pieces.py                 # CPU µs/op, best of 3

Pieces (one association each):

- ``floor``: uvloop and a minimal ``BufferedProtocol`` that answers the same three PDUs
  with canned bytes (no decoding at all), driven by the same client process as
  ``hotpaths.py --case accept``: the loop's accept, transport, read/write/close callbacks
  and the libc side of the syscalls. What any uvloop server pays.
- ``stack``: everything aiodicom does for the association, without the loop's I/O: the
  server `run_server` builds (``build_server``, the INFO log to a file) gets a protocol from
  its factory, a transport that only records (``connection_made``), the three PDUs through
  ``get_buffer``/``buffer_updated`` (copied in as the kernel would) and ``connection_lost``.
- Parts of ``stack``, measured alone: ``connection`` (a connection that sends nothing:
  the protocol, association and upper-layer objects, peer address, connection gate, ARTIM
  and watchdog timers, the end event), ``upper-layer`` (the PS3.8 state machine and PDU
  framing/decoding for 3 PDUs in and 3 out, the RQ from the memo), ``dimse-echo`` (a new
  MessageAssembler, the C-ECHO-RQ command decoded, the C-ECHO-RSP built), ``admission``
  (AssociationInfo x2, the limits and binding checks, the memoized negotiation and AC),
  ``log`` (the log observer's three events: the accepted context, the echo at DEBUG
  (skipped), the one INFO line written to a file). The rest of ``stack`` is the asyncio
  shell's own: protocol/association objects, _pump, timers, the connection gate, events.

``floor`` + ``stack`` - ``harness`` (the minimal protocol's framing, counted in ``floor``,
and the recording transport and copy loop, counted in ``stack``) should be
``hotpaths.py --case accept`` within a few %.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import hotpaths  # noqa: E402
from macro.assoc_client import RELEASE_RQ, associate_rq, echo_rq  # noqa: E402

PIECES = ("floor", "stack", "harness", "connection", "upper-layer", "dimse-echo", "admission",
          "log")
DEFAULT_N = {"floor": 1000, "stack": 5000, "harness": 20000, "connection": 5000,
             "upper-layer": 5000,
             "dimse-echo": 20000, "admission": 20000, "log": 20000}
CALLGRIND_N = {"floor": 200, "stack": 500, "harness": 2000, "connection": 500, "upper-layer": 500,
               "dimse-echo": 2000, "admission": 2000, "log": 2000}
RQ = associate_rq("AIODICOM", "STORESCU")
ECHO = echo_rq()


class _Transport:
    """Takes what the protocol writes and forgets it; ``close`` only marks it closing."""

    def __init__(self) -> None:
        self.closing = False

    def write(self, data: Any) -> None:
        pass

    def writelines(self, data: Any) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _feed(protocol: Any, data: bytes) -> None:
    """As the loop does: get_buffer, copy (the kernel's copy), buffer_updated."""
    view = memoryview(data)
    while view:
        target = protocol.get_buffer(len(view))
        n = min(len(target), len(view))
        target[:n] = view[:n]
        protocol.buffer_updated(n)
        view = view[n:]


def _logging(work: Path) -> Any:
    from aiodicom.app.server.logs import configure_logging

    log_file = (work / "server.log").open("w")
    real, sys.stderr = sys.stderr, log_file
    try:
        configure_logging("text", "info")
    finally:
        sys.stderr = real
    return log_file


def _in_loop(make: Callable[[], Callable[[], None]], profile: bool) -> float:
    """Build inside a running uvloop loop, then measure the returned body there."""
    from aiodicom.aio.loop import loop_factory

    async def main() -> float:
        body = make()
        return hotpaths._measured(body, profile)

    loop = loop_factory()()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def _server(work: Path) -> Any:
    from aiodicom.app.server.config import ServeOptions
    from aiodicom.app.server.run import build_observers, build_server

    options = ServeOptions(port=0, storage=work / "storage")
    observer, _, audit = build_observers(options)
    server, _ = build_server(options, observer, audit)
    return server


def _case_stack(n: int, profile: bool) -> float:
    work = Path(tempfile.mkdtemp(prefix="aiodicom-pieces-"))
    log_file = _logging(work)

    def make() -> Callable[[], None]:
        server = _server(work)

        def once() -> None:
            protocol = server._factory()
            protocol.connection_made(_Transport())
            _feed(protocol, RQ)
            _feed(protocol, ECHO)
            _feed(protocol, RELEASE_RQ)
            protocol.connection_lost(None)

        for _ in range(50):
            once()

        def body() -> None:
            for _ in range(n):
                once()

        return body

    try:
        return _in_loop(make, profile)
    finally:
        log_file.close()
        shutil.rmtree(work, ignore_errors=True)


def _case_harness(n: int, profile: bool) -> float:
    """What ``floor`` and ``stack`` count that the real server does not: the minimal
    protocol's Python framing (in ``floor``) and the recording transport and copy loop
    (in ``stack``), run together on the same three PDUs."""
    namespace = _floor_namespace()
    transport = _Transport()

    def once() -> None:
        protocol = namespace["Minimal"]()
        protocol.connection_made(transport)
        _feed(protocol, RQ)
        _feed(protocol, ECHO)
        _feed(protocol, RELEASE_RQ)

    return _loop_of(once, n, profile)


def _case_connection(n: int, profile: bool) -> float:
    """A connection that sends nothing: the protocol, association and upper-layer objects,
    connection_made (peer address, the connection gate, ARTIM, the watchdog) and
    connection_lost (timers cancelled, the end event, the gate released)."""
    work = Path(tempfile.mkdtemp(prefix="aiodicom-pieces-"))
    log_file = _logging(work)

    def make() -> Callable[[], None]:
        server = _server(work)

        def once() -> None:
            protocol = server._factory()
            protocol.connection_made(_Transport())
            protocol.connection_lost(None)

        for _ in range(50):
            once()

        def body() -> None:
            for _ in range(n):
                once()

        return body

    try:
        return _in_loop(make, profile)
    finally:
        log_file.close()
        shutil.rmtree(work, ignore_errors=True)


def _case_upper_layer(n: int, profile: bool) -> float:
    from aiodicom.aio import _setup_memo
    from aiodicom.app.server.run import storage_acceptor_policy
    from aiodicom.core.dimse._templates import echo_response_pdu
    from aiodicom.core.upper_layer import UpperLayer

    policy = storage_acceptor_policy("AIODICOM", max_pdu_length=0)
    rsp = echo_response_pdu(1, 1, "1.2.840.10008.1.1")

    def once() -> None:
        ul = UpperLayer(requestor=False, max_pdu_length=16 << 20, artim_timeout=30.0,
                        max_associate_length=64 * 1024)
        ul.connection_made(1.0)
        _feed_ul(ul, RQ)
        rq = ul.next_event().request  # type: ignore[union-attr]
        setup = _setup_memo.accepted(rq, _setup_memo.negotiate(rq, policy), 16 << 20)
        ul.accept(setup.answer, setup.encoded)
        ul.data_to_send()
        _feed_ul(ul, ECHO)
        ul.next_event()
        ul.send_data([rsp])
        ul.data_to_send()
        _feed_ul(ul, RELEASE_RQ)
        ul.next_event()
        ul.release_response(2.0)
        ul.data_to_send()
        ul.connection_lost(3.0)
        while ul.next_event() is not None:
            pass

    return _loop_of(once, n, profile)


def _feed_ul(ul: Any, data: bytes) -> None:
    target = ul.get_buffer(len(data))
    target[: len(data)] = data
    ul.buffer_updated(len(data), 1.5)


def _case_dimse_echo(n: int, profile: bool) -> float:
    from aiodicom.core.dimse._templates import echo_response_pdu
    from aiodicom.core.dimse.fragments import MessageAssembler
    from aiodicom.core.pdu import decode_pdu

    pdata = decode_pdu(0x04, ECHO[6:])

    def once() -> None:
        (event,) = MessageAssembler().feed(pdata)  # type: ignore[arg-type]
        msg = event.message  # type: ignore[union-attr]
        echo_response_pdu(event.context_id, msg.message_id,  # type: ignore[union-attr]
                          msg.affected_sop_class_uid)

    return _loop_of(once, n, profile)


def _case_admission(n: int, profile: bool) -> float:
    from aiodicom.aio import _setup_memo
    from aiodicom.aio.admission import Admission
    from aiodicom.aio.association import AssociationInfo
    from aiodicom.app.server.run import storage_acceptor_policy
    from aiodicom.core.upper_layer import decode_associate_rq_memo

    admission = Admission(policy=storage_acceptor_policy("AIODICOM", max_pdu_length=0))
    rq: Any = decode_associate_rq_memo(RQ[6:])
    peer = ("127.0.0.1", 40000)

    def once() -> None:
        info = AssociationInfo(id=1, calling_ae_title=rq.calling_ae_title,
                               called_ae_title=rq.called_ae_title, peer_address=peer,
                               identity=None)
        admission.needs_await(rq)
        decision = admission.decide_now(info, rq, None)
        setup = _setup_memo.accepted(rq, decision.answer, 16 << 20)
        AssociationInfo(id=info.id, calling_ae_title=info.calling_ae_title,
                        called_ae_title=info.called_ae_title, peer_address=info.peer_address,
                        identity=info.identity, negotiated=setup.negotiated,
                        user=decision.user)

    return _loop_of(once, n, profile)


def _case_log(n: int, profile: bool) -> float:
    from aiodicom.aio.association import AssociationInfo
    from aiodicom.aio.events import AssociationAccepted, AssociationEnded, RequestCompleted
    from aiodicom.app.server.logs import LogObserver, installed_context

    work = Path(tempfile.mkdtemp(prefix="aiodicom-pieces-"))
    log_file = _logging(work)
    observer = LogObserver(context=installed_context())
    info = AssociationInfo(id=1, calling_ae_title="STORESCU", called_ae_title="AIODICOM",
                           peer_address=("127.0.0.1", 40000))

    def once() -> None:
        observer(AssociationAccepted(info=info))
        observer(RequestCompleted(info=info, service="C-ECHO",
                                  sop_class_uid="1.2.840.10008.1.1", sop_instance_uid=None,
                                  status=0, bytes=0, duration=0.0))
        observer(AssociationEnded(info=info, peer_address=info.peer_address, aborted=False,
                                  reason="released", bytes_received=262,
                                  duration=0.0012))

    try:
        return _loop_of(once, n, profile)
    finally:
        log_file.close()
        shutil.rmtree(work, ignore_errors=True)


def _loop_of(once: Callable[[], None], n: int, profile: bool) -> float:
    for _ in range(50):
        once()

    def body() -> None:
        for _ in range(n):
            once()

    return hotpaths._measured(body, profile)


FLOOR_SERVER = r"""
class Minimal(asyncio.BufferedProtocol):
    # answers each whole PDU with canned bytes; no decoding
    def __init__(self):
        self.buf = bytearray(4096)
        self.fill = 0
    def connection_made(self, transport):
        self.transport = transport
    def get_buffer(self, sizehint):
        return memoryview(self.buf)[self.fill:]
    def buffer_updated(self, nbytes):
        self.fill += nbytes
        while self.fill >= 6:
            length = int.from_bytes(self.buf[2:6], "big")
            if self.fill < 6 + length:
                return
            kind = self.buf[0]
            rest = self.fill - 6 - length
            if rest:
                self.buf[:rest] = bytes(self.buf[6 + length : self.fill])
            self.fill = rest
            self.transport.write(ANSWERS[kind])
    def eof_received(self):
        return False
"""


def _floor_namespace() -> dict[str, Any]:
    from aiodicom.core.dimse._templates import echo_response_pdu

    namespace: dict[str, Any] = {"asyncio": asyncio}
    exec(FLOOR_SERVER, namespace)  # noqa: S102 - a fixed class defined above
    ac = bytes.fromhex("02000000003a" + "0001" + "0000" + "00" * 32 + "10000015"
                       + "312e322e3834302e31303030382e332e312e312e31")
    ac = ac[:2] + (len(ac) - 6).to_bytes(4, "big") + ac[6:]
    namespace["ANSWERS"] = {0x01: ac, 0x04: echo_response_pdu(1, 1, "1.2.840.10008.1.1"),
                            0x05: bytes.fromhex("06000000000400000000")}
    return namespace


def _case_floor(n: int, profile: bool) -> float:
    from aiodicom.aio.loop import loop_factory
    from aiodicom.aio.protocol import DicomProtocol  # noqa: F401  (same imports loaded)

    namespace = _floor_namespace()
    loop = loop_factory()()
    asyncio.set_event_loop(loop)
    server = loop.run_until_complete(
        loop.create_server(namespace["Minimal"], "127.0.0.1", 0, backlog=1024))
    port = server.sockets[0].getsockname()[1]
    hexes = [RQ.hex(), ECHO.hex(), RELEASE_RQ.hex()]

    def client(count: int) -> None:
        # the client only checks the PDU types: 2 (AC), 4 (P-DATA), 6 (RP)
        subprocess.run([sys.executable, "-c", hotpaths.CLIENT, "127.0.0.1", str(port),
                        str(count), *hexes], check=True)

    async def drive(count: int) -> None:
        await loop.run_in_executor(None, client, count)

    try:
        loop.run_until_complete(drive(50))

        def body() -> None:
            loop.run_until_complete(drive(n))

        return hotpaths._measured(body, profile)
    finally:
        server.close()
        loop.run_until_complete(server.wait_closed())
        loop.close()


CASES: dict[str, Callable[[int, bool], float]] = {
    "floor": _case_floor, "stack": _case_stack, "harness": _case_harness,
    "connection": _case_connection,
    "upper-layer": _case_upper_layer,
    "dimse-echo": _case_dimse_echo, "admission": _case_admission, "log": _case_log,
}


def _callgrind(piece: str, n: int) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("--callgrind needs valgrind on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "AIODICOM_CALLGRIND": "1", "PYTHONHASHSEED": "0"}
        subprocess.run(
            [valgrind, "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=ffi_call*",
             f"--callgrind-out-file={out}", sys.executable, __file__, "--piece", piece,
             "--n", str(n), "--inner"],
            check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for line in out.read_text().splitlines():
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise SystemExit(f"no totals in callgrind output for {piece}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--piece", action="append", choices=PIECES, help="repeatable")
    parser.add_argument("--n", type=int)
    parser.add_argument("--callgrind", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for piece in args.piece or PIECES:
        if args.inner or args.profile:
            CASES[piece](args.n or DEFAULT_N[piece], args.profile)
        elif args.callgrind:
            n = args.n or CALLGRIND_N[piece]
            print(f"{piece:12} {_callgrind(piece, n) / n:>12,.0f} instructions/op  (n={n})",
                  flush=True)
        else:
            n = args.n or DEFAULT_N[piece]
            seconds = min(CASES[piece](n, False) for _ in range(3))
            print(f"{piece:12} {seconds / n * 1e6:>9.2f} CPU µs/op  (n={n}, best of 3)",
                  flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
