"""The asynchronous operations window (PS3.7 D.3.3.3): 2,000 small C-STOREs over one
association with window 1 and window 16, our client to our server.

    .venv/bin/python bench/window.py                 # 2,000 x ~10 KB, 5 repetitions
    .venv/bin/python bench/window.py --count 200 --repeat 1 --no-save   # smoke run

Two servers, each a subprocess on CPU 0 (the client on CPU 1, uvloop on both):
- sink: `aiodicom.Server` performing up to 16 operations at once, whose store handler reads
  the data set and drops it (the protocol path only);
- serve: `aiodicom serve --storage /dev/shm/...` (files and index), which performs at most 8:
  window 16 is granted 8 there.
Each repetition opens one association, proposes the window (none for window 1), sends every
file with as many C-STOREs in flight as granted, and releases; the time is connect to
release. Medians over the repetitions; results/<date>-window.md (and .json) unless
--no-save. Not a test: a measurement to read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
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
    cpu_seconds,
    free_port,
    listening,
    pinned,
    stop_process,
)

AIODICOM = str(ROOT / ".venv" / "bin" / "aiodicom")
CT = "1.2.840.10008.5.1.4.1.1.2"


def _write_files(folder: Path, count: int, pixel_bytes: int) -> list[Path]:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    pixels = bytes((i * 7) & 0xFF for i in range(pixel_bytes))
    paths = []
    for n in range(count):
        sop = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CT
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.3.4.5", f"1.2.3.4.5.{n // 500}"
        ds.PatientID, ds.PatientName, ds.Modality = "BENCH", "Window^Bench", "CT"
        ds.Rows, ds.Columns = pixel_bytes // 200, 100
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = pixels
        path = folder / f"{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# -- the sink server (run as a subprocess: `bench/window.py --sink PORT`) -------------------

async def _sink(port: int, performed: int) -> None:
    from aiodicom.aio.requests import StoreRequest
    from aiodicom.aio.server import Handlers, Server
    from aiodicom.core.dimse import Status
    from aiodicom.core.negotiation import (
        EXPLICIT_VR_LITTLE_ENDIAN,
        IMPLICIT_VR_LITTLE_ENDIAN,
        AcceptorPolicy,
    )

    async def on_store(request: StoreRequest) -> Status:
        async for _view in request.fragments():
            pass
        return Status.SUCCESS

    policy = AcceptorPolicy(
        abstract_syntaxes={CT: (EXPLICIT_VR_LITTLE_ENDIAN, IMPLICIT_VR_LITTLE_ENDIAN)},
        max_operations_performed=performed)
    server = Server(admission=policy, handlers=Handlers(store=on_store))
    await server.listen("127.0.0.1", port)
    await asyncio.Event().wait()


# -- the client ---------------------------------------------------------------------------

async def _send(port: int, files: list[Path], window: int) -> tuple[float, int]:
    from aiodicom.aio.client import connect, storage_contexts_for
    from aiodicom.core.dimse import Status

    contexts = storage_contexts_for(files[:1])
    queue = list(reversed(files))
    failures = 0
    start = time.perf_counter()
    async with connect("127.0.0.1", port, contexts=contexts,
                       max_operations_invoked=window if window > 1 else None) as assoc:
        granted = assoc.require_established().max_operations_invoked

        async def lane() -> None:
            nonlocal failures
            while queue:
                if await assoc.store(queue.pop()) != Status.SUCCESS:
                    failures += 1

        await asyncio.gather(*(lane() for _ in range(granted)))
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{failures} C-STORE(s) failed")
    return elapsed, granted


def _start(argv: list[str], port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(pinned(argv, SERVER_CPU), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while not listening(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_process(proc)
            raise RuntimeError(f"server {argv} did not come up")
        time.sleep(0.05)
    return proc


def _measure(args: argparse.Namespace, files: list[Path], work: Path) -> list[dict[str, Any]]:
    import uvloop

    rows = []
    for server in args.servers:
        for window in args.windows:
            times, cpus, granted = [], [], 0
            for rep in range(args.repeat):
                port = free_port()
                if server == "sink":
                    argv = [sys.executable, __file__, "--sink", str(port),
                            "--performed", str(max(args.windows))]
                else:
                    storage = work / f"store-{window}-{rep}"
                    argv = [AIODICOM, "serve", "--port", str(port), "--storage", str(storage)]
                proc = _start(argv, port)
                try:
                    cpu0 = cpu_seconds(proc.pid)
                    elapsed, granted = uvloop.run(_send(port, files, window))
                    cpus.append(cpu_seconds(proc.pid) - cpu0)
                finally:
                    stop_process(proc)
                    if server == "serve":
                        shutil.rmtree(work / f"store-{window}-{rep}", ignore_errors=True)
                times.append(elapsed)
                print(f"  {server} window {window} (granted {granted}) run {rep + 1}: "
                      f"{elapsed:.3f} s, {len(files) / elapsed:,.0f} stores/s", flush=True)
            median = statistics.median(times)
            rows.append({"server": server, "window": window, "granted": granted,
                         "times_s": times, "median_s": median,
                         "stores_per_s": len(files) / median,
                         "server_cpu_s_median": statistics.median(cpus)})
    return rows


def _report(args: argparse.Namespace, rows: list[dict[str, Any]], load: tuple[float, ...],
            size: int) -> str:
    lines = [
        f"# Operations window bench, {date.today()} on {platform.node()}",
        "",
        f"`bench/window.py`: {args.count} C-STOREs of {size:,} bytes (Part 10 file) over one "
        f"association, our client (uvloop, CPU {CLIENT_CPU}) to our server (CPU {SERVER_CPU}); "
        f"medians of {args.repeat}. Load average at start: "
        f"{load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.",
        "",
        "| server | window proposed | granted | median s | stores/s | server CPU s | runs (s) |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    lines.extend(
        f"| {r['server']} | {r['window']} | {r['granted']} | {r['median_s']:.3f} | "
        f"{r['stores_per_s']:,.0f} | {r['server_cpu_s_median']:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in r['times_s'])} |"
        for r in rows)
    for server in args.servers:
        mine = {r["window"]: r for r in rows if r["server"] == server}
        if 1 in mine and len(mine) > 1:
            top = mine[max(mine)]
            lines.append("")
            lines.append(f"{server}: window {top['window']} (granted {top['granted']}) is "
                         f"{mine[1]['median_s'] / top['median_s']:.2f}x window 1.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--pixels", type=int, default=10_000, help="pixel data bytes (even)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--windows", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 16])
    parser.add_argument("--servers", type=lambda s: s.split(","), default=["sink", "serve"])
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--performed", type=int, default=16, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sink is not None:
        import uvloop

        uvloop.run(_sink(args.sink, args.performed))
        return 0
    if CLIENT_CPU is not None:
        os.sched_setaffinity(0, {CLIENT_CPU})
    load = os.getloadavg()
    base = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(prefix="aiodicom-window-", dir=base) as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        files = _write_files(work / "in", args.count, args.pixels)
        size = files[0].stat().st_size
        print(f"{args.count} files of {size:,} bytes; load average {load[0]:.2f}", flush=True)
        rows = _measure(args, files, work)
    report = _report(args, rows, load, size)
    print(report)
    if not args.no_save:
        out = ROOT / "bench" / "results" / f"{date.today()}-window"
        out.with_suffix(".json").write_text(json.dumps(
            {"count": args.count, "file_bytes": size, "repeat": args.repeat, "load": load,
             "rows": rows}, indent=1) + "\n")
        out.with_suffix(".md").write_text(report)
        print(f"wrote {out}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
