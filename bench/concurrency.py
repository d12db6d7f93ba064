"""N simultaneous associations held open, each sending a C-ECHO every PERIOD seconds.

    .venv/bin/python bench/concurrency.py --associations 10000 --tls --period 10 --hold 60

The server (`aiodicom serve`, uvloop unless --loop asyncio) runs in its own process on one
core; the load generator (our client, uvloop) on the other. Connections are opened at a
bounded rate (one Python core handshakes ~260 mutual-TLS connections/s), then every
association echoes at a random phase so echoes are spread, as a real fleet's would be.
Reports failures, echo latency p50/p99/max, and the server's RSS (idle before the load, when
every association is open and none has echoed yet, the peak of samples, and both growths
per association) and CPU; writes
bench/results/concurrency-<date>-<host>-<n>-<plain|tls>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import resource
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.macro.procs import (  # noqa: E402
    CLIENT_CPU,
    SERVER_CPU,
    RssSampler,
    cpu_seconds,
    free_port,
    listening,
    pinned,
    rss_kb,
    stop_process,
)

AIODICOM = str(ROOT / ".venv" / "bin" / "aiodicom")


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    """The load generator: runs in its own process (see `main`)."""
    from aiodicom.aio.client import open_association
    from aiodicom.settings import AssociationSettings, Timeouts

    tls = None
    if args.tls:
        from aiodicom.aio.tls import client_context

        pki = Path(args.pki)
        tls = client_context(cert=pki / "client.crt", key=pki / "client.key", ca=pki / "ca.crt")
    settings = AssociationSettings(
        ae_title="STORESCU",
        timeouts=Timeouts(connect=60, tls_handshake=60, acse=60, dimse=30),
    )
    gate = asyncio.Semaphore(args.connect_concurrency)
    latencies: list[float] = []
    steady: list[float] = []  # every echo but each association's first
    failures: dict[str, int] = {}
    opened = 0
    loop = asyncio.get_running_loop()
    start_hold = asyncio.Event()

    def fail(exc: BaseException) -> None:
        key = type(exc).__name__
        failures[key] = failures.get(key, 0) + 1

    async def one() -> None:
        nonlocal opened
        async with gate:
            try:
                assoc = await open_association(
                    "127.0.0.1", args.port, called_ae_title="AIODICOM", settings=settings,
                    tls=tls, server_hostname="localhost" if tls else None,
                )
            except Exception as exc:  # counted, reported
                fail(exc)
                return
        opened += 1
        try:
            await start_hold.wait()
            end = loop.time() + args.hold
            await asyncio.sleep(random.uniform(0, args.period))
            first_done = False
            while loop.time() < end:
                t0 = time.perf_counter()
                try:
                    status = await assoc.echo()
                except Exception as exc:
                    fail(exc)
                    return
                if status != 0:
                    failures["status"] = failures.get("status", 0) + 1
                took = time.perf_counter() - t0
                latencies.append(took)
                if first_done:
                    steady.append(took)
                first_done = True
                await asyncio.sleep(args.period)
            await assoc.release()
        except Exception as exc:
            fail(exc)

    t_open = time.perf_counter()
    tasks = [asyncio.create_task(one()) for _ in range(args.associations)]
    while opened + sum(failures.values()) < args.associations:
        await asyncio.sleep(0.2)
    open_seconds = time.perf_counter() - t_open
    print(json.dumps({"phase": "held", "opened": opened}), flush=True)
    # The load generator is the instrument: its own full collections over 10,000 client
    # associations took 0.8-1.8 s in the hold and were the whole p99 (gc callbacks, 2026-12-04).
    # Objects that live through the hold are moved out of the collector's reach.
    gc.collect()
    gc.freeze()
    start_hold.set()
    await asyncio.gather(*tasks)
    latencies.sort()
    steady.sort()

    def pct(p: float, values: list[float] = latencies) -> float | None:
        if not values:
            return None
        return values[min(len(values) - 1, int(p * len(values)))] * 1000

    return {
        "opened": opened,
        "open_seconds": round(open_seconds, 2),
        "echoes": len(latencies),
        "failures": failures,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "max_ms": latencies[-1] * 1000 if latencies else None,
        # Each association's first echo lands while the server's heap is still growing, where
        # CPython's full collections (100-400 ms with 10k associations) happen; the rest are
        # the steady state of a connected fleet.
        "steady_p50_ms": pct(0.50, steady),
        "steady_p99_ms": pct(0.99, steady),
        "steady_max_ms": steady[-1] * 1000 if steady else None,
    }


def _server(args: argparse.Namespace, storage: Path) -> subprocess.Popen[bytes]:
    argv = [AIODICOM, "serve", "--storage", str(storage), "--log-level", "warning",
            "--max-associations", str(args.associations + 10)]
    if args.tls:
        pki = Path(args.pki)
        argv += ["--tls-port", str(args.port), "--cert", str(pki / "server.crt"),
                 "--key", str(pki / "server.key"), "--ca", str(pki / "ca.crt")]
    else:
        argv += ["--port", str(args.port)]
    env = {**os.environ}
    if args.loop == "asyncio":
        env["AIODICOM_LOOP"] = "asyncio"
    return subprocess.Popen(pinned(argv, SERVER_CPU), env=env, preexec_fn=_raise_fd_limit)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--associations", "-n", type=int, default=1000)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--period", type=float, default=10.0)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds of echoing")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--connect-concurrency", type=int, default=64)
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pki", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _raise_fd_limit()
    if args.load:
        import uvloop

        result = uvloop.run(_load(args))
        print(json.dumps({"phase": "done", **result}), flush=True)
        return 0
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        work = Path(tmp)
        if args.tls:
            from aiodicom.app.pki import ensure_dev_pki

            dev = ensure_dev_pki(work / "pki")
            for src, name in ((dev.ca_cert, "ca.crt"), (dev.server_cert, "server.crt"),
                              (dev.server_key, "server.key"), (dev.client_cert, "client.crt"),
                              (dev.client_key, "client.key")):
                if src.name != name:
                    (work / "pki" / name).write_bytes(src.read_bytes())
            args.pki = str(work / "pki")
        args.port = free_port()
        server = _server(args, work / "storage")
        try:
            deadline = time.monotonic() + 20
            while not listening(args.port):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.1)
            time.sleep(0.5)  # settle: the idle server's RSS, the base per association
            base_kb = rss_kb(server.pid)
            sampler = RssSampler(server.pid)
            sampler.__enter__()
            cpu0 = cpu_seconds(server.pid)
            load_argv = [sys.executable, __file__, "--load", "--port", str(args.port),
                         "--associations", str(args.associations), "--period", str(args.period),
                         "--hold", str(args.hold), "--pki", args.pki,
                         "--connect-concurrency", str(args.connect_concurrency)]
            if args.tls:
                load_argv.append("--tls")
            held_kb = 0
            with subprocess.Popen(pinned(load_argv, CLIENT_CPU), stdout=subprocess.PIPE,
                                  text=True) as load:
                assert load.stdout is not None
                output = []
                for line in load.stdout:  # "held": every association open, none echoed yet
                    output.append(line)
                    if '"phase": "held"' in line:
                        held_kb = rss_kb(server.pid)
                load.wait(timeout=args.hold + args.associations / 20 + 300)
            cpu1 = cpu_seconds(server.pid)
            sampler.__exit__(None, None, None)
            lines = [json.loads(x) for x in output if x.startswith("{")]
            done = next((x for x in lines if x.get("phase") == "done"), None)
            if done is None:
                print("".join(output), file=sys.stderr)
                raise SystemExit("the load generator failed")
        finally:
            stop_process(server)
    result = {
        "associations": args.associations, "tls": args.tls, "loop": args.loop,
        "period_s": args.period, "hold_s": args.hold, **{k: v for k, v in done.items()
                                                          if k != "phase"},
        "server_peak_rss_mb": round(sampler.peak_kb / 1024, 1),
        "server_idle_rss_mb": round(base_kb / 1024, 1),
        "server_held_rss_mb": round(held_kb / 1024, 1),
        # growth over the idle server per association: once all are open and idle (held),
        # and at the peak (handshake and echo transients included)
        "server_rss_per_idle_association_kb": round(
            (held_kb - base_kb) / max(done["opened"], 1), 1),
        "server_rss_per_association_kb": round(
            (sampler.peak_kb - base_kb) / max(done["opened"], 1), 1),
        "server_cpu_s": round(cpu1 - cpu0, 2),
        "host": socket.gethostname(),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / (
        f"concurrency-{date.today()}-{socket.gethostname()}-{args.associations}-"
        f"{'tls' if args.tls else 'plain'}-{args.loop}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
