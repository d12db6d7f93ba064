"""Each service starts, answers, is used as the other tests use it, and is gone after stop."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import socket
import struct
import threading
from pathlib import Path

import pytest

from . import postgres as pg_module
from ._process import PortInUse, ServiceError, port_answers, retry_on_port_in_use
from .azurite import AzuriteServer, start_azurite
from .haproxy import start_haproxy, tcp_config
from .moto_s3 import MotoS3, start_moto
from .postgres import PostgresServer, start_postgres

PROXY_V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_postgres_start_use_stop(tmp_path: Path) -> None:
    with start_postgres(tmp_path) as server:
        dsn = server.create_database("svc_test")
        assert dsn.startswith("postgresql://aiodicom:") and dsn.endswith(f":{server.port}/svc_test")

        async def use() -> list[int]:
            import asyncpg

            conn = await asyncpg.connect(dsn, timeout=30)
            try:
                await conn.execute("CREATE TABLE t (n integer)")
                await conn.executemany("INSERT INTO t VALUES ($1)", [(1,), (2,), (3,)])
                return [r["n"] for r in await conn.fetch("SELECT n FROM t ORDER BY n")]
            finally:
                await conn.close()

        assert asyncio.run(use()) == [1, 2, 3]
        with pytest.raises(ServiceError, match="password authentication failed"):
            dataclasses.replace(server, password="wrong").psql("SELECT 1")
        pid, port = server.process.pid, server.port
    assert _gone(pid) and not port_answers(port)


def test_azurite_start_use_stop(tmp_path: Path) -> None:
    with start_azurite(tmp_path) as server:
        server.create_container("svc-test")
        server.create_container("svc-test")  # existing is fine
        server.put_blob("svc-test", "a/b.dcm", b"DICM")
        assert server.list_blobs("svc-test") == ["a/b.dcm"]
        status, body = server.request("GET", "svc-test/a/b.dcm")
        assert (status, body) == (200, b"DICM")
        env = server.env()
        assert env["AZURE_STORAGE_ENDPOINT"] == server.endpoint
        assert env["AZURE_STORAGE_ACCOUNT_NAME"] == "devstoreaccount1"
        pid, port = server.process.pid, server.port
    assert _gone(pid) and not port_answers(port)


def test_moto_start_use_stop(tmp_path: Path) -> None:
    with start_moto(tmp_path) as server:
        server.create_bucket("svc-test")
        server.put_object("svc-test", "x/z.dcm", b"DICM")
        assert server.list_keys("svc-test") == ["x/z.dcm"]
        assert server.get_object("svc-test", "x/z.dcm") == b"DICM"
        # (obstore is not used in the pytest process: its runtime may abort at interpreter
        # exit, REFERENCE.md; the nodes and tools under test use it in their own processes.)
        assert server.env()["AWS_ENDPOINT_URL"] == server.endpoint
        pid, port = server.process.pid, server.port
    assert _gone(pid) and not port_answers(port)


def test_haproxy_passes_tcp_with_proxy_v2_header(tmp_path: Path) -> None:
    backend = socket.socket()
    backend.bind(("127.0.0.1", 0))
    backend.listen()
    backend.settimeout(30)
    received: dict[str, bytes] = {}
    done = threading.Event()

    def handle(conn: socket.socket) -> None:
        with conn:
            conn.settimeout(30)
            data = b""
            while len(data) < 16 + 12 + 4:
                try:
                    chunk = conn.recv(4096)
                except OSError:
                    # HAProxy may reset the readiness probe's connection when it stops
                    # (it did in CI); only the real connection's bytes are asserted below.
                    return
                if not chunk:
                    return
                data += chunk
            if data.endswith(b"ping"):
                received["data"] = data
                conn.sendall(b"pong")
                done.set()

    def serve() -> None:
        # The readiness probe of start_haproxy comes through as a connection with a PROXY
        # header and no data, which HAProxy may keep open a while: each connection gets its
        # own thread, so a lingering probe never holds up the real one (it did, under load).
        while not done.is_set():
            try:
                conn, _ = backend.accept()
            except OSError:  # the 30 s accept timeout, or the socket closed at the end
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    config = tcp_config(0, [("127.0.0.1", backend.getsockname()[1])], check=False)
    assert "send-proxy-v2" in config
    with start_haproxy(tmp_path, lambda port: config.replace("127.0.0.1:0", f"127.0.0.1:{port}",
                                                             1)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=30) as client:
            client.sendall(b"ping")
            assert client.recv(4) == b"pong"
            client_port = client.getsockname()[1]
        assert done.wait(30)
        pid, port = proxy.pid, proxy.port
    backend.close()
    data = received["data"]
    assert data[:12] == PROXY_V2_SIGNATURE
    assert data[12] == 0x21 and data[13] == 0x11  # v2 PROXY, TCP over IPv4
    (length,) = struct.unpack("!H", data[14:16])
    src, dst, sport, dport = struct.unpack("!4s4sHH", data[16:28])
    assert socket.inet_ntoa(src) == "127.0.0.1" and sport == client_port and dport == port
    assert data[16 + length:] == b"ping"
    assert _gone(pid) and not port_answers(port)


def test_haproxy_port_taken_is_reported_for_retry(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(PortInUse), start_haproxy(
                tmp_path, tcp_config(port, [("127.0.0.1", 9)], check=False)):
            pass


def test_retry_on_port_in_use_picks_another_port() -> None:
    tried: list[int] = []

    def start(port: int) -> int:
        tried.append(port)
        if len(tried) == 1:
            raise PortInUse("taken")
        return port

    assert retry_on_port_in_use(start) == tried[1]
    with pytest.raises(ServiceError, match="no free port after 2 attempts"):
        retry_on_port_in_use(lambda port: (_ for _ in ()).throw(PortInUse("x")), attempts=2)


def test_missing_binary_fails_loudly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg_module, "PG_BIN", tmp_path / "nowhere")
    expected = "missing or not executable: install Debian's postgresql"
    with pytest.raises(ServiceError, match=expected), start_postgres(tmp_path):
        pass


def test_session_fixtures(postgres: PostgresServer, azurite: AzuriteServer,
                          moto_s3: MotoS3) -> None:
    assert postgres.psql("SELECT 40 + 2").strip() == "42"
    azurite.create_container("fixture-test")
    assert azurite.list_blobs("fixture-test") == []
    moto_s3.create_bucket("fixture-test")
    assert moto_s3.list_keys("fixture-test") == []
