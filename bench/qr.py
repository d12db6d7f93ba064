"""Q/R scale bench (issue 16 item 9): C-FIND at STUDY level over 100,000 studies and a
3,000-instance C-MOVE against the bundled Q/R, time and the SCP's peak RSS.

    .venv/bin/python bench/qr.py [--studies 100000] [--instances 3000] [--out FILE.md]
                                 [--index postgresql://... | --postgres]

The SCP (aiodicom.aio.Server + app.archive.qr.QueryRetrieve) runs in a child process so
its peak RSS (VmHWM) is its own; the client and the C-MOVE destination run here. The
100,000-study index is written directly (Index.add_many, no files, no C-STORE); the C-MOVE
archive is 3,000 small CT files of one series, indexed by Index.rebuild. With --index URL
(or --postgres: a throw-away PostgreSQL 15 from tests/services), the C-FIND index is that
PostgreSQL database instead of SQLite (the C-MOVE archive stays on SQLite).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(SRC))


def build_index(root: Path, studies: int, index_url: str | None = None) -> float:
    from aiodicom.app.archive.index_pg import PgIndex
    from aiodicom.app.archive.index_writer import open_index
    from aiodicom.app.archive.storage import StoredInstance

    started = time.perf_counter()
    root.mkdir(parents=True, exist_ok=True)
    with open_index(index_url, root) as index:
        batch: list[StoredInstance] = []
        for n in range(studies):
            study = f"2.25.{n + 1}"
            batch.append(StoredInstance(
                path=root / "none.dcm", sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                sop_instance_uid=f"{study}.1.1", transfer_syntax_uid="1.2.840.10008.1.2.1",
                study_instance_uid=study, series_instance_uid=f"{study}.1", size=1,
                source_ae_title="BENCH", received_at=0.0,
                attributes={"PatientID": f"P{n % 20000}", "PatientName": f"Doe^{n % 20000}",
                            "StudyDate": f"2026{1 + n % 12:02d}{1 + n % 28:02d}",
                            "AccessionNumber": f"A{n}", "Modality": "CT"}))
            if len(batch) == 2000:
                index.add_many(batch)
                batch = []
        index.add_many(batch)
        if isinstance(index, PgIndex):
            index.analyze()  # what autovacuum would do soon after such a load
    return time.perf_counter() - started


def build_archive(root: Path, count: int) -> float:
    from tests.app.archive.test_move_loop_stalls import archive

    started = time.perf_counter()
    archive(root, count).close()
    return time.perf_counter() - started


def serve(root: str, dest_port: int, index_url: str | None = None) -> None:
    """The child: a Q/R SCP over ``root``, C-MOVE destination DEST at ``dest_port``."""
    from aiodicom.aio.client import RemoteAE
    from aiodicom.aio.server import Handlers, Server
    from aiodicom.app.archive.qr import QueryRetrieve
    from aiodicom.core.negotiation import EXPLICIT_VR_LITTLE_ENDIAN, AcceptorPolicy
    from aiodicom.core.qr import qr_contexts

    async def main() -> None:
        from aiodicom.app.archive.index_writer import open_index

        qr = QueryRetrieve(Path(root), open_index(index_url, root) if index_url else None)
        policy = AcceptorPolicy(abstract_syntaxes={
            uid: (EXPLICIT_VR_LITTLE_ENDIAN,) for uid, _ in qr_contexts()})
        async with Server(admission=policy, handlers=Handlers(find=qr.find, move=qr.move),
                          move_destinations={"DEST": RemoteAE("127.0.0.1", dest_port)}
                          ) as server:
            _, port = await server.listen()
            print(port, flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

    asyncio.run(main())


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@dataclasses.dataclass
class Row:
    what: str
    seconds: float
    count: int
    rss_mib: float


async def measure(root: Path, kind: str, index_url: str | None = None) -> Row:
    from pydicom.dataset import Dataset

    from aiodicom.aio.client import connect
    from aiodicom.aio.requests import StoreRequest
    from aiodicom.aio.server import Handlers, Server
    from aiodicom.core.dimse import Status
    from aiodicom.core.negotiation import AcceptorPolicy
    from aiodicom.core.qr import qr_contexts

    received = 0

    async def on_store(request: StoreRequest) -> Status:
        nonlocal received
        await request.dataset()
        received += 1
        return Status.SUCCESS

    async with Server(admission=AcceptorPolicy(accept_any_abstract_syntax=True),
                      handlers=Handlers(store=on_store)) as dest:
        _, dest_port = await dest.listen()
        child = subprocess.Popen([sys.executable, __file__, "--serve", str(root), str(dest_port),
                                  *([index_url] if index_url else [])],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdin is not None
            port = int(await asyncio.to_thread(child.stdout.readline))
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            async with connect("127.0.0.1", port, contexts=qr_contexts()) as assoc:
                started = time.perf_counter()
                if kind == "find":
                    query.StudyInstanceUID = ""
                    query.PatientName = ""
                    query.StudyDate = ""
                    query.AccessionNumber = ""
                    count = 0
                    async for _ in assoc.find(query):
                        count += 1
                else:
                    query.StudyInstanceUID = "1.2.3.4.5"
                    result = await assoc.move(query, "DEST")
                    assert result.status == Status.SUCCESS, result
                    count = result.completed
                seconds = time.perf_counter() - started
            rss = peak_rss_mib(child.pid)
        finally:
            if child.stdin is not None:
                child.stdin.close()
            child.wait(10)
    what = "C-FIND STUDY, all studies" if kind == "find" else "C-MOVE one study"
    return Row(what, seconds, count, rss)


DCMQRSCP_CONFIG = """NetworkTCPPort = {port}
MaxPDUSize = 16384
MaxAssociations = 16
HostTable BEGIN
dest = (DEST, 127.0.0.1, {dest_port})
HostTable END
VendorTable BEGIN
VendorTable END
AETable BEGIN
QRSCP {db} R (5, 1024mb) ANY
AETable END
"""


def dcmqridx(db: Path, files: Path) -> float:
    """DCMTK's own index of ``files`` (dcmqridx, 1,000 files per call)."""
    started = time.perf_counter()
    db.mkdir(parents=True, exist_ok=True)
    paths = sorted(str(p) for p in files.rglob("*.dcm"))
    for i in range(0, len(paths), 1000):
        subprocess.run(["/usr/bin/dcmqridx", str(db), *paths[i:i + 1000]], check=True)
    return time.perf_counter() - started


async def measure_dcmqrscp(db: Path) -> Row:
    """The same C-MOVE (our client, our destination) against dcmqrscp --single-process."""
    import socket

    from pydicom.dataset import Dataset

    from aiodicom.aio.client import connect
    from aiodicom.aio.requests import StoreRequest
    from aiodicom.aio.server import Handlers, Server
    from aiodicom.core.dimse import Status
    from aiodicom.core.negotiation import AcceptorPolicy
    from aiodicom.core.qr import qr_contexts

    async def on_store(request: StoreRequest) -> Status:
        await request.dataset()
        return Status.SUCCESS

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with Server(admission=AcceptorPolicy(accept_any_abstract_syntax=True),
                      handlers=Handlers(store=on_store)) as dest:
        _, dest_port = await dest.listen()
        config = db.parent / "dcmqrscp.cfg"
        config.write_text(DCMQRSCP_CONFIG.format(port=port, dest_port=dest_port, db=db))
        child = subprocess.Popen(["/usr/bin/dcmqrscp", "--single-process", "-c", str(config)],
                                 env={**os.environ, "TCP_NODELAY": "1"})
        try:
            await asyncio.sleep(1.0)
            query = Dataset()
            query.QueryRetrieveLevel = "STUDY"
            query.StudyInstanceUID = "1.2.3.4.5"
            peak = [float("nan")]

            async def sample() -> None:  # dcmqrscp's memory is gone once it winds down
                while True:
                    with contextlib.suppress(OSError, ValueError):
                        if (now := peak_rss_mib(child.pid)) == now:
                            peak[0] = now
                    await asyncio.sleep(0.05)

            sampler = asyncio.create_task(sample())
            async with connect("127.0.0.1", port, called_ae_title="QRSCP",
                               contexts=qr_contexts()) as assoc:
                started = time.perf_counter()
                result = await assoc.move(query, "DEST")
                seconds = time.perf_counter() - started
            sampler.cancel()
            rss = peak[0]
        finally:
            child.terminate()
            child.wait(10)
    return Row("C-MOVE one study (dcmqrscp)", seconds, result.completed, rss)


def main(argv: list[str] | None = None) -> int:
    args = argparse.ArgumentParser(description=__doc__)
    args.add_argument("--studies", type=int, default=100_000)
    args.add_argument("--instances", type=int, default=3000)
    args.add_argument("--out", type=Path)
    args.add_argument("--dcmqrscp", action="store_true",
                      help="also the C-MOVE against DCMTK's dcmqrscp (indexed by dcmqridx)")
    args.add_argument("--index", metavar="URL", help="the C-FIND index: postgresql://...")
    args.add_argument("--postgres", action="store_true",
                      help="the C-FIND index in a throw-away PostgreSQL (tests/services)")
    args.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    opts = args.parse_args(argv)
    if opts.serve:
        serve(opts.serve[0], int(opts.serve[1]), *opts.serve[2:3])
        return 0
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(
            dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
        index_url = opts.index
        if opts.postgres:
            from tests.services.postgres import start_postgres

            server = stack.enter_context(start_postgres(Path(tmp) / "pg"))
            index_url = server.create_database("bench")
        find_root, move_root = Path(tmp) / "find", Path(tmp) / "move"
        built = build_index(find_root, opts.studies, index_url)
        made = build_archive(move_root, opts.instances)
        rows = [asyncio.run(measure(find_root, "find", index_url)),
                asyncio.run(measure(move_root, "move"))]
        if opts.dcmqrscp:
            indexed = dcmqridx(Path(tmp) / "dcmtk" / "db", move_root)
            rows.append(asyncio.run(measure_dcmqrscp(Path(tmp) / "dcmtk" / "db")))
            print(f"dcmqridx of {opts.instances} files: {indexed:.1f} s")
    backend = "PostgreSQL" if (opts.index or opts.postgres) else "SQLite"
    lines = [f"{backend} index of {opts.studies} studies written directly: {built:.1f} s; "
             f"{opts.instances} files made and indexed: {made:.1f} s", "",
             "| measure | matches/instances | seconds | per second | SCP peak RSS MiB |",
             "|---|---|---|---|---|"]
    lines += [f"| {r.what} | {r.count} | {r.seconds:.2f} | {r.count / r.seconds:.0f} | "
              f"{r.rss_mib:.0f} |" for r in rows]
    text = "\n".join(lines)
    print(text)
    if opts.out is not None:
        opts.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
