"""The RSS floor of `aiodicom serve` is mostly imports (issue 18 item 3): a default server
(plain port, index and logs on) that answers a C-ECHO and stores an instance must not load
the features it does not use. Each of these cost MB of RSS when they were imported at
start: pydicom with what it pulls in (requests, urllib3, email, http: ~16 MB), cryptography
(~8.5 MB), the PKI library, PyJWT, the console, PostgreSQL, object stores, Prometheus.

The server runs in a subprocess whose modules are written out at exit; the client is the
`aiodicom` command line in other processes.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import write_ct

AIODICOM = str(Path(sys.executable).with_name("aiodicom"))
LISTENING = re.compile(r"listening for dicom(?:\+tls)? on [0-9.]+:(\d+)")

LAZY = (
    "pydicom", "cryptography", "jwt", "requests", "urllib3", "email", "http.client",
    "aiodicom.app.pki.ca", "aiodicom.app.pki.bundle", "aiodicom.app.pki.files",
    "aiodicom.app.pki.revoke", "aiodicom.app.pki.publish",
    "aiodicom.core._dataset_codec", "aiodicom.app.console.web", "aiohttp", "jinja2",
    "asyncpg", "obstore", "aiodicom.app.archive.object_storage",
    "prometheus_client", "aiodicom.app.server.workers",
)
"""Modules a default plain `aiodicom serve` has no use for (packages: any submodule too).
A mutual-TLS server needs cryptography (it parses the client's certificate; its x509 module
imports email), none of the others."""

_SERVER = """
import atexit, sys
out = sys.argv.pop(1)
atexit.register(lambda: open(out, "w").write("\\n".join(sorted(sys.modules))))
from aiodicom.app.cli.main import main
sys.exit(main())
"""


def _loaded(modules: set[str], name: str) -> bool:
    return name in modules or any(m.startswith(name + ".") for m in modules)


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_default_serve_does_not_import_unused_features(tmp_path: Path, transport: str) -> None:
    out = tmp_path / "modules.txt"
    listen: list[str] = ["--port", "0"]
    client: list[str] = []
    if transport == "tls":
        from aiodicom.app.pki import ensure_dev_pki

        dev = ensure_dev_pki(tmp_path / "pki")
        listen = ["--tls-port", "0", "--cert", str(dev.server_cert), "--key",
                  str(dev.server_key), "--ca", str(dev.ca_cert)]
        client = ["--tls", "--cert", str(dev.client_cert), "--key", str(dev.client_key),
                  "--ca", str(dev.ca_cert)]
    proc = subprocess.Popen(
        [sys.executable, "-c", _SERVER, str(out), "serve", "--storage", str(tmp_path / "s"),
         *listen, "--log-level", "info"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    ports: list[int] = []

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if m := LISTENING.search(line):
                ports.append(int(m.group(1)))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not ports:
            assert proc.poll() is None and time.monotonic() < deadline, "".join(lines)
            time.sleep(0.02)
        port = str(ports[0])
        echo = subprocess.run([AIODICOM, "echo", "127.0.0.1", port, *client],
                              capture_output=True, text=True, timeout=60, check=False)
        assert echo.returncode == 0, echo.stderr
        ct = write_ct(tmp_path / "ct.dcm")
        store = subprocess.run([AIODICOM, "store", "127.0.0.1", port, str(ct), "-q", *client],
                               capture_output=True, text=True, timeout=60, check=False)
        assert store.returncode == 0, store.stderr
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, "".join(lines)
        reader.join(5)
        if proc.stderr is not None:
            proc.stderr.close()
    assert list((tmp_path / "s").rglob("*.dcm")), "the instance was not stored"
    modules = set(out.read_text().split())
    assert "aiodicom.aio.server" in modules and "aiodicom.app.archive.storage" in modules
    assert _loaded(modules, "cryptography") == (transport == "tls")
    needed = {"cryptography", "email"} if transport == "tls" else set()  # x509 imports email
    lazy = [name for name in LAZY if name not in needed]
    loaded = [name for name in lazy if _loaded(modules, name)]
    assert loaded == [], f"a default aiodicom serve imported {loaded}"


def test_local_copies_of_pydicom_tables_match_pydicom() -> None:
    """The tables copied so that the server need not import pydicom are pydicom's."""
    from pydicom._uid_dict import UID_dictionary
    from pydicom.charset import convert_encodings, default_encoding
    from pydicom.filereader import ENCODED_VR
    from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

    from aiodicom.app.archive import head
    from aiodicom.app.archive._storage_classes import STORAGE_SOP_CLASSES
    from aiodicom.core.part10 import LONG_VRS

    assert frozenset(vr.encode() for vr in EXPLICIT_VR_LENGTH_32) == LONG_VRS
    assert head._ENCODED_VR == ENCODED_VR
    assert default_encoding == head._DEFAULT_ENCODING
    for term, codec in head._PLAIN_CHARSETS.items():
        assert convert_encodings(term.decode()) == [codec]
    assert list(STORAGE_SOP_CLASSES) == sorted(
        uid for uid, entry in UID_dictionary.items()
        if entry[1] == "SOP Class" and "Storage" in entry[0] and "Commitment" not in entry[0]
    )
