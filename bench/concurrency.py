"""N simultaneous associations held open, each sending a C-ECHO every PERIOD seconds.

    .venv/bin/python bench/concurrency.py --associations 10000 --tls --period 10 --hold 60

The server (`aiodicom serve`, uvloop unless --loop asyncio) runs in its own process on one
core; the load generator (our client, uvloop) on the other, split over --client-procs
processes that each hold their share of the associations: one Python process holding 10,000
TLS clients made full collections of 0.8-1.8 s itself and was the tail (2026-12-04).
Connections are opened at a bounded rate (one Python core handshakes ~260 mutual-TLS
connections/s). When every association is open, the server is given --settle seconds, then
every association echoes on a fixed schedule (a random phase, then every PERIOD seconds) so
echoes are spread, as a real fleet's would be.

Each echo is split in two: "timer lateness" (the client's wake-up after the echo's due time:
the load generator's own scheduling) and the "echo round trip" (send to reply, the figure
p50/p99/max have always reported). "steady" figures take only echoes due once every
association has echoed once (hold start + PERIOD): the server's heap grows with each
association's first echo, and its full collections come with that growth. Every process's
gc collections are logged (bench/gclog/sitecustomize.py) and the steady phase's pauses are
reported, with how many of the slowest 1% of round trips overlapped a server or a client
pause. Also reported: the server's RSS (idle before the load, when every association is open
and none has echoed yet, the peak of samples, and both growths per association) and CPU, and
the load generator's CPU in the hold. Writes
bench/results/concurrency-<date>-<host>-<n>-<plain|tls>-<loop>.json (--tag adds a suffix).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import json
import os
import random
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from datetime import date
from pathlib import Path
from typing import IO, Any

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
GCLOG_DIR = str(ROOT / "bench" / "gclog")
PER_CLIENT_PROC = 1250  # associations per load-generator process by default
FIELDS = 4  # per echo in a sample file: due, sent, replied (CLOCK_MONOTONIC, s), association


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def default_client_procs(associations: int) -> int:
    """One process per 1,250 associations, 1 to 8 (8 for 10,000)."""
    return max(1, min(8, -(-associations // PER_CLIENT_PROC)))


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    """One load-generator process: runs in its own process (see `main`)."""
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
    samples = array("d")
    failures: dict[str, int] = {}
    opened = 0
    clock = time.monotonic
    start_hold = asyncio.Event()
    t_go = 0.0

    def fail(exc: BaseException | str) -> None:
        key = exc if isinstance(exc, str) else type(exc).__name__
        failures[key] = failures.get(key, 0) + 1

    async def one(index: int) -> None:
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
            end = t_go + args.hold
            due = t_go + random.uniform(0, args.period)
            while due < end:
                await asyncio.sleep(max(0.0, due - clock()))
                sent = clock()
                try:
                    status = await assoc.echo()
                except Exception as exc:
                    fail(exc)
                    return
                replied = clock()
                if status != 0:
                    fail("status")
                samples.extend((due, sent, replied, index))
                due += args.period
            await assoc.release()
        except Exception as exc:
            fail(exc)

    tasks = [asyncio.create_task(one(i)) for i in range(args.associations)]
    t_open = time.perf_counter()
    while opened + sum(failures.values()) < args.associations:
        await asyncio.sleep(0.05)
    open_seconds = time.perf_counter() - t_open
    # The load generator is the instrument: objects that live through the hold are moved out
    # of its collector's reach (its full collections were the whole p99 in one process).
    gc.collect()
    gc.freeze()
    print(json.dumps({"phase": "held", "opened": opened, "failures": failures}), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    t_go = float(line.split()[1])  # the parent's common start, CLOCK_MONOTONIC
    await asyncio.sleep(max(0.0, t_go - clock()))
    cpu0 = time.process_time()
    start_hold.set()
    await asyncio.gather(*tasks)
    cpu1 = time.process_time()
    with open(args.samples, "wb") as f:
        samples.tofile(f)
    return {"opened": opened, "open_seconds": round(open_seconds, 2), "failures": failures,
            "cpu_hold_s": round(cpu1 - cpu0, 2),
            "rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def _server(args: argparse.Namespace, storage: Path, gc_log: Path) -> subprocess.Popen[bytes]:
    argv = [AIODICOM, "serve", "--storage", str(storage), "--log-level", "warning",
            "--max-associations", str(args.associations + 10)]
    if args.tls:
        pki = Path(args.pki)
        argv += ["--tls-port", str(args.port), "--cert", str(pki / "server.crt"),
                 "--key", str(pki / "server.key"), "--ca", str(pki / "ca.crt")]
    else:
        argv += ["--port", str(args.port)]
    env = _gc_env(gc_log)
    if args.loop == "asyncio":
        env["AIODICOM_LOOP"] = "asyncio"
    return subprocess.Popen(pinned(argv, SERVER_CPU), env=env, preexec_fn=_raise_fd_limit)


def _gc_env(log: Path) -> dict[str, str]:
    """The environment that makes bench/gclog/sitecustomize.py log this process's gc."""
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "AIODICOM_BENCH_GC_LOG": str(log),
            "PYTHONPATH": GCLOG_DIR + (os.pathsep + path if path else "")}


def _pauses(log: Path) -> list[tuple[float, int, float]]:
    """(start, generation, seconds) of every collection logged in `log`."""
    if not log.exists():
        return []
    out = []
    for line in log.read_text().splitlines():
        start, gen, ms, _ = line.split()
        out.append((float(start), int(gen), float(ms) / 1000))
    return out


def _gc_summary(pauses: list[tuple[float, int, float]], lo: float, hi: float) -> dict[str, Any]:
    inside = [(gen, s * 1000) for start, gen, s in pauses if lo <= start < hi]
    by_gen = {f"gen{g}": sum(1 for x, _ in inside if x == g) for g in (0, 1, 2)}
    return {"collections": len(inside), **by_gen,
            "max_ms": round(max((ms for _, ms in inside), default=0.0), 1),
            "total_ms": round(sum(ms for _, ms in inside), 1),
            "over_10ms": sorted((round(ms, 1) for _, ms in inside if ms >= 10), reverse=True)}


def _overlaps(pauses: list[tuple[float, int, float]], lo: float, hi: float) -> bool:
    """True when one of one process's `pauses` (sorted, none overlapping) overlaps [lo, hi].

    Only the last collection that starts before `hi` can: any earlier one ended before it began.
    """
    i = bisect.bisect_right(pauses, (hi, 9, 0.0))
    return i > 0 and pauses[i - 1][0] + pauses[i - 1][2] >= lo


def _pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return round(values[min(len(values) - 1, int(p * len(values)))] * 1000, 3)


def _figures(prefix: str, rtt: list[float], late: list[float], total: list[float]
             ) -> dict[str, Any]:
    rtt, late, total = sorted(rtt), sorted(late), sorted(total)
    return {
        f"{prefix}p50_ms": _pct(rtt, 0.5), f"{prefix}p99_ms": _pct(rtt, 0.99),
        f"{prefix}max_ms": _pct(rtt, 1.0),
        f"{prefix}lateness_p50_ms": _pct(late, 0.5), f"{prefix}lateness_p99_ms": _pct(late, 0.99),
        f"{prefix}lateness_max_ms": _pct(late, 1.0),
        f"{prefix}due_to_reply_p99_ms": _pct(total, 0.99),
        f"{prefix}due_to_reply_max_ms": _pct(total, 1.0),
    }


def _analyse(sample_files: list[Path], steady_from: float, steady_to: float, release_from: float,
             server_gc: list[tuple[float, int, float]],
             client_gc: list[list[tuple[float, int, float]]]) -> dict[str, Any]:
    """Merged percentiles, overall and steady, and what the steady tail overlapped."""
    rows: list[tuple[int, float, float, float]] = []
    for proc, path in enumerate(sample_files):
        data = array("d")
        data.frombytes(path.read_bytes())
        rows.extend((proc, data[i], data[i + 1], data[i + 2])
                    for i in range(0, len(data), FIELDS))
    out: dict[str, Any] = {"echoes": len(rows)}
    out.update(_figures("", [r - s for _, _, s, r in rows], [s - d for _, d, s, _ in rows],
                        [r - d for _, d, _, r in rows]))
    steady = [x for x in rows if steady_from <= x[1] < steady_to]
    out["steady_echoes"] = len(steady)
    out.update(_figures("steady_", [r - s for _, _, s, r in steady],
                        [s - d for _, d, s, _ in steady], [r - d for _, d, _, r in steady]))
    # Each association releases right after its last echo, in the hold's last period: the
    # server frees 10,000 associations while the rest echo. Echoes before that, apart.
    before = [x for x in rows if steady_from <= x[1] < release_from]
    out["before_release_echoes"] = len(before)
    out.update(_figures("before_release_", [r - s for _, _, s, r in before],
                        [s - d for _, d, s, _ in before], [r - d for _, d, _, r in before]))
    if steady:
        cut = sorted(r - s for _, _, s, r in steady)[int(0.99 * len(steady))]
        tail = [x for x in steady if x[3] - x[2] >= cut]
        server = sum(1 for _, _, s, r in tail if _overlaps(server_gc, s, r))
        client = sum(1 for p, _, s, r in tail if _overlaps(client_gc[p], s, r))
        either = sum(1 for p, _, s, r in tail
                     if _overlaps(server_gc, s, r) or _overlaps(client_gc[p], s, r))
        out["steady_tail"] = {
            "echoes": len(tail), "from_ms": round(cut * 1000, 3),
            "overlapping_server_gc": server, "overlapping_own_client_gc": client,
            "overlapping_neither": len(tail) - either,
            # when the slow echoes were sent: seconds into the steady window, 5 s bins
            "sent_at_s": dict(sorted(Counter(int((s - steady_from) // 5 * 5)
                                             for _, _, s, _ in tail).items())),
        }
    return out


def _run_load(args: argparse.Namespace, work: Path, server: subprocess.Popen[bytes]
              ) -> dict[str, Any]:
    """Start the load processes, hold, echo; the merged report (server RSS read when held)."""
    n = args.client_procs
    shares = [args.associations // n + (i < args.associations % n) for i in range(n)]
    procs: list[subprocess.Popen[str]] = []
    for i, share in enumerate(shares):
        argv = [sys.executable, __file__, "--load", "--port", str(args.port),
                "--associations", str(share), "--period", str(args.period),
                "--hold", str(args.hold), "--pki", args.pki,
                "--connect-concurrency", str(max(1, args.connect_concurrency // n)),
                "--samples", str(work / f"samples-{i}.bin")]
        if args.tls:
            argv.append("--tls")
        procs.append(subprocess.Popen(
            pinned(argv, CLIENT_CPU), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env=_gc_env(work / f"gc-client-{i}.log"), preexec_fn=_raise_fd_limit))
    try:
        t_open = time.perf_counter()
        t_start = time.monotonic()
        held = [_expect(p, "held") for p in procs]
        open_seconds = time.perf_counter() - t_open
        t_held = time.monotonic()
        held_kb = rss_kb(server.pid)
        time.sleep(args.settle)
        t_go = time.monotonic() + 0.5
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"go {t_go!r}\n")
            p.stdin.flush()
        done = [_expect(p, "done") for p in procs]
        t_done = time.monotonic()
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failures: dict[str, int] = {}
    for d in [*held, *done]:
        for k, v in d["failures"].items():
            failures[k] = failures.get(k, 0) + v
    steady_from, steady_to = t_go + args.period, t_go + args.hold
    server_gc = _pauses(work / "gc-server.log")
    client_gc = [_pauses(work / f"gc-client-{i}.log") for i in range(n)]
    ms = 0.001  # a tail echo "overlaps" a collection of at least 1 ms
    server_big = [x for x in server_gc if x[2] >= ms]
    client_big = [[x for x in c if x[2] >= ms] for c in client_gc]
    client_all = sorted(x for c in client_gc for x in c)
    return {
        "opened": sum(d["opened"] for d in done), "open_seconds": round(open_seconds, 2),
        "failures": failures, "held_kb": held_kb,
        "marks": {"open": t_start, "held": t_held, "go": t_go, "done": t_done},
        **_analyse([work / f"samples-{i}.bin" for i in range(n)], steady_from, steady_to,
                   steady_to - args.period,
                   server_big, client_big),
        "server_gc_open": _gc_summary(server_gc, 0.0, t_go),
        "server_gc_steady": _gc_summary(server_gc, steady_from, steady_to),
        "client_gc_steady": _gc_summary(client_all, steady_from, steady_to),
        "client_cpu_hold_s": round(sum(d["cpu_hold_s"] for d in done), 2),
        "client_peak_rss_mb": [d["rss_mb"] for d in done],
    }


def _rss_phases(trace: list[tuple[float, int]], marks: dict[str, float]) -> dict[str, Any]:
    """Where the server's peak falls: the peak of each phase, and the most per second.

    Phases: opening every association, held idle until the first echo is due, echoing
    (each association releases after its last echo, in the hold's last period).
    """
    bounds = [("open", marks["open"], marks["held"]), ("settle", marks["held"], marks["go"]),
              ("echo_and_release", marks["go"], marks["done"])]
    peaks = {name: round(max((kb for t, kb in trace if lo <= t < hi), default=0) / 1024, 1)
             for name, lo, hi in bounds}
    per_second: dict[int, int] = {}
    for t, kb in trace:
        if t >= marks["open"]:
            second = int(t - marks["open"])
            per_second[second] = max(per_second.get(second, 0), kb)
    return {"server_peak_rss_mb_by_phase": peaks,
            "server_phase_starts_s": {k: round(v - marks["open"], 1) for k, v in marks.items()},
            "server_rss_mb_per_second": [round(per_second[k] / 1024, 1)
                                         for k in sorted(per_second)]}


def _expect(proc: subprocess.Popen[str], phase: str) -> dict[str, Any]:
    out: IO[str] | None = proc.stdout
    assert out is not None
    for line in out:
        if line.startswith("{"):
            msg: dict[str, Any] = json.loads(line)
            if msg.get("phase") == phase:
                return msg
    raise SystemExit(f"a load-generator process ended before '{phase}' (exit {proc.wait()})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--associations", "-n", type=int, default=1000)
    parser.add_argument("--tls", action="store_true")
    parser.add_argument("--period", type=float, default=10.0)
    parser.add_argument("--hold", type=float, default=30.0, help="seconds of echoing")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--connect-concurrency", type=int, default=64,
                        help="connections being opened at once, over all client processes")
    parser.add_argument("--client-procs", type=int, default=0,
                        help="load-generator processes (default: one per 1,250, 1-8)")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between every association open and the first echo")
    parser.add_argument("--tag", default="", help="suffix of the result file name")
    parser.add_argument("--keep-gc-logs", action="store_true",
                        help="copy every process's gc log beside the result file")
    parser.add_argument("--load", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--pki", default="", help=argparse.SUPPRESS)
    parser.add_argument("--samples", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    _raise_fd_limit()
    if args.load:
        import uvloop

        result = uvloop.run(_load(args))
        print(json.dumps({"phase": "done", **result}), flush=True)
        return 0
    args.client_procs = args.client_procs or default_client_procs(args.associations)
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
        server = _server(args, work / "storage", work / "gc-server.log")
        try:
            deadline = time.monotonic() + 20
            while not listening(args.port):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start")
                time.sleep(0.1)
            time.sleep(0.5)  # settle: the idle server's RSS, the base per association
            base_kb = rss_kb(server.pid)
            with RssSampler(server.pid) as sampler:
                cpu0 = cpu_seconds(server.pid)
                done = _run_load(args, work, server)
                cpu1 = cpu_seconds(server.pid)
        finally:
            stop_process(server)
        out = ROOT / "bench" / "results" / (
            f"concurrency-{date.today()}-{socket.gethostname()}-{args.associations}-"
            f"{'tls' if args.tls else 'plain'}-{args.loop}{'-' + args.tag if args.tag else ''}")
        if args.keep_gc_logs:
            for log in sorted(work.glob("gc-*.log")):
                shutil.copyfile(log, f"{out}-{log.name}")
    held_kb = done.pop("held_kb")
    marks = done.pop("marks")
    result = {
        "associations": args.associations, "tls": args.tls, "loop": args.loop,
        "period_s": args.period, "hold_s": args.hold, "settle_s": args.settle,
        "client_procs": args.client_procs, **done,
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
        **_rss_phases(sampler.trace, marks),
        "host": socket.gethostname(),
    }
    print(json.dumps(result, indent=2))
    Path(f"{out}.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
