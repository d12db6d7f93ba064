"""Micro benchmarks of the sans-I/O codec: aiodicom against pynetdicom 3.0.4, in one run.

Each case times the same work on the same bytes in both libraries with ``time.perf_counter``
loops (best of 3 repeats, each about ``--repeat-time`` seconds) and prints the rate and the
ratio (aiodicom / pynetdicom: above 1 we are faster). Results go to
bench/results/micro-<date>-<host>.json. A full run takes about 30-60 s.

    python bench/micro/codec.py [--repeat-time 0.4] [--quick] [--no-json]

What each pynetdicom side does is its nearest public equivalent (see bench/README.md):
PDU classes' ``decode``/``encode``, ``DIMSEMessage.encode_msg``/``decode_msg`` (plus
``message_to_primitive`` so both sides end with typed values) and, for the receive path, a
bytearray framer of the shape of its DUL reader feeding ``P_DATA_TF().decode``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from io import BytesIO
from pathlib import Path

import pynetdicom
from pynetdicom import dimse_messages as pnd_msgs
from pynetdicom import dimse_primitives as pnd_prims
from pynetdicom import pdu as pnd_pdu
from pynetdicom.pdu_primitives import P_DATA

from aiodicom.core.buffer import ReceiveBuffer
from aiodicom.core.dimse import (
    CStoreRQ,
    MessageAssembler,
    decode_message,
    encode_message,
    fragment_command,
    fragment_dataset,
)
from aiodicom.core.negotiation import build_request
from aiodicom.core.pdu import (
    PDataTF,
    PresentationDataValue,
    decode_pdu,
    decode_pdu_bytes,
    encode_pdu,
)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
MIB = 1 << 20
CT = "1.2.840.10008.5.1.4.1.1.2"
SOP_INSTANCE = "1.2.826.0.1.3680043.8.498.12345678901234567890123456789"
STORAGE_CLASSES = [f"1.2.840.10008.5.1.4.1.1.{n}" for n in ("1", "2", "4", "7", "12.1", "128")]
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.50"]


@dataclass
class Case:
    name: str
    unit: str
    ours: float
    pynetdicom: float

    @property
    def ratio(self) -> float:
        return self.ours / self.pynetdicom if self.pynetdicom else float("inf")


def rate(fn: Callable[[], object], repeat_time: float, work: float = 1.0) -> float:
    """Best-of-3 ``work`` units per second of ``fn()`` (work = bytes for MB/s cases)."""
    loops = 1
    while True:  # calibrate: enough loops for ~1/10 of a repeat
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter() - start
        if elapsed >= repeat_time / 10 or loops >= 1 << 24:
            break
        loops *= 4 if elapsed < repeat_time / 100 else 2
    loops = max(1, int(loops * repeat_time / max(elapsed, 1e-9)))
    best = float("inf")
    gc.collect()
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        best = min(best, (time.perf_counter() - start) / loops)
    return work / best


# -- fixtures: the same bytes for both libraries -----------------------------------------------


def associate_rq() -> bytes:
    """A storage SCU's RQ: 6 SOP classes x 3 transfer syntaxes plus Verification."""
    contexts = [("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])]
    contexts += [(sop, TRANSFER_SYNTAXES) for sop in STORAGE_CLASSES]
    rq = build_request(called_ae="STORE-SCP", calling_ae="MODALITY-01", contexts=contexts)
    return encode_pdu(rq)


def pdata(length: int) -> bytes:
    """One P-DATA-TF carrying one data-set PDV of ``length`` bytes."""
    pdv = PresentationDataValue(context_id=1, is_command=False, is_last=False, data=bytes(length))
    return encode_pdu(PDataTF(pdvs=(pdv,)))


def store_rq() -> CStoreRQ:
    return CStoreRQ(message_id=7, affected_sop_class_uid=CT, affected_sop_instance_uid=SOP_INSTANCE)


def pnd_store_rq(dataset: bytes) -> pnd_msgs.C_STORE_RQ:
    prim = pnd_prims.C_STORE()
    prim.MessageID = 7
    prim.AffectedSOPClassUID = CT
    prim.AffectedSOPInstanceUID = SOP_INSTANCE
    prim.Priority = 2
    prim.DataSet = BytesIO(dataset)
    msg = pnd_msgs.C_STORE_RQ()
    msg.primitive_to_message(prim)
    return msg


# -- cases ----------------------------------------------------------------------------------------


def case_associate(repeat_time: float) -> list[Case]:
    data = associate_rq()
    ours_pdu = decode_pdu_bytes(data)
    theirs_pdu = pnd_pdu.A_ASSOCIATE_RQ()
    theirs_pdu.decode(data)
    assert theirs_pdu.encode() == data == encode_pdu(ours_pdu), "both must agree on the bytes"

    def pnd_decode() -> None:
        pnd_pdu.A_ASSOCIATE_RQ().decode(data)

    return [
        Case(
            "A-ASSOCIATE-RQ decode (7 contexts, 19 TS)",
            "PDU/s",
            rate(lambda: decode_pdu_bytes(data), repeat_time),
            rate(pnd_decode, repeat_time),
        ),
        Case(
            "A-ASSOCIATE-RQ encode",
            "PDU/s",
            rate(lambda: encode_pdu(ours_pdu), repeat_time),
            rate(theirs_pdu.encode, repeat_time),
        ),
    ]


def case_pdata_decode(repeat_time: float) -> list[Case]:
    data = pdata(16 * 1024 - 12)

    def pnd_decode() -> None:
        pnd_pdu.P_DATA_TF().decode(data)

    return [
        Case(
            "P-DATA-TF decode (16 KiB, 1 PDV)",
            "PDU/s",
            rate(lambda: decode_pdu_bytes(data), repeat_time),
            rate(pnd_decode, repeat_time),
        )
    ]


def case_command(repeat_time: float) -> list[Case]:
    message = store_rq()
    command = encode_message(message)
    theirs = pnd_store_rq(b"")
    theirs.data_set = None  # command only, like ours

    def pnd_encode() -> None:
        list(theirs.encode_msg(1, 16382))

    # Receive side: a P-DATA carrying the whole command and a 2-byte last data-set fragment.
    ours_pdata = PDataTF(
        pdvs=(
            PresentationDataValue(context_id=1, is_command=True, is_last=True, data=command),
            PresentationDataValue(context_id=1, is_command=False, is_last=True, data=b"\0\0"),
        )
    )
    theirs_pdata = P_DATA()
    theirs_pdata.presentation_data_value_list = [[1, b"\x03" + command], [1, b"\x02\0\0"]]

    def ours_decode() -> None:
        MessageAssembler().feed(ours_pdata)

    def pnd_decode() -> None:
        msg = pnd_msgs.DIMSEMessage()
        assert msg.decode_msg(theirs_pdata)
        msg.message_to_primitive()

    check = pnd_msgs.DIMSEMessage()
    check.decode_msg(theirs_pdata)
    assert check.encoded_command_set.getvalue() == command

    return [
        Case(
            "C-STORE-RQ command encode (to P-DATA)",
            "msg/s",
            rate(lambda: fragment_command(1, encode_message(message), 16382), repeat_time),
            rate(pnd_encode, repeat_time),
        ),
        Case(
            "C-STORE-RQ command decode (from P-DATA)",
            "msg/s",
            rate(ours_decode, repeat_time),
            rate(pnd_decode, repeat_time),
        ),
        Case(
            "C-STORE-RQ command set decode only",
            "msg/s",
            rate(lambda: decode_message(command), repeat_time),
            rate(lambda: [e.value for e in pnd_msgs.decode(BytesIO(command), True, True)],
                 repeat_time),  # every element converted, as ours does
        ),
    ]


def _pnd_framer(chunks: list[bytes]) -> None:
    """pynetdicom's receive path in sans-I/O form: buffer, frame by the header, decode."""
    buf = bytearray()
    unpack = struct.Struct(">BxL").unpack_from
    for chunk in chunks:
        buf += chunk
        while len(buf) >= 6:
            _, length = unpack(buf, 0)
            if len(buf) < 6 + length:
                break
            pdu_bytes = bytes(buf[: 6 + length])
            del buf[: 6 + length]
            pnd_pdu.P_DATA_TF().decode(pdu_bytes)


def _ours_framer(chunks: list[bytes]) -> None:
    rb = ReceiveBuffer(2 * MIB)
    for chunk in chunks:
        rb.feed(chunk)
        for raw in rb:
            decode_pdu(raw.pdu_type, raw.body)


def case_receive(repeat_time: float, total: int) -> list[Case]:
    cases = []
    for pdu_size, label in ((16 * 1024, "16 KiB"), (MIB, "1 MiB")):
        one = pdata(pdu_size - 12)
        stream = one * (total // len(one))
        chunks = [stream[i : i + 64 * 1024] for i in range(0, len(stream), 64 * 1024)]
        work = len(stream) / MIB
        cases.append(
            Case(
                f"P-DATA receive, {label} PDUs in 64 KiB chunks",
                "MiB/s",
                rate(lambda c=chunks: _ours_framer(c), repeat_time, work),
                rate(lambda c=chunks: _pnd_framer(c), repeat_time, work),
            )
        )
    return cases


def case_fragment(repeat_time: float, total: int) -> list[Case]:
    dataset = bytes(total)
    theirs = pnd_store_rq(dataset)
    work = total / MIB

    def ours() -> None:
        for _ in fragment_dataset(1, dataset, 16382):
            pass

    def pnd() -> None:
        for _ in theirs.encode_msg(1, 16382):
            pass

    return [Case(f"fragment_dataset ({total // MIB} MiB, 16 KiB PDUs)", "MiB/s",
                 rate(ours, repeat_time, work), rate(pnd, repeat_time, work))]  # fmt: skip


# -- report ---------------------------------------------------------------------------------------


def _git_rev() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
    except OSError:
        return "unknown"
    return out.stdout.strip() or "unknown"


def print_table(cases: list[Case]) -> None:
    print(f"{'case':<46} {'unit':>6} {'aiodicom':>12} {'pynetdicom':>12} {'ratio':>7}")
    for c in cases:
        print(
            f"{c.name:<46} {c.unit:>6} {c.ours:>12,.0f} {c.pynetdicom:>12,.0f} {c.ratio:>6.1f}x"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repeat-time", type=float, default=0.4, help="seconds per repeat")
    parser.add_argument("--quick", action="store_true", help="short repeats, small streams")
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results")
    args = parser.parse_args(argv)
    repeat = 0.05 if args.quick else args.repeat_time
    total = 4 * MIB if args.quick else 32 * MIB
    load = os.getloadavg()[0]
    start = time.perf_counter()
    cases = [
        *case_associate(repeat),
        *case_pdata_decode(repeat),
        *case_command(repeat),
        *case_receive(repeat, total),
        *case_fragment(repeat, total),
    ]
    elapsed = time.perf_counter() - start
    print_table(cases)
    print(f"({elapsed:.0f} s; ratio = aiodicom / pynetdicom, above 1 = aiodicom faster)")
    if args.no_json:
        return 0
    host = socket.gethostname()
    now = datetime.datetime.now(datetime.UTC)
    result = {
        "kind": "micro",
        "date": now.isoformat(timespec="seconds"),
        "host": host,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_1min_at_start": load,
        "aiodicom_git": _git_rev(),
        "pynetdicom": pynetdicom.__version__,
        "repeat_time": repeat,
        "seconds": round(elapsed, 1),
        "cases": [{**asdict(c), "ratio": round(c.ratio, 2)} for c in cases],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"micro-{now:%Y-%m-%d}-{host}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
