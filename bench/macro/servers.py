"""The three servers under test, started as subprocesses pinned to the server core.

Every server listens on 127.0.0.1 on a port picked by `free_port()` (retried if the server
fails to come up) and stores into a fresh folder under the run's /dev/shm directory.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from macro.procs import CLIENT_ENV, SERVER_CPU, free_port, listening, pinned, stop_process

__all__ = ["Certs", "Running", "SERVERS", "ServerSpec", "make_certs", "running"]

VENV_BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent


@dataclass(frozen=True, slots=True, kw_only=True)
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certs(folder: Path) -> Certs:
    """A CA, a server certificate (localhost, 127.0.0.1) and a client certificate for the
    calling AE title STORESCU, made with `aiodicom pki` (EC P-256)."""
    tool = str(VENV_BIN / "aiodicom")
    for argv in (
        [tool, "pki", "init", str(folder)],
        [tool, "pki", "issue", str(folder), "server", "--name", "localhost",
         "--ip", "127.0.0.1", "--out", str(folder / "server")],
        [tool, "pki", "issue", str(folder), "client", "--ae-title", "STORESCU",
         "--out", str(folder / "client")],
    ):
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return Certs(
        ca=folder / "ca.crt", server_cert=folder / "server.crt",
        server_key=folder / "server.key", client_cert=folder / "client.crt",
        client_key=folder / "client.key",
    )


ArgvBuilder = Callable[[int, Path, "Certs | None"], list[str]]


def _aiodicom(port: int, storage: Path, certs: Certs | None) -> list[str]:
    argv = [str(VENV_BIN / "aiodicom"), "serve", "--storage", str(storage),
            "--log-level", "warning", "--drain-timeout", "1"]
    if certs is None:
        return [*argv, "--port", str(port)]
    return [*argv, "--tls-port", str(port), "--cert", str(certs.server_cert),
            "--key", str(certs.server_key), "--ca", str(certs.ca)]


def _dcmtk(port: int, storage: Path, certs: Certs | None) -> list[str]:
    argv = ["/usr/bin/storescp", "-aet", "STORESCP", "-od", str(storage)]
    if certs is not None:
        argv += ["+tls", str(certs.server_key), str(certs.server_cert),
                 "+cf", str(certs.ca), "-rc"]
    return [*argv, str(port)]


def _pynetdicom(port: int, storage: Path, certs: Certs | None) -> list[str]:
    argv = [sys.executable, str(HERE / "pynetdicom_scp.py"), "--port", str(port),
            "--storage", str(storage)]
    if certs is not None:
        argv += ["--cert", str(certs.server_cert), "--key", str(certs.server_key),
                 "--ca", str(certs.ca)]
    return argv


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerSpec:
    name: str
    label: str
    ae_title: str
    build: ArgvBuilder


SERVERS: dict[str, ServerSpec] = {
    spec.name: spec
    for spec in (
        ServerSpec(name="aiodicom", label="aiodicom", ae_title="AIODICOM", build=_aiodicom),
        ServerSpec(name="dcmtk", label="DCMTK storescp", ae_title="STORESCP", build=_dcmtk),
        ServerSpec(name="pynetdicom", label="pynetdicom SCP", ae_title="PYNETDICOM",
                   build=_pynetdicom),
    )
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Running:
    spec: ServerSpec
    proc: subprocess.Popen[bytes]
    port: int
    storage: Path
    log: Path
    tls: bool

    @property
    def pid(self) -> int:
        return self.proc.pid


def _start(spec: ServerSpec, storage: Path, log: Path, certs: Certs | None) -> Running:
    last = "no attempt"
    for _attempt in range(5):
        port = free_port()
        storage.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                pinned(spec.build(port, storage, certs), SERVER_CPU), env=CLIENT_ENV,
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if listening(port):
                return Running(spec=spec, proc=proc, port=port, storage=storage, log=log,
                               tls=certs is not None)
            time.sleep(0.02)
        last = f"exit code {proc.poll()}" if proc.poll() is not None else "not listening"
        stop_process(proc)
    tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
    raise RuntimeError(f"{spec.label} did not start ({last}); log tail:\n{tail}")


@contextmanager
def running(spec: ServerSpec, workdir: Path, tag: str, certs: Certs | None) -> Iterator[Running]:
    """Start `spec` with fresh storage WORKDIR/TAG/storage; always stop it on exit."""
    base = workdir / tag
    base.mkdir(parents=True, exist_ok=True)
    server = _start(spec, base / "storage", base / "server.log", certs)
    try:
        yield server
    finally:
        stop_process(server.proc)
        shutil.rmtree(server.storage, ignore_errors=True)
