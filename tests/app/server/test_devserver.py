"""`make serve` (python -m aiodicom.app.server.devserver) works on a fresh folder: it creates its
development PKI, serves mutual TLS and plain DICOM, and the commands its banner prints
(echo and store with the dev client certificate) succeed; SIGTERM ends it with 0.

Ports come from the environment as 0 and are read back from the "listening" lines, so
the test runs beside a real `make serve` and other tests.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from aiodicom.app.pki import ensure_dev_pki
from tests.app.server.test_serve_cli import LISTENING, cli
from tests.conftest import write_ct


def test_make_serve_quick_start(tmp_path: Path) -> None:
    env = dict(
        os.environ,
        AIODICOM_DEV_PKI=str(tmp_path / "dev-pki"),
        AIODICOM_STORAGE=str(tmp_path / "storage"),
        AIODICOM_PORT="0",
        AIODICOM_TLS_PORT="0",
        AIODICOM_METRICS="127.0.0.1:0",
        AIODICOM_AUDIT_LOG=str(tmp_path / "audit.log"),
    )
    proc = subprocess.Popen([sys.executable, "-m", "aiodicom.app.server.devserver"], cwd=tmp_path,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ports: dict[str, int] = {}
    lines: list[str] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if m := LISTENING.search(line):
                ports[m.group(1)] = int(m.group(3))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not {"dicom", "dicom+tls"} <= set(ports):
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.02)
        dev = ensure_dev_pki(tmp_path / "dev-pki")  # what the server created, unchanged
        tls = ["--tls", "--cert", dev.client_cert, "--key", dev.client_key, "--ca", dev.ca_cert]
        echo = cli("echo", "127.0.0.1", ports["dicom+tls"], "--calling-ae", "ECHOSCU", *tls)
        assert echo.returncode == 0, echo.stderr
        sop = "1.2.826.0.1.3680043.8.498.777"
        ct = write_ct(tmp_path / "ct.dcm", sop_instance_uid=sop)
        store = cli("store", "127.0.0.1", ports["dicom+tls"], ct, "--calling-ae", "STORESCU",
                    *tls)
        assert store.returncode == 0, store.stderr
        plain = cli("echo", "127.0.0.1", ports["dicom"])
        assert plain.returncode == 0, plain.stderr
        assert [p.name for p in (tmp_path / "storage").rglob("*.dcm")] == [f"{sop}.dcm"]
    finally:
        if proc.poll() is None:
            proc.terminate()
        code = proc.wait(timeout=15)
        reader.join(5)
        banner = proc.stdout.read() if proc.stdout else ""
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert code == 0, "".join(lines)
    assert "mutual TLS on 127.0.0.1" in banner and str(dev.client_cert) in banner
    assert re.search(r"ApplicationActivity|Application Activity", (tmp_path / "audit.log")
                     .read_text()), "the audit trail was not written"
