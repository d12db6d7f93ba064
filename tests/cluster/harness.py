"""Building blocks of the cluster suite: a PKI, `aiodicom serve` nodes, DCMTK tools.

Every process runs through tests.services._process.ServiceProcess (own process group, log
file, certain stop), so a failing test leaves nothing running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.services._process import (
    PortInUse,
    ServiceError,
    ServiceProcess,
    free_port,
    require_binary,
)

AIODICOM = Path(sys.executable).with_name("aiodicom")
DCMTK = Path("/usr/bin")
CALLED_AE = "CLUSTER"
PROXY_SOURCE = "127.0.0.3"  # HAProxy connects to the nodes from here; clients use 127.0.0.1
_STORED = re.compile(r"stored (\S+) from")
_LISTENING = "listening for dicom+tls on 127.0.0.1:{port}"


def cli(*args: str | Path, env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``aiodicom ARGS``; fails the test with its output unless it exits 0."""
    done = subprocess.run([str(AIODICOM), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False, env={**os.environ, **(env or {})})
    if done.returncode != 0:
        raise AssertionError(f"aiodicom {' '.join(map(str, args))} exited {done.returncode}:\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True, kw_only=True)
class Pki:
    ca_dir: Path
    server: Credentials
    clients: dict[str, Credentials]

    @property
    def ca(self) -> Path:
        return self.ca_dir / "ca.crt"


def make_pki(workdir: Path, client_aes: Sequence[str]) -> Pki:
    """A CA, one server certificate for every node (localhost, 127.0.0.1), one client per AE."""
    ca_dir = workdir / "ca"
    cli("pki", "init", ca_dir)
    cli("pki", "issue", ca_dir, "server", "--name", "localhost", "--ip", "127.0.0.1",
        "--out", workdir / "server")
    clients = {}
    for ae in client_aes:
        out = workdir / ae.lower()
        cli("pki", "issue", ca_dir, "client", "--ae-title", ae, "--org", "Hospital",
            "--out", out)
        clients[ae] = Credentials(cert=out.with_suffix(".crt"), key=out.with_suffix(".key"))
    return Pki(ca_dir=ca_dir,
               server=Credentials(cert=workdir / "server.crt", key=workdir / "server.key"),
               clients=clients)


@dataclass(kw_only=True)
class Node:
    """One `aiodicom serve` process on its own mutual-TLS port, behind the proxy."""

    name: str
    workdir: Path
    args: list[str]
    env: dict[str, str]
    port: int = 0
    process: ServiceProcess | None = None
    starts: int = 0

    @property
    def log_path(self) -> Path:
        return self.workdir / f"{self.name}.log"

    @property
    def audit_path(self) -> Path:
        return self.workdir / f"{self.name}-audit.xml"

    def start(self, port: int | None = None, attempts: int = 4) -> None:
        """Start (or restart on the same port); waits for its listening line (bounded)."""
        for _ in range(attempts):
            try:
                self._start_once(port or self.port or free_port())
                return
            except PortInUse:
                if port or self.port:
                    raise
        raise ServiceError(f"{self.name}: no free port after {attempts} attempts")

    def _start_once(self, port: int) -> None:
        self.starts += 1
        argv = [str(AIODICOM), "serve", "--host", "127.0.0.1", "--tls-port", str(port),
                "--audit-log", str(self.audit_path), *self.args]
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        # cwd: the node's directory, so a relative path in its arguments lands nowhere else.
        proc = ServiceProcess(self.name, argv, self.log_path, env={**os.environ, **self.env},
                              cwd=self.workdir)
        line = _LISTENING.format(port=port)

        def ready() -> bool:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                return line.encode() in f.read()

        proc.wait_ready(ready, timeout=60, bind_failure=("Address already in use",))
        self.port, self.process = port, proc

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stored_uids(self) -> list[str]:
        """SOP Instance UIDs this node logged as stored (all its runs)."""
        return _STORED.findall(self.log_text())

    def kill(self) -> None:
        """SIGKILL, nothing graceful: the node dies mid-whatever."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.stop()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.alive()


def dcmtk(tool: str) -> Path:
    return require_binary(DCMTK / tool, hint="install Debian's dcmtk (make peers)")


def tls_args(pki: Pki, ae: str) -> list[str]:
    creds = pki.clients[ae]
    return ["+tls", str(creds.key), str(creds.cert), "+cf", str(pki.ca)]


@dataclass(kw_only=True)
class StoreRun:
    """A storescu run: which files the peer acknowledged (status Success), and its output."""

    returncode: int
    output: str
    acknowledged: list[Path] = field(default_factory=list)


_SENDING = re.compile(r"Sending file: (.+)$")


def parse_storescu(output: str) -> list[Path]:
    """Files whose C-STORE-RSP was Success, read from storescu -v output (in order)."""
    acknowledged: list[Path] = []
    current: Path | None = None
    for line in output.splitlines():
        if m := _SENDING.search(line):
            current = Path(m.group(1).strip())
        elif "Received Store Response (Success)" in line and current is not None:
            acknowledged.append(current)
            current = None
    return acknowledged


def storescu_start(pki: Pki, ae: str, port: int, files: Sequence[Path],
                   log_path: Path) -> ServiceProcess:
    """storescu -v +tls in the background (one association for all files)."""
    argv = [str(dcmtk("storescu")), "-v", *tls_args(pki, ae), "-aet", ae, "-aec", CALLED_AE,
            "127.0.0.1", str(port), *map(str, files)]
    return ServiceProcess("storescu", argv, log_path,
                          env={**os.environ, "TCP_NODELAY": "1"})


def storescu(pki: Pki, ae: str, port: int, files: Sequence[Path], log_path: Path,
             timeout: float = 180) -> StoreRun:
    proc = storescu_start(pki, ae, port, files, log_path)
    try:
        code = proc.popen.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"storescu did not finish within {timeout} s") from None
    finally:
        proc.stop()
    output = log_path.read_text(errors="replace")
    return StoreRun(returncode=code, output=output, acknowledged=parse_storescu(output))


def wait_for(predicate: object, what: str, timeout: float = 30.0) -> None:
    """Poll ``predicate()`` until true (bounded); AssertionError naming ``what`` otherwise."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


def write_instances(directory: Path, *, studies: int, per_study: int, size: int,
                    tag: str) -> list[Path]:
    """``studies`` x ``per_study`` CT files (distinct UIDs), named after their SOP UID."""
    from pydicom.uid import generate_uid

    from tests.conftest import write_ct

    directory.mkdir(parents=True, exist_ok=True)
    files = []
    for s in range(studies):
        study = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
        series = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
        for _ in range(per_study):
            sop = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
            files.append(write_ct(directory / f"{tag}-{s}-{sop}.dcm", size=size,
                                  sop_instance_uid=sop, study_uid=study, series_uid=series))
    return files


def sop_uid(path: Path) -> str:
    """The SOP Instance UID write_instances put in the file name."""
    return path.stem.rsplit("-", 1)[1]


def per_node_config(frontends: Sequence[tuple[int, int]], source: str) -> str:
    """HAProxy with one frontend per node (frontend port -> node port), send-proxy-v2: a way
    to reach one given node through the same PROXY protocol path as production traffic."""
    parts = ["global\n    maxconn 500\n\ndefaults\n    mode tcp\n    timeout connect 2s\n"
             "    timeout client 1m\n    timeout server 1m\n"]
    for i, (front, node) in enumerate(frontends, 1):
        parts.append(f"\nfrontend direct{i}\n    bind 127.0.0.1:{front}\n"
                     f"    default_backend node{i}\n\nbackend node{i}\n    source {source}\n"
                     f"    server node{i} 127.0.0.1:{node} send-proxy-v2\n")
    return "".join(parts)


def echoscu(pki: Pki, ae: str, port: int, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """echoscu +tls (one association: associate, C-ECHO, release)."""
    return subprocess.run(
        [str(dcmtk("echoscu")), *tls_args(pki, ae), "-aet", ae, "-aec", CALLED_AE,
         "127.0.0.1", str(port)], capture_output=True, text=True, timeout=timeout,
        check=False, env={**os.environ, "TCP_NODELAY": "1"})


def findscu_studies(pki: Pki, ae: str, port: int, out: Path, timeout: float = 60) -> list[str]:
    """findscu +tls, Study Root, STUDY level: the Study Instance UIDs answered."""
    import pydicom

    out.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [str(dcmtk("findscu")), "-S", *tls_args(pki, ae), "-aet", ae, "-aec", CALLED_AE,
         "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientID",
         "-X", "-od", str(out), "127.0.0.1", str(port)],
        capture_output=True, text=True, timeout=timeout, check=False,
        env={**os.environ, "TCP_NODELAY": "1"})
    if done.returncode != 0:
        raise AssertionError(f"findscu exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return [str(pydicom.dcmread(p).StudyInstanceUID) for p in sorted(out.glob("rsp*.dcm"))]
