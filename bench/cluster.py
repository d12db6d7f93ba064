"""Past one machine, measured on loopback (issue 14 item 7): figures to read, not asserted.

    .venv/bin/python bench/cluster.py                  # 3 repetitions, results/<date>-cluster.md
    .venv/bin/python bench/cluster.py --repeat 1 --no-save          # smoke run

Everything is started here, as in `make test-cluster` (tests/services, tests/cluster/harness):
PostgreSQL, Azurite, moto S3, HAProxy (mode tcp, send-proxy-v2) and `aiodicom serve` nodes over
mutual TLS. The client is aiodicom's own (uvloop, in this process), so no tool start-up is timed.

1. Nodes: 1 node vs 3 nodes behind HAProxy, the same shared PostgreSQL index and Azurite
   storage. Per-association cost: sequential associations (TLS handshake, A-ASSOCIATE,
   C-ECHO, release) through the proxy, ms each. Throughput: 200 x 64 KiB over 8 parallel
   associations, instances/s.
2. Storage: one node without the proxy, 200 x 512 KiB (and 200 x 64 KiB) over one
   association: local files (SQLite index) vs Azure Blob (Azurite) vs S3 (moto), both with
   the PostgreSQL index. The two sizes separate the cost per instance from the cost per MB.

This machine has 2 cores shared with other work: 3 nodes cannot run 3x faster here (they and
the client, proxy, PostgreSQL and the emulators share those cores); the figures show the
overhead of each layer, and docs/deployment.md turns them into a capacity model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.harness import CALLED_AE, PROXY_SOURCE, Node, Pki, make_pki  # noqa: E402
from tests.services.azurite import AzuriteServer, start_azurite  # noqa: E402
from tests.services.haproxy import start_haproxy, tcp_config  # noqa: E402
from tests.services.moto_s3 import MotoS3, start_moto  # noqa: E402
from tests.services.postgres import PostgresServer, start_postgres  # noqa: E402

CT = "1.2.840.10008.5.1.4.1.1.2"
MIB = 1024 * 1024


def write_files(folder: Path, count: int, pixel_bytes: int) -> list[Path]:
    """``count`` CT instances of ``pixel_bytes`` pixel data, 20 per series, one study."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    pixels = bytes((i * 7) & 0xFF for i in range(pixel_bytes))
    study = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
    series = ""
    paths = []
    for n in range(count):
        if n % 20 == 0:
            series = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
        sop = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CT, sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CT, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.PatientName, ds.Modality = "BENCH", "Cluster^Bench", "CT"
        ds.Rows, ds.Columns = pixel_bytes // 1024, 512
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 0, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = pixels
        path = folder / f"{n:05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


# -- the client (this process) ------------------------------------------------------------

def _client_tls(pki: Pki) -> Any:
    from aiodicom.aio import tls

    creds = pki.clients["STORESCU"]
    return tls.client_context(cert=creds.cert, key=creds.key, ca=pki.ca)


async def _store(port: int, files: Sequence[Path], pki: Pki, associations: int) -> float:
    from aiodicom.aio.client import connect, storage_contexts_for
    from aiodicom.settings import AssociationSettings

    ctx = _client_tls(pki)
    contexts = storage_contexts_for(files[:1])
    settings = AssociationSettings(ae_title="STORESCU")

    async def one(chunk: Sequence[Path]) -> None:
        async with connect("127.0.0.1", port, called_ae_title=CALLED_AE, contexts=contexts,
                           settings=settings, tls=ctx, server_hostname="localhost") as assoc:
            for path in chunk:
                status = await assoc.store(path)
                if not status.is_success:
                    raise RuntimeError(f"{path}: status {status}")

    started = time.perf_counter()
    await asyncio.gather(*(one(files[i::associations]) for i in range(associations)))
    return time.perf_counter() - started


async def _echoes(port: int, count: int, pki: Pki) -> float:
    """Seconds per association: connect (TLS), A-ASSOCIATE, C-ECHO, release; sequential."""
    from aiodicom.aio.client import connect
    from aiodicom.settings import AssociationSettings

    ctx = _client_tls(pki)
    settings = AssociationSettings(ae_title="STORESCU")
    started = time.perf_counter()
    for _ in range(count):
        async with connect("127.0.0.1", port, called_ae_title=CALLED_AE, settings=settings,
                           tls=ctx, server_hostname="localhost") as assoc:
            status = await assoc.echo()
            if not status.is_success:
                raise RuntimeError(f"C-ECHO status {status}")
    return (time.perf_counter() - started) / count


def run(coro: Any) -> Any:
    import uvloop

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


# -- the servers --------------------------------------------------------------------------

@contextlib.contextmanager
def nodes(workdir: Path, pki: Pki, count: int, *, storage: str, index: str | None,
          env: dict[str, str], proxy: bool) -> Iterator[int]:
    """``count`` serve nodes (behind HAProxy when ``proxy``); yields the port to connect to."""
    args = ["--ae-title", CALLED_AE, "--cert", str(pki.server.cert), "--key",
            str(pki.server.key), "--ca", str(pki.ca), "--storage", storage,
            "--drain-timeout", "2", "--log-level", "info"]
    if index:
        args += ["--index", index]
    if proxy:
        args += ["--proxy-protocol", "--proxy-from", f"{PROXY_SOURCE}/32"]
    started = [Node(name=f"node{i}", workdir=workdir, args=args, env=env)
               for i in range(1, count + 1)]
    with contextlib.ExitStack() as stack:
        for node in started:
            stack.callback(node.stop)
            node.start()
        if not proxy:
            yield started[0].port
            return

        def config(port: int) -> str:
            return tcp_config(port, [("127.0.0.1", n.port) for n in started],
                              source=PROXY_SOURCE)

        haproxy = stack.enter_context(start_haproxy(workdir, config))
        yield haproxy.port


def _median(values: list[float]) -> float:
    return statistics.median(values)


def bench_nodes(work: Path, pki: Pki, pg: PostgresServer, az: AzuriteServer,
                repeat: int, echoes: int) -> list[dict[str, Any]]:
    files = write_files(work / "files64k", 200, 64 * 1024)
    mb = sum(p.stat().st_size for p in files) / MIB
    rows = []
    for count in (1, 3):
        per_assoc, seconds = [], []
        for r in range(repeat):
            tag = f"n{count}r{r}"
            dsn = pg.create_database(f"bench_{tag}")
            with nodes(work / tag, pki, count, storage=f"az://bench/{tag}", index=dsn,
                       env=az.env(), proxy=True) as port:
                run(_echoes(port, 3, pki))  # warm-up: every node once
                per_assoc.append(run(_echoes(port, echoes, pki)))
                seconds.append(run(_store(port, files, pki, associations=8)))
        s = _median(seconds)
        rows.append({"nodes": count, "ms_per_association": round(_median(per_assoc) * 1e3, 1),
                     "store_seconds": round(s, 2), "instances_per_s": round(200 / s, 1),
                     "mb_per_s": round(mb / s, 1), "runs": seconds})
    return rows


def bench_storage(work: Path, pki: Pki, pg: PostgresServer, az: AzuriteServer, s3: MotoS3,
                  repeat: int) -> list[dict[str, Any]]:
    """Each backend with 200 x 64 KiB and 200 x 512 KiB over one association: two sizes give
    the cost per instance and the cost per MB (t = n * (per_instance + size * per_mb))."""
    sizes = {"64k": write_files(work / "files64k-1", 200, 64 * 1024),
             "512k": write_files(work / "files512k", 200, 512 * 1024)}
    mb = {k: sum(p.stat().st_size for p in v) / MIB for k, v in sizes.items()}
    rows = []
    for backend in ("local files", "Azure Blob (Azurite)", "S3 (moto)"):
        seconds: dict[str, list[float]] = {k: [] for k in sizes}
        for r in range(repeat):
            for size, files in sizes.items():
                tag = f"{backend.split()[0].lower()}{size}r{r}"
                if backend == "local files":
                    storage, index, env = str(work / tag / "storage"), None, {}
                elif backend.startswith("Azure"):
                    storage, env = f"az://bench/{tag}", az.env()
                    index = pg.create_database(f"bench_{tag}")
                else:
                    storage, env = f"s3://bench/{tag}", s3.env()
                    index = pg.create_database(f"bench_{tag}")
                with nodes(work / tag, pki, 1, storage=storage, index=index, env=env,
                           proxy=False) as port:
                    run(_echoes(port, 1, pki))
                    seconds[size].append(run(_store(port, files, pki, associations=1)))
        t64, t512 = _median(seconds["64k"]), _median(seconds["512k"])
        per_mb = (t512 - t64) / (mb["512k"] - mb["64k"])
        per_instance = (t64 - per_mb * mb["64k"]) / 200
        rows.append({"storage": backend, "seconds_64k": round(t64, 2),
                     "seconds_512k": round(t512, 2), "mb_per_s_512k": round(mb["512k"] / t512, 1),
                     "ms_per_instance": round(per_instance * 1e3, 1),
                     "ms_per_mb": round(per_mb * 1e3, 1), "runs": seconds})
    return rows


def report(node_rows: list[dict[str, Any]], storage_rows: list[dict[str, Any]],
           repeat: int) -> str:
    lines = [f"# Cluster bench, {date.today()} (bench/cluster.py, medians of {repeat})", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs shared with other work "
             "(loaded: figures from this machine, not a capacity claim).", "",
             "## 1 node vs 3 nodes behind HAProxy (Azurite + PostgreSQL, mutual TLS)", "",
             "| nodes | ms per association | 200 x 64 KiB, 8 assocs (s) | instances/s | MB/s |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['nodes']} | {r['ms_per_association']} | {r['store_seconds']} | "
              f"{r['instances_per_s']} | {r['mb_per_s']} |" for r in node_rows]
    lines += ["", "## Storage: 200 instances over one association, one node, no proxy", "",
              "| storage | 200 x 64 KiB (s) | 200 x 512 KiB (s) | MB/s (512 KiB) "
              "| ms per instance | ms per MB |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['storage']} | {r['seconds_64k']} | {r['seconds_512k']} | "
              f"{r['mb_per_s_512k']} | {r['ms_per_instance']} | {r['ms_per_mb']} |"
              for r in storage_rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--echoes", type=int, default=30, help="associations timed per run")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aiodicom-cluster-bench-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki", ["STORESCU"])
        with start_postgres(work / "pg") as pg, start_azurite(work / "az") as az, \
                start_moto(work / "s3") as s3:
            az.create_container("bench")
            s3.create_bucket("bench")
            node_rows = bench_nodes(work, pki, pg, az, args.repeat, args.echoes)
            storage_rows = bench_storage(work, pki, pg, az, s3, args.repeat)
    text = report(node_rows, storage_rows, args.repeat)
    print(text)
    if not args.no_save:
        out = ROOT / "bench" / "results" / f"{date.today()}-cluster"
        out.with_suffix(".md").write_text(text)
        out.with_suffix(".json").write_text(json.dumps(
            {"nodes": node_rows, "storage": storage_rows, "repeat": args.repeat}, indent=1))


if __name__ == "__main__":
    main()
