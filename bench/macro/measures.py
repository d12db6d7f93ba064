"""The four macro measures. Each returns a JSON-able dict for one (server, transport).

- store: DCMTK storescu sends N x 512 KiB CT images over one association; wall time, median
  of `reps` runs, each against a freshly started server (warmed up by one C-ECHO).
- big: storescu sends one big CT (1 GiB, 200 MiB with --quick); wall time and the server's
  peak RSS (VmHWM of its process tree, and VmRSS sampled every 50 ms).
- echo: `echoscu --repeat N` on one association; echoes per second of wall time.
- assoc: C concurrent loops of associate + C-ECHO + release for D seconds; associations per
  second of wall time and per second of server CPU time.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from macro.data import folder_bytes
from macro.procs import ClientRun, RssSampler, cpu_seconds, rss_kb, run_client, vmhwm_kb
from macro.servers import Certs, Running, ServerSpec, running

__all__ = ["Config", "MEASURES", "measure_assoc", "measure_big", "measure_echo",
           "measure_store"]

HERE = Path(__file__).resolve().parent
CALLING_AE = "STORESCU"  # the AE title our client certificate names


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    workdir: Path
    ct_folder: Path
    ct_count: int
    big_file: Path
    big_bytes: int
    certs: Certs
    reps: int
    echo_count: int
    assoc_seconds: float
    assoc_concurrency: int


def _tls_args(server: Running, certs: Certs) -> list[str]:
    if not server.tls:
        return []
    return ["+tls", str(certs.client_key), str(certs.client_cert), "+cf", str(certs.ca)]


def _dcmtk_common(server: Running, certs: Certs) -> list[str]:
    return ["-aet", CALLING_AE, "-aec", server.spec.ae_title, *_tls_args(server, certs)]


def _check(run: ClientRun, what: str) -> None:
    if run.returncode != 0:
        raise RuntimeError(f"{what} exited {run.returncode}: {run.tail()}")
    bad = [line for line in run.output.splitlines() if line.startswith(("E:", "F:"))]
    if bad:
        raise RuntimeError(f"{what} reported errors: {' | '.join(bad[:4])}")


def _echo(server: Running, certs: Certs, repeat: int) -> ClientRun:
    argv = ["/usr/bin/echoscu", *_dcmtk_common(server, certs)]
    if repeat > 1:
        argv += ["--repeat", str(repeat)]
    run = run_client([*argv, "127.0.0.1", str(server.port)], timeout=300)
    _check(run, "echoscu")
    return run


def _storescu(server: Running, certs: Certs, paths: list[Path]) -> ClientRun:
    argv = ["/usr/bin/storescu", *_dcmtk_common(server, certs), "127.0.0.1",
            str(server.port), *map(str, paths)]
    run = run_client(argv, timeout=600)
    _check(run, "storescu")
    return run


def measure_store(spec: ServerSpec, tls: bool, cfg: Config) -> dict[str, Any]:
    paths = sorted(cfg.ct_folder.glob("*.dcm"))
    certs = cfg.certs if tls else None
    runs = []
    for rep in range(cfg.reps):
        tag = f"store-{spec.name}-{'tls' if tls else 'plain'}-{rep}"
        with running(spec, cfg.workdir, tag, certs) as server:
            _echo(server, cfg.certs, 1)
            cpu0 = cpu_seconds(server.pid)
            run = _storescu(server, cfg.certs, paths)
            cpu = cpu_seconds(server.pid) - cpu0
            count, _size = folder_bytes(server.storage)
            if count < len(paths):
                raise RuntimeError(f"server stored {count} of {len(paths)} files")
            runs.append({"wall_s": round(run.wall, 4), "server_cpu_s": round(cpu, 3)})
    walls = [r["wall_s"] for r in runs]
    cpus = [r["server_cpu_s"] for r in runs]
    return {"value": statistics.median(walls), "unit": "s", "runs": runs,
            "server_cpu_s": statistics.median(cpus),
            "files": len(paths), "mb_per_s": round(_total(paths) / 1e6 / min(walls), 1)}


def _total(paths: list[Path]) -> int:
    return sum(p.stat().st_size for p in paths)


def measure_big(spec: ServerSpec, tls: bool, cfg: Config) -> dict[str, Any]:
    certs = cfg.certs if tls else None
    tag = f"big-{spec.name}-{'tls' if tls else 'plain'}"
    with running(spec, cfg.workdir, tag, certs) as server:
        _echo(server, cfg.certs, 1)
        idle_kb = rss_kb(server.pid)
        cpu0 = cpu_seconds(server.pid)
        with RssSampler(server.pid) as sampler:
            run = _storescu(server, cfg.certs, [cfg.big_file])
        cpu = cpu_seconds(server.pid) - cpu0
        hwm_kb = vmhwm_kb(server.pid)
        count, size = folder_bytes(server.storage)
        if count < 1 or size < cfg.big_bytes:
            raise RuntimeError(f"server stored {count} files, {size} bytes (< {cfg.big_bytes})")
    peak_mb = max(hwm_kb, sampler.peak_kb) / 1024
    return {"value": round(run.wall, 3), "unit": "s", "peak_rss_mb": round(peak_mb, 1),
            "idle_rss_mb": round(idle_kb / 1024, 1),
            "sampled_peak_rss_mb": round(sampler.peak_kb / 1024, 1),
            "server_cpu_s": round(cpu, 3), "bytes": cfg.big_file.stat().st_size}


def measure_echo(spec: ServerSpec, tls: bool, cfg: Config) -> dict[str, Any]:
    certs = cfg.certs if tls else None
    tag = f"echo-{spec.name}-{'tls' if tls else 'plain'}"
    walls, base, cpus = [], [], []
    with running(spec, cfg.workdir, tag, certs) as server:
        for _ in range(cfg.reps):
            base.append(_echo(server, cfg.certs, 1).wall)
            cpu0 = cpu_seconds(server.pid)
            walls.append(_echo(server, cfg.certs, cfg.echo_count).wall)
            cpus.append(cpu_seconds(server.pid) - cpu0)
    wall, one, cpu = statistics.median(walls), statistics.median(base), sum(cpus)
    marginal = cfg.echo_count / (wall - one) if wall > one else None
    # CPU over all repetitions together: /proc counts 10 ms ticks, one run is only ~10 of them.
    return {"value": round(cfg.echo_count / wall, 1), "unit": "/s",
            "per_server_cpu_s": round(len(cpus) * cfg.echo_count / cpu, 1) if cpu else None,
            "server_cpu_s": [round(c, 3) for c in cpus],
            "walls_s": [round(w, 4) for w in walls], "single_echo_run_s": round(one, 4),
            "marginal_per_s": round(marginal, 1) if marginal else None,
            "echoes": cfg.echo_count}


def measure_assoc(spec: ServerSpec, tls: bool, cfg: Config) -> dict[str, Any]:
    certs = cfg.certs if tls else None
    tag = f"assoc-{spec.name}-{'tls' if tls else 'plain'}"
    argv = [sys.executable, str(HERE / "assoc_client.py"), "127.0.0.1", "PORT",
            "--called-ae", spec.ae_title, "--calling-ae", CALLING_AE,
            "--duration", str(cfg.assoc_seconds), "--concurrency", str(cfg.assoc_concurrency)]
    if tls:
        argv += ["--cert", str(cfg.certs.client_cert), "--key", str(cfg.certs.client_key),
                 "--ca", str(cfg.certs.ca)]
    with running(spec, cfg.workdir, tag, certs) as server:
        _echo(server, cfg.certs, 1)
        argv[argv.index("PORT")] = str(server.port)
        cpu0 = cpu_seconds(server.pid)
        run = run_client(argv, timeout=cfg.assoc_seconds + 120)
        cpu = cpu_seconds(server.pid) - cpu0
        alive = server.proc.poll() is None
    if run.returncode != 0:
        raise RuntimeError(f"load generator exited {run.returncode}: {run.tail()}")
    result = json.loads(run.output.strip().splitlines()[-1])
    ok = result["ok"]
    out = {"value": round(ok / result["elapsed"], 1), "unit": "/s",
           "per_server_cpu_s": round(ok / cpu, 1) if cpu > 0 and ok else None,
           "server_cpu_s": round(cpu, 3), "client_cpu_s": round(run.cpu, 3),
           "concurrency": cfg.assoc_concurrency, **result}
    if not alive:
        out["server_died"] = True
    return out


MEASURES = {
    "store": measure_store,
    "big": measure_big,
    "echo": measure_echo,
    "assoc": measure_assoc,
}
