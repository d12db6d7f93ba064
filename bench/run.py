"""Macro benchmarks: aiodicom's server against DCMTK storescp and a pynetdicom SCP, one run.

    .venv/bin/python bench/run.py            # 5 repetitions (~10 min), writes bench/results/
    BENCH_REPS=1 .venv/bin/python bench/run.py   # one repetition (~2 min)
    .venv/bin/python bench/run.py --quick    # smaller sizes, one repetition (< 1 min)
    .venv/bin/python bench/run.py --only store --servers aiodicom,dcmtk --reps 3

Every repetition runs every measure against every server (interleaved); the table gives
the median of each figure over the repetitions, the ratio of the medians, and the range of
the per-repetition aiodicom/DCMTK ratios.

Servers run pinned to one core, clients to the other, files go to /dev/shm. Results are
ratios aiodicom/peer: for times lower is better, for rates higher is better. See README.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from macro.aggregate import median_results, ratio_ranges  # noqa: E402
from macro.data import make_big_ct, make_ct_series  # noqa: E402
from macro.measures import MEASURES, Config  # noqa: E402
from macro.procs import CLIENT_CPU, SERVER_CPU  # noqa: E402
from macro.report import (  # noqa: E402
    errors_markdown,
    log_issues,
    markdown,
    rows_for,
    with_ratios,
    write,
)
from macro.servers import SERVERS, make_certs  # noqa: E402

MODES = {"store": ("plain", "tls"), "big": ("plain",), "echo": ("plain", "tls"),
         "assoc": ("plain", "tls")}
MIB = 1024 * 1024


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument("--reps", type=int, default=None,
                        help="repetitions of the whole table (default $BENCH_REPS or 5; "
                             "1 with --quick)")
    parser.add_argument("--only", action="append", choices=sorted(MEASURES),
                        help="run only this measure (repeatable)")
    parser.add_argument("--servers", default="aiodicom,dcmtk,pynetdicom",
                        help="comma-separated subset of aiodicom,dcmtk,pynetdicom")
    parser.add_argument("--results", type=Path, default=BENCH / "results",
                        help="where <date>-<host>.json/.md go")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the /dev/shm work folder")
    args = parser.parse_args(argv)
    if args.reps is None:
        args.reps = 1 if args.quick else int(os.environ.get("BENCH_REPS") or 5)
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    args.server_names = [s.strip() for s in args.servers.split(",") if s.strip()]
    unknown = set(args.server_names) - set(SERVERS)
    if unknown:
        parser.error(f"unknown server(s) {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(SERVERS)}")
    return args


def _version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.stdout or out.stderr else ""


def _environment() -> dict[str, Any]:
    import pydicom
    import pynetdicom

    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    git = _version(["git", "-C", str(BENCH.parent), "rev-parse", "--short", "HEAD"])
    dirty = _version(["git", "-C", str(BENCH.parent), "status", "--porcelain", "--", "src"])
    return {
        "host": socket.gethostname(), "cpu": cpu, "cpus": os.cpu_count(),
        "server_cpu": SERVER_CPU, "client_cpu": CLIENT_CPU,
        "kernel": platform.release(), "python": platform.python_version(),
        "aiodicom": _version([str(Path(sys.executable).parent / "aiodicom"), "--version"]),
        "git": git + (" (src modified)" if dirty else ""),
        "dcmtk": _version(["/usr/bin/storescp", "--version"]).strip("$ "),
        "pynetdicom": pynetdicom.__version__, "pydicom": pydicom.__version__,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


def _config(args: argparse.Namespace, workdir: Path) -> Config:
    quick = args.quick
    data = workdir / "data"
    need = set(args.only or MEASURES)
    ct_count = 50 if quick else 200
    big_bytes = (200 if quick else 1024) * MIB
    t0 = time.perf_counter()
    if need & {"store"}:
        make_ct_series(data / "ct", ct_count)
    if "big" in need:
        make_big_ct(data / "big.dcm", big_bytes)
    print(f"data generated in {time.perf_counter() - t0:.1f} s under {data}", flush=True)
    return Config(
        workdir=workdir, ct_folder=data / "ct", ct_count=ct_count, big_file=data / "big.dcm",
        big_bytes=big_bytes, certs=make_certs(workdir / "pki"),
        reps=1 if quick or args.reps > 1 else 3,  # runs per server start; repetitions above
        echo_count=500 if quick else 2000,
        assoc_seconds=2.0 if quick else (5.0 if args.reps > 1 else 10.0),
        assoc_concurrency=8,
    )


def _run_all(args: argparse.Namespace, cfg: Config) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for measure in args.only or list(MEASURES):
        for mode in MODES[measure]:
            for name in args.server_names:
                spec = SERVERS[name]
                t0 = time.perf_counter()
                try:
                    cell = MEASURES[measure](spec, mode == "tls", cfg)
                except Exception as exc:  # a broken server must not stop the others
                    cell = {"error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(limit=3)}
                took = time.perf_counter() - t0
                shown = cell.get("error") or f"{cell['value']} {cell['unit']}"
                extra = "".join(f", {k} {cell[k]}" for k in ("per_server_cpu_s", "peak_rss_mb",
                                                               "failed") if cell.get(k))
                print(f"{measure:5} {mode:5} {name:10} {shown}{extra}  ({took:.1f} s)",
                      flush=True)
                results.setdefault(measure, {}).setdefault(mode, {})[name] = cell
    return results


def _issues_markdown(issues: dict[str, list[str]]) -> str:
    """Noteworthy server log lines, first few per server run, as a markdown section."""
    if not issues:
        return ""
    parts = ["## Server log lines worth a look"]
    for tag, lines in issues.items():
        parts.append(f"{tag}:\n\n" + "\n".join(f"    {line}" for line in lines))
    return "\n\n".join(parts)


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    signal.signal(signal.SIGTERM, _on_term)  # so `finally` blocks stop every server
    if CLIENT_CPU is not None:
        os.sched_setaffinity(0, {CLIENT_CPU})  # the harness stays off the server's core
    shm = Path("/dev/shm")
    workdir = Path(tempfile.mkdtemp(prefix="aiodicom-bench-", dir=shm if shm.is_dir() else None))
    started = time.perf_counter()
    try:
        env = _environment()
        cfg = _config(args, workdir)
        per_rep = []
        for rep in range(args.reps):
            if args.reps > 1:
                print(f"-- repetition {rep + 1} of {args.reps}", flush=True)
            per_rep.append(_run_all(args, dataclasses.replace(
                cfg, workdir=workdir / f"rep{rep + 1}" if args.reps > 1 else workdir)))
        results = median_results(per_rep) if args.reps > 1 else per_rep[0]
        issues = log_issues(workdir)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    rows = rows_for(cfg.ct_count, cfg.big_bytes // MIB, cfg.echo_count, cfg.assoc_concurrency)
    table = with_ratios(results, rows)
    ranges = ratio_ranges(per_rep, rows) if args.reps > 1 else None
    today = dt.date.today().isoformat()
    title = f"aiodicom macro benchmarks, {today}, {env['host']}" + (
        " (quick)" if args.quick else "")
    md = "\n\n".join(filter(None, [
        f"# {title}",
        f"{env['cpu']}, {env['cpus']} CPUs, servers on CPU {env['server_cpu']}, clients on "
        f"CPU {env['client_cpu']}; Python {env['python']}, {env['dcmtk']}, pynetdicom "
        f"{env['pynetdicom']}, {env['aiodicom']} ({env['git']}); load average before "
        f"{env['loadavg_before']}" + (f", after {[round(x, 2) for x in os.getloadavg()]}"
                                        f"; medians of {args.reps} repetitions." if
                                        args.reps > 1 else "."),
        markdown(results, table, ranges),
        "Ratios are aiodicom/peer: for times (s, MB) lower is better, for rates higher."
        + (" The ratio column is the ratio of the medians; the range is that of the "
           "per-repetition ratios." if args.reps > 1 else ""),
        ("## Errors\n\n" + errors_markdown(results)) if errors_markdown(results) else "",
        _issues_markdown(issues),
    ])) + "\n"
    print()
    print(md)
    document = {"title": title, "date": today, "quick": args.quick, "environment": env,
                "repetitions": args.reps,
                "ratio_ranges": {"/".join(k): v for k, v in (ranges or {}).items()},
                "config": {"ct_count": cfg.ct_count, "big_bytes": cfg.big_bytes,
                           "reps": cfg.reps, "echo_count": cfg.echo_count,
                           "assoc_seconds": cfg.assoc_seconds,
                           "assoc_concurrency": cfg.assoc_concurrency},
                "table": table, "results": results, "server_log_issues": issues,
                "duration_s": round(time.perf_counter() - started, 1)}
    if not args.no_save:
        suffix = ("-quick" if args.quick else "") + (
            "-" + "-".join(args.only) if args.only else "") + (
            "-" + "-".join(args.server_names) if len(args.server_names) < len(SERVERS) else "")
        base = args.results / f"{today}-{env['host']}{suffix}"
        paths = write(base, document, md)
        print("wrote " + ", ".join(str(p) for p in paths))
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
