"""A bounded soak of the bundled server: mixed good and bad traffic, watching RSS and fds.

    nice -n 5 .venv/bin/python bench/soak.py                 # 3 minutes, plain
    .venv/bin/python bench/soak.py --minutes 10 --tls        # plain and mutual-TLS ports

The server is `aiodicom serve` in its own process (pinned to one core when there are two).
The load runs in this process on uvloop, every kind at a bounded rate: stores of small CT
files (generated once, re-sent: storage stays bounded), echoes, associations aborted in the
middle of a 4 MB data set, and bad peers (random bytes, half a PDU, an HTTP request,
connect-and-idle until the server's ARTIM closes it). Every --interval seconds it samples the
server's VmRSS and open fds (/proc) and the counts so far. At the end it prints a table,
writes bench/results/soak-<date>-<host>.json and says whether RSS or fds grew: the median of
the last third of the samples after warm-up against the median of the first third; growth
over 10 % (RSS) or 10 fds is flagged.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.macro.procs import (  # noqa: E402
    SERVER_CPU,
    cpu_seconds,
    free_port,
    listening,
    pinned,
    rss_kb,
    stop_process,
    tree_pids,
)

AIODICOM = str(ROOT / ".venv" / "bin" / "aiodicom")
WARMUP_S = 20.0
"""Samples in the first 20 s (imports, first allocations, pools) are left out of the trend."""
RATES = {"store": 20.0, "echo": 20.0, "abort": 2.0, "garbage": 2.0, "half-pdu": 2.0,
         "http": 1.0}
"""Operations per second per kind (each kind runs two workers sharing its rate)."""
IDLE_PEERS = 3
"""Connect-and-idle peers held at once; each waits for the server to close it."""


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=dict)

    def record(self, kind: str, started: float, exc: BaseException | None) -> None:
        if exc is None:
            self.ok[kind] += 1
            self.latencies.setdefault(kind, []).append(time.monotonic() - started)
        else:
            self.failed[kind] += 1
            self.errors[f"{kind}: {type(exc).__name__}: {str(exc)[:90]}"] += 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    host: str
    port: int
    tls: Any = None
    label: str = "plain"


async def _read_until_closed(reader: asyncio.StreamReader, limit: float) -> bytes:
    """What the server sends until it closes; TimeoutError if it keeps the connection."""
    got = bytearray()
    async with asyncio.timeout(limit):
        while chunk := await reader.read(65536):
            got += chunk
            if len(got) > 1 << 16:
                raise RuntimeError("the server sent over 64 KiB to a bad peer")
            if got[:1] == b"\x07" and len(got) >= 10:
                break  # A-ABORT: the server waits ARTIM for us to close (PS3.8 Sta13)
    return bytes(got)


async def _raw(target: Target, payload: bytes, limit: float) -> bytes:
    reader, writer = await asyncio.open_connection(target.host, target.port)
    try:
        writer.write(payload)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        return await _read_until_closed(reader, limit)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


class _StoreWon(Exception):
    """An `abort` op whose store completed before the abort."""


class Load:
    """The workers; each op raises on failure."""

    def __init__(self, targets: list[Target], small: list[Path], big: Path,
                 tally: Tally, rng: random.Random) -> None:
        from aiodicom.aio.client import storage_contexts_for
        from aiodicom.settings import AssociationSettings, Timeouts

        self.targets = targets
        self.small = small
        self.big = big
        self.tally = tally
        self.rng = rng
        self.contexts = storage_contexts_for([small[0]])
        self.settings = AssociationSettings(
            ae_title="STORESCU", timeouts=Timeouts(connect=10, acse=10, dimse=20, artim=5))
        self.stop = asyncio.Event()

    def _target(self) -> Target:
        return self.rng.choice(self.targets)

    def _connect(self, target: Target) -> Any:
        from aiodicom.aio.client import connect

        return connect(target.host, target.port, contexts=self.contexts, settings=self.settings,
                       tls=target.tls, server_hostname="localhost" if target.tls else None)

    async def store(self) -> None:
        from aiodicom.core.dimse import Status

        async with self._connect(self._target()) as assoc:
            for path in self.rng.sample(self.small, 3):
                status = await assoc.store(path)
                if status != Status.SUCCESS:
                    raise RuntimeError(f"C-STORE status 0x{int(status):04X}")

    async def echo(self) -> None:
        from aiodicom.core.dimse import Status

        async with self._connect(self._target()) as assoc:
            for _ in range(3):
                if await assoc.echo() != Status.SUCCESS:
                    raise RuntimeError("C-ECHO failed")

    async def abort(self) -> None:
        """Abort 0.5-8 ms into a 4 MB store; the store must end in AssociationAborted."""
        from aiodicom.aio.client import open_association
        from aiodicom.errors import AssociationAborted

        target = self._target()
        assoc = await open_association(
            target.host, target.port, contexts=self.contexts, settings=self.settings,
            tls=target.tls, server_hostname="localhost" if target.tls else None)
        task = asyncio.ensure_future(assoc.store(self.big))
        await asyncio.sleep(self.rng.uniform(0.0005, 0.008))
        assoc.abort()
        try:
            await asyncio.wait_for(task, 10)
        except AssociationAborted:
            return
        # The store finished first: fine for the server, but counted apart.
        raise _StoreWon

    async def garbage(self) -> None:
        target = self._target()  # on the TLS port: a failed handshake
        payload = self.rng.randbytes(self.rng.randint(1, 2000))
        await _raw(target, payload, 35)

    async def half_pdu(self) -> None:
        from aiodicom.core.negotiation import (
            IMPLICIT_VR_LITTLE_ENDIAN,
            VERIFICATION_SOP_CLASS,
            build_request,
        )
        from aiodicom.core.pdu import encode_pdu

        rq = bytes(encode_pdu(build_request(
            called_ae="ANY-SCP", calling_ae="HALF",
            contexts=[(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])],
            max_pdu_length=16384)))
        cut = self.rng.randint(3, len(rq) - 1)
        target = self.rng.choice([t for t in self.targets if t.tls is None] or self.targets)
        await _raw(target, rq[:cut], 35)  # the server's ARTIM closes it

    async def http(self) -> None:
        target = self._target()
        await _raw(target, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", 35)

    async def idle(self) -> None:
        target = self._target()
        reader, writer = await asyncio.open_connection(target.host, target.port)
        try:
            await _read_until_closed(reader, 40)  # ARTIM is 30 s on the server
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def worker(self, kind: str, op: Callable[[], Awaitable[None]], period: float) -> None:
        await asyncio.sleep(self.rng.uniform(0, period))
        while not self.stop.is_set():
            started = time.monotonic()
            exc: BaseException | None = None
            label = kind
            try:
                await op()
            except _StoreWon:
                label = f"{kind} (store won)"
            except Exception as e:  # counted per kind and type, the run goes on
                exc = e
            self.tally.record(label, started, exc)
            wait = period - (time.monotonic() - started)
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), wait)

    async def run(self, seconds: float, sample: Callable[[], None], interval: float) -> None:
        ops: dict[str, Callable[[], Awaitable[None]]] = {
            "store": self.store, "echo": self.echo, "abort": self.abort,
            "garbage": self.garbage, "half-pdu": self.half_pdu, "http": self.http,
        }
        workers = [asyncio.ensure_future(self.worker(kind, ops[kind], 2 / rate))
                   for kind, rate in RATES.items() for _ in range(2)]
        workers += [asyncio.ensure_future(self.worker("idle", self.idle, 0.0))
                    for _ in range(IDLE_PEERS)]
        deadline = time.monotonic() + seconds
        sample()
        while time.monotonic() < deadline:
            await asyncio.sleep(min(interval, max(0.0, deadline - time.monotonic())))
            sample()
        self.stop.set()
        done, pending = await asyncio.wait(workers, timeout=45)
        for w in pending:
            w.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


def _fds(root: int) -> int:
    total = 0
    for pid in tree_pids(root):
        with contextlib.suppress(OSError):
            total += len(os.listdir(f"/proc/{pid}/fd"))
    return total


def _growth(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    steady = [s for s in samples if s["t"] >= WARMUP_S] or samples
    third = max(1, len(steady) // 3)
    first = statistics.median(s[key] for s in steady[:third])
    last = statistics.median(s[key] for s in steady[-third:])
    half = steady[len(steady) // 2:]
    slope = None
    if len(half) >= 3 and half[-1]["t"] > half[0]["t"]:  # least squares, per minute
        mt = statistics.fmean(s["t"] for s in half)
        mv = statistics.fmean(s[key] for s in half)
        num = sum((s["t"] - mt) * (s[key] - mv) for s in half)
        den = sum((s["t"] - mt) ** 2 for s in half)
        slope = round(60 * num / den, 2)
    return {"first_third_median": first, "last_third_median": last, "delta": last - first,
            "ratio": round(last / first, 3) if first else None,
            "last_half_slope_per_min": slope}


def _start_server(args: argparse.Namespace, work: Path) -> tuple[subprocess.Popen[bytes],
                                                                  dict[str, int], Path]:
    ports = {"plain": free_port()}
    argv = [AIODICOM, "serve", "--host", "127.0.0.1", "--port", str(ports["plain"]),
            "--storage", str(work / "storage"), "--log-level", "warning"]
    if args.tls:
        ports["tls"] = free_port()
        pki = work / "pki"
        argv += ["--tls-port", str(ports["tls"]), "--cert", str(pki / "server.crt"),
                 "--key", str(pki / "server.key"), "--ca", str(pki / "ca.crt")]
    log = work / "server.log"
    with log.open("wb") as out:
        server = subprocess.Popen(pinned(argv, SERVER_CPU), stdout=out, stderr=subprocess.STDOUT,
                                  start_new_session=True)
    deadline = time.monotonic() + 20
    while not all(listening(p) for p in ports.values()):
        if time.monotonic() > deadline or server.poll() is not None:
            stop_process(server)
            raise SystemExit(f"the server did not start:\n{log.read_text()[-2000:]}")
        time.sleep(0.1)
    return server, ports, log


def _make_files(work: Path) -> tuple[list[Path], Path]:
    from tests.conftest import write_ct

    folder = work / "files"
    folder.mkdir()
    small = [write_ct(folder / f"small-{i}.dcm", size=8192) for i in range(40)]
    big = write_ct(folder / "big.dcm", size=4 << 20)
    return small, big


async def _soak(args: argparse.Namespace, work: Path, server: subprocess.Popen[bytes],
                ports: dict[str, int]) -> tuple[Tally, list[dict[str, Any]]]:
    tally = Tally()
    targets = [Target(host="127.0.0.1", port=ports["plain"])]
    if args.tls:
        from aiodicom.aio.tls import client_context

        pki = work / "pki"
        ctx = client_context(cert=pki / "client.crt", key=pki / "client.key", ca=pki / "ca.crt")
        targets.append(Target(host="127.0.0.1", port=ports["tls"], tls=ctx, label="tls"))
    small, big = _make_files(work)
    load = Load(targets, small, big, tally, random.Random(args.seed))
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()

    def sample() -> None:
        samples.append({
            "t": round(time.monotonic() - t0, 1), "rss_kb": rss_kb(server.pid),
            "fds": _fds(server.pid), "cpu_s": round(cpu_seconds(server.pid), 2),
            "ok": sum(tally.ok.values()), "failed": sum(tally.failed.values()),
        })
        s = samples[-1]
        print(f"  t={s['t']:6.1f}s rss={s['rss_kb'] / 1024:6.1f} MB fds={s['fds']:4d} "
              f"ok={s['ok']:6d} failed={s['failed']:4d}", flush=True)

    await load.run(args.minutes * 60, sample, args.interval)
    await asyncio.sleep(2)  # let the server close what the last workers left
    sample()
    return tally, samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    parser.add_argument("--tls", action="store_true", help="also load a mutual-TLS port")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    import uvloop

    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(prefix="aiodicom-soak-",
                                     dir=shm if shm.is_dir() else None) as tmp:
        work = Path(tmp)
        if args.tls:
            from aiodicom.app.pki import ensure_dev_pki

            dev = ensure_dev_pki(work / "pki")
            for src, name in ((dev.ca_cert, "ca.crt"), (dev.server_cert, "server.crt"),
                              (dev.server_key, "server.key"), (dev.client_cert, "client.crt"),
                              (dev.client_key, "client.key")):
                if src != work / "pki" / name:
                    (work / "pki" / name).write_bytes(src.read_bytes())
        server, ports, log = _start_server(args, work)
        try:
            print(f"soak: {args.minutes} min against aiodicom serve (pid {server.pid}, "
                  f"ports {ports})", flush=True)
            tally, samples = uvloop.run(_soak(args, work, server, ports))
            alive = server.poll() is None
        finally:
            stop_process(server)
        log_text = log.read_text(errors="replace")
        stored = sum(1 for p in (work / "storage").rglob("*.dcm"))
        incoming = work / "storage" / ".incoming"
        left_incoming = len(os.listdir(incoming)) if incoming.is_dir() else 0
    result = _report(args, tally, samples, log_text, alive, stored, left_incoming)
    if not args.no_save:
        out = ROOT / "bench" / "results" / (
            f"soak-{date.today().isoformat()}-{socket.gethostname()}.json")
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")
    return 0 if result["verdict"]["ok"] else 1


def _report(args: argparse.Namespace, tally: Tally, samples: list[dict[str, Any]],
            log_text: str, alive: bool, stored: int, left_incoming: int) -> dict[str, Any]:
    kinds = sorted(set(tally.ok) | set(tally.failed))
    print(f"\n{'kind':<20}{'ok':>8}{'failed':>8}{'p50 ms':>9}{'p99 ms':>9}")
    per_kind: dict[str, Any] = {}
    for kind in kinds:
        lat = sorted(tally.latencies.get(kind, []))
        p50 = lat[len(lat) // 2] * 1000 if lat else None
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000 if lat else None
        per_kind[kind] = {"ok": tally.ok[kind], "failed": tally.failed[kind],
                          "p50_ms": round(p50, 1) if p50 is not None else None,
                          "p99_ms": round(p99, 1) if p99 is not None else None}
        print(f"{kind:<20}{tally.ok[kind]:>8}{tally.failed[kind]:>8}"
              f"{p50 if p50 is not None else float('nan'):>9.1f}"
              f"{p99 if p99 is not None else float('nan'):>9.1f}")
    rss = _growth(samples, "rss_kb")
    fds = _growth(samples, "fds")
    rss_grew = rss["ratio"] is not None and rss["ratio"] > 1.10
    fds_grew = fds["delta"] > 10
    tracebacks = log_text.count("Traceback")
    print(f"\nRSS  first third {rss['first_third_median'] / 1024:.1f} MB, last third "
          f"{rss['last_third_median'] / 1024:.1f} MB ({rss['ratio']}x): "
          f"{'GREW' if rss_grew else 'flat'}; last half slope "
          f"{rss['last_half_slope_per_min']} KiB/min")
    print(f"fds  first third {fds['first_third_median']}, last third "
          f"{fds['last_third_median']}: {'GREW' if fds_grew else 'flat'}")
    print(f"server alive at the end: {alive}; tracebacks in its log: {tracebacks}; "
          f"stored files: {stored}; left in .incoming: {left_incoming}")
    if tally.errors:
        print("\nfailures:")
        for line, n in tally.errors.most_common(15):
            print(f"  {n:6d}  {line}")
    return {
        "date": date.today().isoformat(), "host": socket.gethostname(),
        "minutes": args.minutes, "tls": args.tls, "interval_s": args.interval,
        "warmup_s": WARMUP_S, "rates_per_s": RATES, "idle_peers": IDLE_PEERS,
        "load_avg_end": os.getloadavg(),
        "per_kind": per_kind, "errors": dict(tally.errors.most_common(30)),
        "rss_kb": rss, "fds": fds,
        "server": {"alive_at_end": alive, "log_tracebacks": tracebacks,
                   "log_lines": len(log_text.splitlines()), "stored_files": stored,
                   "left_in_incoming": left_incoming,
                   "log_tail": log_text.splitlines()[-10:]},
        "samples": samples,
        "verdict": {"ok": alive and not rss_grew and not fds_grew and left_incoming == 0,
                    "rss_grew": rss_grew, "fds_grew": fds_grew},
    }


if __name__ == "__main__":
    raise SystemExit(main())
