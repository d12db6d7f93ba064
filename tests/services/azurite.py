"""Azurite's Blob service (the Azure Storage emulator, npm), on its own port.

Containers are created with a Shared Key signed REST PUT (what the Azure SDK sends), so no
Azure SDK is needed; ``env()`` gives the AZURE_STORAGE_* variables app/objstore.py reads.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path

from ._process import (
    ServiceError,
    ServiceProcess,
    listens_on,
    require_binary,
    retry_on_port_in_use,
)

_REPO = Path(__file__).resolve().parents[2]
AZURITE = Path(os.environ.get("AIODICOM_AZURITE",
                              _REPO / ".tools/node_modules/.bin/azurite-blob"))
ACCOUNT = "devstoreaccount1"
# The emulator's well-known development key (public, documented by Microsoft).
KEY = ("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==")
API_VERSION = "2021-08-06"


@dataclass(frozen=True, slots=True, kw_only=True)
class AzuriteServer:
    port: int
    process: ServiceProcess
    account: str = ACCOUNT
    key: str = KEY

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{self.account}"

    def env(self) -> dict[str, str]:
        """The variables app/objstore.py (and obstore's from_env) read for az:// URLs."""
        return {"AZURE_STORAGE_ACCOUNT_NAME": self.account,
                "AZURE_STORAGE_ACCOUNT_KEY": self.key,
                "AZURE_STORAGE_ENDPOINT": self.endpoint,
                "AZURE_ALLOW_HTTP": "true"}

    def request(self, method: str, path: str, query: dict[str, str] | None = None,
                body: bytes = b"", headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """One Shared Key signed request to ``endpoint/path``; (status, body)."""
        query = dict(query or {})
        ms = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": API_VERSION}
        ms.update({k.lower(): v for k, v in (headers or {}).items()
                   if k.lower().startswith("x-ms-")})
        plain = {k: v for k, v in (headers or {}).items() if not k.lower().startswith("x-ms-")}
        if method in ("PUT", "POST"):
            # urllib would add a form Content-Type to any request with data: sign what is sent.
            plain.setdefault("Content-Type", "application/octet-stream")
        content_type = plain.get("Content-Type", "")
        canon_headers = "".join(f"{k}:{ms[k]}\n" for k in sorted(ms))
        resource = f"/{self.account}/{self.account}/{path.lstrip('/')}"
        canon_resource = resource + "".join(
            f"\n{k.lower()}:{query[k]}" for k in sorted(query, key=str.lower))
        to_sign = "\n".join([method, "", "", str(len(body)) if body else "", "", content_type,
                             "", "", "", "", "", ""]) + "\n" + canon_headers + canon_resource
        sig = base64.b64encode(hmac.new(base64.b64decode(self.key), to_sign.encode(),
                                        hashlib.sha256).digest()).decode()
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        url = f"{self.endpoint}/{path.lstrip('/')}" + (f"?{qs}" if qs else "")
        req = urllib.request.Request(url, data=body if method in ("PUT", "POST") else None,
                                     method=method)
        for k, v in {**ms, **plain}.items():
            req.add_header(k, v)
        req.add_header("Authorization", f"SharedKey {self.account}:{sig}")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def create_container(self, name: str) -> None:
        """Create a container (an existing one is fine)."""
        status, body = self.request("PUT", name, {"restype": "container"})
        if status not in (201, 409):
            raise ServiceError(f"Azurite: create container {name!r}: HTTP {status} {body[:300]!r}")

    def put_blob(self, container: str, name: str, data: bytes) -> None:
        """Write one block blob (one PUT: visible only when complete)."""
        status, body = self.request("PUT", f"{container}/{name}", body=data,
                                    headers={"x-ms-blob-type": "BlockBlob"})
        if status != 201:
            raise ServiceError(f"Azurite: put {container}/{name}: HTTP {status} {body[:300]!r}")

    def list_blobs(self, container: str, prefix: str = "") -> list[str]:
        """Names of the blobs in ``container`` under ``prefix`` (one page is enough for tests)."""
        import re

        query = {"restype": "container", "comp": "list", "maxresults": "5000"}
        if prefix:
            query["prefix"] = prefix
        status, body = self.request("GET", container, query)
        if status != 200:
            raise ServiceError(f"Azurite: list {container!r}: HTTP {status} {body[:300]!r}")
        return re.findall(r"<Name>([^<]*)</Name>", body.decode())


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/{ACCOUNT}?comp=list", timeout=2)
    except urllib.error.HTTPError:
        return True  # any HTTP answer (403: unsigned) means it is up
    return True


@contextlib.contextmanager
def start_azurite(workdir: Path) -> Iterator[AzuriteServer]:
    """Start azurite-blob with its data in ``workdir``; stopped on exit."""
    require_binary(AZURITE, hint="run `make peers` (npm install azurite@3.35 in .tools/)")
    workdir.mkdir(parents=True, exist_ok=True)

    def launch(port: int) -> AzuriteServer:
        location = workdir / f"azurite-{port}"
        location.mkdir(exist_ok=True)
        proc = ServiceProcess("azurite", [
            str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
            "--location", str(location), "--skipApiVersionCheck", "--loose",
            "--disableTelemetry", "--silent"], workdir / f"azurite-{port}.log")
        proc.wait_ready(lambda: listens_on(proc.pid, port) and _answers(port),
                        bind_failure=("EADDRINUSE",))
        return AzuriteServer(port=port, process=proc)

    server = retry_on_port_in_use(launch)
    try:
        yield server
    finally:
        server.process.stop()
