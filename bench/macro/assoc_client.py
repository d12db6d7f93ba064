"""Association-rate load generator: C concurrent loops of associate + C-ECHO + release.

Deliberately independent of aiodicom (pre-encoded PDUs built with struct, PS3.8 9.3 and
PS3.7 9.3.5) so it measures every server the same way and costs the client core little.
Runs on uvloop when installed. Prints one JSON object:
{"ok", "failed", "elapsed", "p50_ms", "p99_ms", "errors": {message: count}}.

    python assoc_client.py HOST PORT --called-ae AE [--duration S] [--concurrency C]
        [--cert C --key K --ca CA]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import ssl
import struct
import sys
import time
from collections import Counter

APP_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = b"1.2.840.10008.1.1"
IMPLICIT_LE = b"1.2.840.10008.1.2"
IMPL_CLASS = b"1.2.826.0.1.3680043.8.498.1"  # pydicom's root: a generic test implementation


def _item(kind: int, value: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(value)) + value


def _ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)


def associate_rq(called: str, calling: str) -> bytes:
    """A-ASSOCIATE-RQ: one presentation context (Verification, implicit VR LE)."""
    pres = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, VERIFICATION) + _item(0x40, IMPLICIT_LE))
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, IMPL_CLASS))
    body = (struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
            + _item(0x10, APP_CONTEXT) + pres + user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def _element(group: int, elem: int, value: bytes) -> bytes:
    return struct.pack("<HHI", group, elem, len(value)) + value


def echo_rq(message_id: int = 1) -> bytes:
    """P-DATA-TF with one command PDV holding a C-ECHO-RQ (implicit VR LE)."""
    elements = (
        _element(0, 0x0002, VERIFICATION + b"\0")
        + _element(0, 0x0100, struct.pack("<H", 0x0030))
        + _element(0, 0x0110, struct.pack("<H", message_id))
        + _element(0, 0x0800, struct.pack("<H", 0x0101))
    )
    command = _element(0, 0x0000, struct.pack("<I", len(elements))) + elements
    pdv = struct.pack(">IBB", len(command) + 2, 1, 0x03) + command
    return struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv


RELEASE_RQ = struct.pack(">BBII", 0x05, 0, 4, 0)


class Failure(Exception):
    pass


async def _pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await reader.readexactly(6)
    kind, _, length = struct.unpack(">BBI", header)
    if length > 1 << 20:
        raise Failure(f"PDU type {kind:#x} claims {length} bytes")
    return kind, await reader.readexactly(length)


def _check_ac(body: bytes) -> None:
    pos = 68  # protocol version .. 32 reserved bytes (PS3.8 9.3.3)
    while pos + 4 <= len(body):
        kind, _, length = struct.unpack_from(">BBH", body, pos)
        if kind == 0x21:
            if body[pos + 6] != 0:
                raise Failure(f"presentation context refused, result {body[pos + 6]}")
            return
        pos += 4 + length
    raise Failure("A-ASSOCIATE-AC without a presentation context result")


def _echo_status(pdata: bytes) -> int:
    pos = 0
    while pos + 6 <= len(pdata):
        length, _ctx, control = struct.unpack_from(">IBB", pdata, pos)
        command = pdata[pos + 6 : pos + 4 + length]
        if control & 0x01:
            at = 0
            while at + 8 <= len(command):
                group, elem, vlen = struct.unpack_from("<HHI", command, at)
                if (group, elem) == (0, 0x0900):
                    return int(struct.unpack_from("<H", command, at + 8)[0])
                at += 8 + vlen
        pos += 4 + length
    raise Failure("C-ECHO-RSP without a status")


async def one_association(host: str, port: int, rq: bytes, tls: ssl.SSLContext | None) -> None:
    reader, writer = await asyncio.open_connection(
        host, port, ssl=tls, server_hostname="localhost" if tls else None
    )
    try:
        writer.write(rq)
        kind, body = await _pdu(reader)
        if kind != 0x02:
            raise Failure(f"association answered with PDU type {kind:#x}")
        _check_ac(body)
        writer.write(ECHO)
        kind, body = await _pdu(reader)
        if kind != 0x04:
            raise Failure(f"C-ECHO answered with PDU type {kind:#x}")
        status = _echo_status(body)
        if status != 0:
            raise Failure(f"C-ECHO status {status:#06x}")
        writer.write(RELEASE_RQ)
        kind, body = await _pdu(reader)
        if kind != 0x06:
            raise Failure(f"A-RELEASE-RQ answered with PDU type {kind:#x}")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (OSError, ssl.SSLError):
            pass


ECHO = echo_rq()


async def run(args: argparse.Namespace) -> dict[str, object]:
    tls = None
    if args.cert:
        tls = ssl.create_default_context(cafile=args.ca)
        tls.load_cert_chain(args.cert, args.key)
    rq = associate_rq(args.called_ae, args.calling_ae)
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    start = time.perf_counter()
    deadline = start + args.duration

    async def loop() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            try:
                await asyncio.wait_for(one_association(args.host, args.port, rq, tls), 30)
            except (Failure, OSError, ssl.SSLError, asyncio.IncompleteReadError,
                    TimeoutError) as exc:
                errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                await asyncio.sleep(0.01)  # a refusing server must not become a busy loop
                continue
            latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(loop() for _ in range(args.concurrency)))
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float | None:
        return round(latencies[int(p * (len(latencies) - 1))] * 1000, 3) if latencies else None

    return {"ok": len(latencies), "failed": sum(errors.values()), "elapsed": elapsed,
            "p50_ms": pct(0.5), "p99_ms": pct(0.99), "errors": dict(errors.most_common(5))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--called-ae", required=True)
    parser.add_argument("--calling-ae", default="STORESCU")
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--ca")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(run(args))
    else:
        result = uvloop.run(run(args))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
