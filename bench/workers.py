"""One worker against two: the same concurrent senders, `aiodicom serve --workers N`.

    .venv/bin/python bench/workers.py [--senders 6] [--files 100]

Each sender is a DCMTK echoscu --repeat (default) or storescu of 512 KiB CT images over
one association; all senders start together. Reported per N: wall time, throughput and
server CPU (the supervisor and its workers, from /proc).
On a 2-core machine the senders share the cores with the workers, so the ratio this
measures is bounded well below 2 by the load generator itself: read it with the CPU
figures beside it. Writes bench/results/workers-<date>-<host>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.macro.data import make_ct_series  # noqa: E402
from bench.macro.procs import (  # noqa: E402
    CLIENT_ENV,
    cpu_seconds,
    free_port,
    listening,
    stop_process,
)

AIODICOM = str(ROOT / ".venv" / "bin" / "aiodicom")


def _run(workers: int, senders: int, data: Path, work: Path, total_bytes: int,
         echoes: int) -> dict[str, float | int]:
    port = free_port()
    storage = work / f"storage-{workers}"
    server = subprocess.Popen(
        [AIODICOM, "serve", "--workers", str(workers), "--port", str(port), "--storage",
         str(storage), "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while not listening(port):
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the server did not start")
            time.sleep(0.1)
        time.sleep(1.0 if workers > 1 else 0.2)  # every worker bound
        cpu0 = cpu_seconds(server.pid)
        start = time.perf_counter()
        if echoes:
            argv = ["/usr/bin/echoscu", "--repeat", str(echoes), "-aec", "AIODICOM",
                    "127.0.0.1", str(port)]
        else:
            argv = ["/usr/bin/storescu", "-aec", "AIODICOM", "127.0.0.1", str(port), "+sd",
                    str(data)]
        procs = [subprocess.Popen(argv, env=CLIENT_ENV, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(senders)]
        codes = [p.wait(timeout=600) for p in procs]
        wall = time.perf_counter() - start
        cpu = cpu_seconds(server.pid) - cpu0
    finally:
        stop_process(server)
    if any(codes):
        raise SystemExit(f"a sender failed with {workers} worker(s): exit codes {codes}")
    if echoes:
        rate = senders * echoes / wall
        return {"workers": workers, "wall_s": round(wall, 3), "echoes_per_s": round(rate),
                "server_cpu_s": round(cpu, 2)}
    mb = senders * total_bytes / 1e6
    return {"workers": workers, "wall_s": round(wall, 3), "mb_per_s": round(mb / wall, 1),
            "server_cpu_s": round(cpu, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--senders", type=int, default=6)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mode", choices=("echo", "store"), default="echo",
                        help="echo: each sender is echoscu --repeat --echoes (server-bound); "
                        "store: storescu of --files images (client-bound here)")
    parser.add_argument("--echoes", type=int, default=3000)
    args = parser.parse_args()
    base = "/dev/shm" if Path("/dev/shm").is_dir() else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        work = Path(tmp)
        data = work / "data"
        paths = make_ct_series(data, args.files if args.mode == "store" else 1)
        total = sum(p.stat().st_size for p in paths)
        runs: dict[int, list[dict[str, float]]] = {1: [], 2: []}
        for _ in range(args.repeat):
            for workers in (1, 2):
                runs[workers].append(_run(workers, args.senders, data, work, total,
                                          args.echoes if args.mode == "echo" else 0))
    best = {n: min(r, key=lambda x: x["wall_s"]) for n, r in runs.items()}
    key = "echoes_per_s" if args.mode == "echo" else "mb_per_s"
    result = {
        "mode": args.mode, "senders": args.senders, "cores": os.cpu_count(),
        "per_sender": args.echoes if args.mode == "echo" else args.files,
        "one_worker": best[1], "two_workers": best[2],
        "throughput_ratio": round(best[2][key] / best[1][key], 2),
        "runs": {str(k): v for k, v in runs.items()}, "host": socket.gethostname(),
    }
    print(json.dumps(result, indent=2))
    out = ROOT / "bench" / "results" / (
        f"workers-{args.mode}-{date.today()}-{socket.gethostname()}.json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
