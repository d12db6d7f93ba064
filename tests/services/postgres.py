"""A throw-away PostgreSQL 15 server: initdb in a temporary directory, its own port.

initdb and postgres refuse to run as root, so both run as the ``postgres`` system user
(setpriv) in a directory that user owns (outside pytest's 0700 tmp tree, removed on stop).
Clients connect over TCP with a password (scram-sha-256), as a deployment would.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ._process import (
    ServiceError,
    ServiceProcess,
    listens_on,
    require_binary,
    retry_on_port_in_use,
)

PG_BIN = Path(os.environ.get("AIODICOM_PG_BIN", "/usr/lib/postgresql/15/bin"))
SETPRIV = "/usr/bin/setpriv"
USER = "aiodicom"
PASSWORD = "aiodicom-test-pw"
_HINT = "install Debian's postgresql (make peers)"
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Test settings: durability is irrelevant here, start-up and commit latency are not.
_FAST = ("fsync=off", "synchronous_commit=off", "full_page_writes=off", "max_connections=200",
         "shared_buffers=32MB", "log_min_messages=warning", "listen_addresses=127.0.0.1")


def _as_postgres(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv  # already an unprivileged user: run directly
    return [SETPRIV, "--reuid", "postgres", "--regid", "postgres", "--init-groups", *argv]


@dataclass(kw_only=True)
class PostgresServer:
    """A running server; ``dsn`` points at its default database ``aiodicom``."""

    port: int
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD
    database: str = "aiodicom"
    process: ServiceProcess
    _created: set[str] = field(default_factory=set)

    @property
    def dsn(self) -> str:
        return self.dsn_for(self.database)

    def dsn_for(self, database: str) -> str:
        return f"postgresql://{self.user}:{self.password}@{self.host}:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command over TCP with psql; its output, or ServiceError."""
        env = {**os.environ, "PGPASSWORD": self.password, "PGCONNECT_TIMEOUT": "10"}
        proc = subprocess.run(
            [str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
             "-h", self.host, "-p", str(self.port), "-U", self.user, "-d", database, "-c", sql],
            capture_output=True, text=True, env=env, timeout=60, check=False)
        if proc.returncode != 0:
            raise ServiceError(f"psql {sql!r} failed: {proc.stderr.strip()}")
        return proc.stdout

    def create_database(self, name: str) -> str:
        """Create an empty database (isolation between tests); its DSN."""
        if not _NAME.match(name):
            raise ValueError(f"database name {name!r}: use [a-z0-9_], starting with a letter")
        self.psql(f"CREATE DATABASE {name}")
        self._created.add(name)
        return self.dsn_for(name)

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        self._created.discard(name)


def _ready(server: PostgresServer) -> bool:
    proc = subprocess.run(
        [str(PG_BIN / "pg_isready"), "-q", "-h", server.host, "-p", str(server.port)],
        capture_output=True, timeout=10, check=False)
    return proc.returncode == 0


@contextlib.contextmanager
def start_postgres(workdir: Path) -> Iterator[PostgresServer]:
    """Start a server (logs in ``workdir``); stopped (immediate shutdown) and removed on exit."""
    for name in ("initdb", "postgres", "pg_isready", "psql"):
        require_binary(PG_BIN / name, hint=_HINT)
    if os.geteuid() == 0:
        require_binary(SETPRIV, hint="install util-linux")
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError as exc:
            raise ServiceError(f"no 'postgres' system user: {_HINT}") from exc
    workdir.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="aiodicom-pg-"))
    try:
        if os.geteuid() == 0:
            os.chown(base, pw.pw_uid, pw.pw_gid)
        pwfile = base / "pwfile"
        pwfile.write_text(PASSWORD + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, pw.pw_uid, pw.pw_gid)
        data = base / "data"
        init = subprocess.run(
            _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", USER,
                          f"--pwfile={pwfile}", "--auth-local=trust",
                          "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync",
                          "--locale=C"]),
            capture_output=True, text=True, timeout=120, check=False)
        (workdir / "initdb.log").write_text(init.stdout + init.stderr)
        if init.returncode != 0:
            raise ServiceError(f"initdb failed ({init.returncode}): {init.stderr.strip()}")

        def launch(port: int) -> PostgresServer:
            argv = [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(port),
                    "-k", str(base)]
            for setting in _FAST:
                argv += ["-c", setting]
            # SIGQUIT = immediate shutdown: no checkpoint to wait for (fsync is off anyway).
            proc = ServiceProcess("postgres", _as_postgres(argv), workdir / f"postgres-{port}.log",
                                  stop_signal=signal.SIGQUIT)
            server = PostgresServer(port=port, process=proc)
            proc.wait_ready(lambda: listens_on(proc.pid, port) and _ready(server),
                            bind_failure=("could not bind", "Address already in use"))
            return server

        server = retry_on_port_in_use(launch)
        try:
            server.psql(f"CREATE DATABASE {server.database}")
            yield server
        finally:
            server.process.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)
