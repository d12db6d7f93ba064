"""Instructions per piece of one C-ECHO / one small C-STORE, each piece run alone.

    python bench/micro/per_message_pieces.py              # callgrind, every piece (~2 min)
    python bench/micro/per_message_pieces.py --cpu        # CPU µs per piece instead

The `per_message` cases measure a whole message through the server; this splits it. Each
piece is one step of what the server does per message, run N times in a loop on its real
inputs (an `UpperLayer` brought to Sta6 by a real A-ASSOCIATE-RQ/AC exchange, the PDUs the
client sends), collected alone like `hotpaths.py --callgrind` does. What the pieces do not
cover of the whole (the glue in aio/protocol.py, association.py, server_association.py,
the loop, the read callback) is the difference, reported as such in
bench/results/2026-12-04-per-message.md.
"""

from __future__ import annotations

import argparse
import atexit
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import per_message  # noqa: E402
from hotpaths import _measured  # noqa: E402

N = 2000


def _sta6() -> object:
    """An acceptor `UpperLayer` in Sta6 (the client's RQ received, an AC sent)."""
    from aiodicom.core.negotiation import AcceptorPolicy, negotiate_as_acceptor
    from aiodicom.core.primitives import AssociateIndication
    from aiodicom.core.upper_layer import UpperLayer

    ul = UpperLayer(requestor=False)
    ul.connection_made(0.0)
    ul.receive_data(per_message.associate_rq("AIODICOM", "STORESCU"), 0.0)
    ind = ul.next_event()
    assert isinstance(ind, AssociateIndication)
    ul.accept(negotiate_as_acceptor(  # type: ignore[arg-type]
        ind.request, AcceptorPolicy(accept_any_abstract_syntax=True)))
    ul.data_to_send()
    return ul


def pieces() -> dict[str, Callable[[], None]]:
    """name -> one run of the piece (state kept in closures; each is repeatable)."""
    from aiodicom.aio.association import AssociationInfo
    from aiodicom.aio.events import RequestCompleted
    from aiodicom.app.server.logs import LogObserver
    from aiodicom.core.buffer import ReceiveBuffer
    from aiodicom.core.dimse import (
        CStoreRSP,
        MessageAssembler,
        Status,
        encode_message,
        fragment_command,
    )
    from aiodicom.core.dimse._templates import echo_response_pdu
    from aiodicom.core.pdu import decode_pdu

    echo, _ = per_message.request_pdus("echo")
    store_cmd, store_data = per_message.request_pdus("store")
    out: dict[str, Callable[[], None]] = {}

    def rx(wire: bytes) -> Callable[[], None]:
        buf = ReceiveBuffer(1 << 20)

        def run() -> None:
            view = buf.get_buffer(65536)
            view[:len(wire)] = wire
            buf.buffer_updated(len(wire))
            for _raw in buf:
                pass
        return run

    out["echo: ReceiveBuffer (get_buffer, buffer_updated, next)"] = rx(echo)
    body = memoryview(bytearray(echo[6:]))
    out["echo: decode_pdu P-DATA-TF"] = lambda: decode_pdu(0x04, body)  # type: ignore[func-returns-value]

    def ul_piece(wires: tuple[bytes, ...]) -> Callable[[], None]:
        ul = _sta6()

        def run() -> None:
            for wire in wires:
                view = ul.get_buffer(65536)  # type: ignore[attr-defined]
                view[:len(wire)] = wire
                ul.buffer_updated(len(wire), 1.0)  # type: ignore[attr-defined]
                while ul.next_event() is not None:  # type: ignore[attr-defined]
                    pass
        return run

    out["echo: UpperLayer receive (buffer + decode_pdu + FSM Evt10 + indication)"] = \
        ul_piece((echo,))
    ul_send = _sta6()
    rsp = echo_response_pdu(1, 7, per_message.VERIFICATION)

    def send() -> None:
        ul_send.send_data((rsp,))  # type: ignore[attr-defined]
        ul_send.data_to_send()  # type: ignore[attr-defined]
    out["echo: UpperLayer send_data (FSM Evt9) + data_to_send"] = send

    pdata = decode_pdu(0x04, body)
    asm = MessageAssembler()
    out["echo: MessageAssembler.feed (PDV + command decode)"] = \
        lambda: asm.feed(pdata)  # type: ignore[arg-type, func-returns-value]
    out["echo: echo_response_pdu (template patch)"] = \
        lambda: echo_response_pdu(1, 7, per_message.VERIFICATION)  # type: ignore[func-returns-value]
    info = AssociationInfo(id=1, calling_ae_title="STORESCU", called_ae_title="AIODICOM",
                           peer_address=("127.0.0.1", 1))
    observer = LogObserver()

    def notify() -> None:
        observer(RequestCompleted(info=info, service="C-ECHO",
                                  sop_class_uid=per_message.VERIFICATION,
                                  sop_instance_uid=None, status=0, bytes=0, duration=0.0))
    out["echo: RequestCompleted + LogObserver (INFO: not logged)"] = notify

    out["store: UpperLayer receive, command + data-set PDUs"] = ul_piece((store_cmd, store_data))
    scmd = decode_pdu(0x04, memoryview(bytearray(store_cmd[6:])))
    sdata = decode_pdu(0x04, memoryview(bytearray(store_data[6:])))
    asm2 = MessageAssembler()

    def assemble() -> None:
        asm2.feed(scmd)  # type: ignore[arg-type]
        asm2.feed(sdata)  # type: ignore[arg-type]
    out["store: MessageAssembler.feed x2 (command decode, fragment)"] = assemble
    uid = per_message.UID_PREFIX + "1" + "0" * (per_message.UID_DIGITS - 1)

    def store_rsp() -> None:
        command = encode_message(CStoreRSP(
            message_id_being_responded_to=7, affected_sop_class_uid=per_message.CT_STORAGE,
            affected_sop_instance_uid=uid, status=Status.SUCCESS))
        for _pdu in fragment_command(3, command, 16384):
            pass
    out["store: C-STORE-RSP encode_message + fragment_command"] = store_rsp
    from aiodicom.aio._response_templates import store_response_pdu

    out["store: C-STORE-RSP template (store_response_pdu)"] = lambda: store_response_pdu(  # type: ignore[func-returns-value]
        3, 7, per_message.CT_STORAGE, uid, 0, 16384)
    out.update(_store_pieces(uid, memoryview(store_data)[12:]))
    return out


def _store_pieces(uid: str, dataset: memoryview) -> dict[str, Callable[[], None]]:
    """The handler's own work: the Part 10 file, the journal line, the INFO line."""
    import logging

    from aiodicom.aio.association import AssociationInfo
    from aiodicom.app.archive.index_journal import Journal, entry
    from aiodicom.app.archive.storage import Storage, StorageSettings
    from aiodicom.app.server.logs import association_fields, configure_logging
    from aiodicom.app.server.logs import info_line as write_info_line

    work = Path(tempfile.mkdtemp(prefix="aiodicom-pieces-"))
    atexit.register(shutil.rmtree, work, True)
    storage = Storage(StorageSettings(root=work / "storage"))
    counter = [0]
    prefix = uid[:-per_message.UID_DIGITS]
    template = bytearray(dataset)
    at = template.index(uid.encode())

    def save() -> None:
        counter[0] += 1
        new_uid = f"{prefix}{10 ** (per_message.UID_DIGITS - 1) + counter[0]}"
        template[at:at + len(new_uid)] = new_uid.encode()
        writer = storage.begin(sop_class_uid=per_message.CT_STORAGE, sop_instance_uid=new_uid,
                               transfer_syntax_uid=per_message.IMPLICIT_LE,
                               source_ae_title="STORESCU")
        writer.write(memoryview(template))
        writer.commit()

    journal = Journal(work / "journal")
    saved: list[object] = []

    def journal_line() -> None:
        if not saved:
            saved.append(_stored(storage, uid, bytes(dataset)))
        journal.append(entry(saved[0]))  # type: ignore[arg-type]
        if counter[0] % 64 == 0:
            journal.clear()
        counter[0] += 1

    log_file = (work / "server.log").open("w")
    real_stderr, sys.stderr = sys.stderr, log_file
    try:
        configure_logging("text", "info")
    finally:
        sys.stderr = real_stderr
    log = logging.getLogger("aiodicom.serve")
    info = AssociationInfo(id=1, calling_ae_title="STORESCU", called_ae_title="PACS",
                           peer_address=("127.0.0.1", 50000))

    def info_line() -> None:  # as app/server/run.py's handle_store logs it
        write_info_line(log, "association %d: stored %s from %r (%d bytes)",
                        (1, uid, "STORESCU", 2048), association_fields(info))
    return {"store: Storage begin + write + commit (Part 10 file, rename; syscalls not "
            "counted)": save,
            "store: journal entry (JSON) + append (one write)": journal_line,
            "store: INFO 'stored' log line (as run.py: info_line, text handler, file)": info_line}


def _stored(storage: object, uid: str, dataset: bytes) -> object:
    from aiodicom.app.archive.storage import Storage

    assert isinstance(storage, Storage)
    writer = storage.begin(sop_class_uid=per_message.CT_STORAGE, sop_instance_uid=uid,
                           transfer_syntax_uid=per_message.IMPLICIT_LE,
                           source_ae_title="STORESCU")
    writer.write(dataset)
    return writer.commit()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu", action="store_true", help="CPU µs per piece, best of 3")
    parser.add_argument("--match", default="", help="only pieces whose name contains this")
    parser.add_argument("--inner", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        piece = pieces()[args.inner]
        for _ in range(200):
            piece()

        def loop() -> None:
            for _ in range(N):
                piece()
        _measured(loop, False)
        return 0
    for name, piece in pieces().items():
        if args.match not in name:
            continue
        if args.cpu:
            def loop(piece: Callable[[], None] = piece) -> None:
                for _ in range(N * 10):
                    piece()
            best = min(_measured(loop, False) for _ in range(3))
            print(f"{best / (N * 10) * 1e6:9.2f} CPU µs  {name}", flush=True)
            continue
        print(f"{_callgrind(name) / N:>9,.0f} instructions  {name}", flush=True)
    return 0


def _callgrind(name: str) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("needs valgrind on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        env = {**os.environ, "AIODICOM_CALLGRIND": "1", "PYTHONHASHSEED": "0"}
        subprocess.run(
            [valgrind, "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=ffi_call*",
             f"--callgrind-out-file={out}", sys.executable, __file__, "--inner", name],
            check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for line in out.read_text().splitlines():
            if line.startswith(("totals:", "summary:")):
                return int(line.split()[1])
    raise SystemExit(f"no totals for {name}")


if __name__ == "__main__":
    sys.exit(main())
