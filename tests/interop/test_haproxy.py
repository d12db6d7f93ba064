"""The real HAProxy 2.6 (``mode tcp``, ``send-proxy-v2``) in front of `aiodicom serve
--proxy-protocol` over mutual TLS, with the DICOM health check of examples/haproxy.cfg.

- DCMTK echoscu +tls through HAProxy succeeds; the node's log and audit trail name
  127.0.0.1 with the client's own source port (HAProxy's log says which it was), not the
  port HAProxy connected from.
- The health check is a real association (A-ASSOCIATE-RQ for Verification, C-ECHO,
  A-RELEASE-RQ over TLS with a client certificate): a live node is UP with a layer-7 pass,
  a killed node goes DOWN, and a port that accepts TCP but speaks no DICOM never passes.
- examples/haproxy.cfg carries exactly the bytes the library encodes for its AE titles.
"""

from __future__ import annotations

import asyncio
import csv
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from aiodicom.app import pki
from aiodicom.core.dimse import CEchoRQ, encode_message, fragment_command
from aiodicom.core.negotiation import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    VERIFICATION_SOP_CLASS,
    build_request,
)
from aiodicom.core.pdu import AReleaseRQ, encode_pdu
from tests.app.server.test_serve_cli import ServeProcess
from tests.interop.peers import dcmtk, run_tool
from tests.services.haproxy import HAProxyServer, start_haproxy, tcp_config

pytestmark = pytest.mark.interop

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "haproxy.cfg"
NODE_AE = "AIODICOM"
CHECK_AE = "HAPROXY-CHECK"


def health_check_rules(calling_ae: str = CHECK_AE, called_ae: str = NODE_AE) -> list[str]:
    """The ``tcp-check`` lines of a DICOM health check: associate for Verification, C-ECHO,
    release; each step must get its answer (AC, C-ECHO-RSP status 0x0000, RP).

    HAProxy matches ``rbinary`` against the hex (upper case) of what it has read so far.
    """
    rq = encode_pdu(build_request(
        called_ae=called_ae, calling_ae=calling_ae,
        contexts=[(VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN])],
        max_pdu_length=16384))
    echo = b"".join(b"".join(bytes(p) for p in pdu) for pdu in fragment_command(
        1, encode_message(CEchoRQ(message_id=1, affected_sop_class_uid=VERIFICATION_SOP_CLASS)),
        16384))
    release = encode_pdu(AReleaseRQ())
    return [
        "option tcp-check",
        "tcp-check comment A-ASSOCIATE-RQ_Verification",
        f"tcp-check send-binary {rq.hex()}",
        "tcp-check expect rbinary ^0200",
        "tcp-check comment C-ECHO-RQ",
        f"tcp-check send-binary {echo.hex()}",
        "tcp-check expect rbinary 00000009020000000000",
        "tcp-check comment A-RELEASE-RQ",
        f"tcp-check send-binary {release.hex()}",
        "tcp-check expect rbinary 0600000000040000",
    ]


@dataclass
class Certs:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    check_pem: Path
    """The health check's client certificate and key in one PEM (HAProxy's ``crt``)."""


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    tmp = tmp_path_factory.mktemp("haproxy-pki")
    root = tmp / "ca"
    pki.init_ca(root)
    server = pki.issue_server(root, name="localhost", ips=["127.0.0.1"], out=tmp / "server")
    client = pki.issue_client(root, ae_titles=["ECHOSCU"], out=tmp / "echoscu")
    check = pki.issue_client(root, ae_titles=[CHECK_AE], out=tmp / "check")
    pem = tmp / "check.pem"
    pem.write_bytes(check.cert.read_bytes() + check.key.read_bytes())
    return Certs(ca=root / "ca.crt", server_cert=server.cert, server_key=server.key,
                 client_cert=client.cert, client_key=client.key, check_pem=pem)


def start_node(certs: Certs, tmp: Path) -> ServeProcess:
    return ServeProcess.start(
        "--ae-title", NODE_AE, "--tls-port", "0", "--cert", certs.server_cert,
        "--key", certs.server_key, "--ca", certs.ca, "--require-ae-binding",
        "--proxy-protocol", "--proxy-from", "127.0.0.1", "--storage", tmp / "storage",
        "--audit-log", tmp / "audit.log", "--log-format", "json",
        expect=("dicom+tls",))


def haproxy_config(frontend: int, nodes: list[int], certs: Certs, workdir: Path) -> str:
    rules = "\n".join(f"    {line}" for line in health_check_rules())
    servers = "\n".join(
        f"    server node{i} 127.0.0.1:{port} send-proxy-v2 check check-ssl "
        f"crt {certs.check_pem} ca-file {certs.ca} verify required "
        "inter 500ms fall 2 rise 2"
        for i, port in enumerate(nodes, 1))
    return f"""global
    maxconn 2000
    log stdout format raw local0 info
    stats socket {workdir / 'haproxy.sock'} mode 600 level admin

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 1m
    timeout server 1m
    timeout check 3s

frontend dicom
    bind 127.0.0.1:{frontend}
    default_backend nodes

backend nodes
{rules}
{servers}
"""


def stats(workdir: Path) -> dict[str, dict[str, str]]:
    """``show stat`` from the admin socket: server name -> its CSV fields."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(5)
        s.connect(str(workdir / "haproxy.sock"))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    rows = csv.DictReader(data.decode().lstrip("# ").splitlines())
    return {row["svname"]: row for row in rows if row["pxname"] == "nodes"}


def wait_for(workdir: Path, server: str, status: str, timeout: float = 30) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    row: dict[str, str] = {}
    while time.monotonic() < deadline:
        row = stats(workdir).get(server, {})
        if row.get("status") == status and row.get("check_status"):
            return row
        time.sleep(0.2)
    raise AssertionError(f"{server} never became {status}: {row}")


@pytest.fixture
def cluster(certs: Certs, tmp_path: Path) -> Iterator[tuple[HAProxyServer, ServeProcess]]:
    node = start_node(certs, tmp_path)
    try:
        port = node.ports["dicom+tls"]
        with start_haproxy(tmp_path / "haproxy",
                           lambda front: haproxy_config(front, [port], certs,
                                                        tmp_path / "haproxy")) as haproxy:
            yield haproxy, node
    finally:
        assert node.stop() in (0, -signal.SIGKILL), node.log()


def test_echoscu_through_haproxy_is_seen_with_its_own_address(
        cluster: tuple[HAProxyServer, ServeProcess], certs: Certs, tmp_path: Path) -> None:
    haproxy, node = cluster
    wait_for(tmp_path / "haproxy", "node1", "UP")
    code, out = asyncio.run(run_tool(
        dcmtk("echoscu"), "+tls", str(certs.client_key), str(certs.client_cert),
        "+cf", str(certs.ca), "-aet", "ECHOSCU", "-aec", NODE_AE,
        "127.0.0.1", str(haproxy.port)))
    assert code == 0, out
    # HAProxy's tcplog names the client's source port once the session ends (the session
    # with no bytes is start_haproxy's own readiness probe).
    client_ports: list[int] = []
    deadline = time.monotonic() + 10
    while not client_ports and time.monotonic() < deadline:
        text = haproxy.process.log_path.read_text(errors="replace")
        client_ports = [int(port) for port, sent in re.findall(
            r"127\.0\.0\.1:(\d+) \[[^]]+\] dicom \S+ \S+ (\d+) ", text) if int(sent)]
        time.sleep(0.1)
    assert len(client_ports) == 1, text
    records = [json.loads(line) for line in node.lines if line.startswith("{")]
    ended = [r for r in records if r.get("calling_ae") == "ECHOSCU"]
    assert ended and ended[0]["how"] == "released", node.log()
    assert {r["peer"] for r in ended} == {f"127.0.0.1:{client_ports[0]}"}, ended
    audit = (tmp_path / "audit.log").read_text()
    assert re.search(r'UserName="ECHOSCU" NetworkAccessPointID="127\.0\.0\.1"', audit), audit
    # The health checks were associations too: released, from HAProxy itself, no errors.
    checks = [r for r in records if r.get("calling_ae") == CHECK_AE]
    assert checks and all(r["peer"].startswith("127.0.0.1:") for r in checks), node.log()
    assert {r["how"] for r in checks} == {"released"}, checks
    assert [r for r in records if r.get("level") == "info"], node.log()
    assert not [r for r in records if r.get("level") in ("warning", "error")], node.log()


def test_dicom_health_check_marks_live_up_and_killed_down(
        cluster: tuple[HAProxyServer, ServeProcess], tmp_path: Path) -> None:
    _, node = cluster
    row = wait_for(tmp_path / "haproxy", "node1", "UP")
    assert row["check_status"] == "L7OK", row
    node.stop(signal.SIGKILL)
    row = wait_for(tmp_path / "haproxy", "node1", "DOWN")
    assert row["check_status"] in ("L4CON", "L4TOUT", "L6RSP", "L6TOUT"), row


def test_health_check_fails_a_port_that_speaks_no_dicom(certs: Certs, tmp_path: Path) -> None:
    """A listener that accepts TCP (and even TLS would do) but never answers DICOM is DOWN."""
    with socket.socket() as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)  # accepts into the backlog, never reads or answers
        port = mute.getsockname()[1]
        workdir = tmp_path / "haproxy"
        with start_haproxy(workdir, lambda front: haproxy_config(front, [port], certs,
                                                                 workdir)):
            row = wait_for(workdir, "node1", "DOWN")
    assert row["check_status"] not in ("L7OK", "L4OK", "L6OK"), row


def test_example_config_carries_the_library_bytes(certs: Certs, tmp_path: Path) -> None:
    """examples/haproxy.cfg's health check is byte for byte what the library encodes for
    its AE titles (HAPROXY-CHECK -> AIODICOM), so the example cannot drift; and HAProxy
    accepts the file as it stands (with this test's certificate paths)."""
    text = EXAMPLE.read_text()
    for line in health_check_rules():
        assert f"    {line}\n" in text, line
    assert "send-proxy-v2" in text and "check-ssl" in text and "mode tcp" in text
    local = (text.replace("/etc/haproxy/check.pem", str(certs.check_pem))
             .replace("/etc/haproxy/dicom-ca.crt", str(certs.ca))
             .replace("/run/haproxy/admin.sock", str(tmp_path / "admin.sock")))
    assert f"crt {certs.check_pem} ca-file {certs.ca} " in local
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(local)
    done = subprocess.run(["/usr/sbin/haproxy", "-c", "-f", str(cfg)], capture_output=True,
                          text=True, timeout=30, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_plain_tcp_checks_are_routine_for_the_node(certs: Certs, tmp_path: Path) -> None:
    """HAProxy's default check with send-proxy-v2: a LOCAL header, then a reset, every
    500 ms. The node counts them as probes at debug level: no warning, no failed handshake,
    no association (REFERENCE.md, "Running the cluster parts on these machines")."""
    node = ServeProcess.start(
        "--ae-title", NODE_AE, "--tls-port", "0", "--cert", certs.server_cert,
        "--key", certs.server_key, "--ca", certs.ca, "--proxy-protocol",
        "--storage", tmp_path / "storage", "--log-format", "json", "--log-level", "debug",
        expect=("dicom+tls",))
    try:
        port = node.ports["dicom+tls"]
        workdir = tmp_path / "haproxy"
        with start_haproxy(workdir, lambda front: tcp_config(front, [("127.0.0.1", port)])):
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                probes = [line for line in node.lines if "health check" in line
                          or "closed before its PROXY header" in line]
                if len(probes) >= 6:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("no HAProxy checks reached the node:\n" + node.log())
    finally:
        assert node.stop() == 0, node.log()
    records = [json.loads(line) for line in node.lines if line.startswith("{")]
    loud = [r for r in records if r["level"] in ("warning", "error")
            or r["message"].startswith("association")]
    assert not loud, loud
    # One client connection did reach the node through HAProxy and closed without a TLS
    # handshake: start_haproxy's readiness probe. Every check after it was a probe.
    failed = [r for r in records if r["message"].startswith("a TLS handshake failed")]
    assert len(failed) <= 1, failed
