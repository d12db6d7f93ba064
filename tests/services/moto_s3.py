"""moto's S3 server (``moto_server`` from the venv) on its own port; buckets made over REST.

Like S3, moto refuses multipart parts under 5 MiB except the last: clients must use at least
5 MiB parts (obstore's chunk size).
"""

from __future__ import annotations

import contextlib
import re
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ._process import (
    ServiceError,
    ServiceProcess,
    listens_on,
    require_binary,
    retry_on_port_in_use,
)

MOTO = Path(sys.executable).parent / "moto_server"
REGION = "us-east-1"


@dataclass(frozen=True, slots=True, kw_only=True)
class MotoS3:
    port: int
    process: ServiceProcess
    access_key: str = "testing"
    secret_key: str = "testing"
    region: str = REGION

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The variables app/objstore.py (and obstore's from_env) read for s3:// URLs."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": self.region,
                "AWS_DEFAULT_REGION": self.region, "AWS_ALLOW_HTTP": "true"}

    def _call(self, method: str, path: str, data: bytes = b"") -> tuple[int, bytes]:
        req = urllib.request.Request(f"{self.endpoint}/{path.lstrip('/')}", method=method,
                                     data=data if method == "PUT" else None)
        if method == "PUT":
            req.add_header("Content-Type", "application/octet-stream")
        # moto does not check signatures (it would need SigV4 here), but it treats a request
        # without credentials as anonymous, which object ACLs refuse: name the test account.
        req.add_header("Authorization",
                       f"AWS4-HMAC-SHA256 Credential={self.access_key}/20260101/{self.region}"
                       "/s3/aws4_request, SignedHeaders=host, Signature=unchecked")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def create_bucket(self, name: str) -> None:
        status, body = self._call("PUT", name)
        if status not in (200, 409):
            raise ServiceError(f"moto: create bucket {name!r}: HTTP {status} {body[:300]!r}")

    def put_object(self, bucket: str, key: str, data: bytes) -> None:
        """Write one object (one PUT: visible only when complete)."""
        status, body = self._call("PUT", f"{bucket}/{key}", data)
        if status != 200:
            raise ServiceError(f"moto: put {bucket}/{key}: HTTP {status} {body[:300]!r}")

    def get_object(self, bucket: str, key: str) -> bytes:
        status, body = self._call("GET", f"{bucket}/{key}")
        if status != 200:
            raise ServiceError(f"moto: get {bucket}/{key}: HTTP {status} {body[:300]!r}")
        return body

    def list_keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Keys in ``bucket`` under ``prefix`` (ListObjectsV2, up to 1000: enough for tests)."""
        status, body = self._call("GET", f"{bucket}?list-type=2&max-keys=1000&prefix={prefix}")
        if status != 200:
            raise ServiceError(f"moto: list {bucket!r}: HTTP {status} {body[:300]!r}")
        return re.findall(r"<Key>([^<]*)</Key>", body.decode())


def _answers(port: int) -> bool:
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2)
    except urllib.error.HTTPError:
        return True
    return True


@contextlib.contextmanager
def start_moto(workdir: Path) -> Iterator[MotoS3]:
    """Start moto_server (logs in ``workdir``); stopped on exit."""
    require_binary(MOTO, hint="pip install 'moto[server]' (the dev extra)")
    workdir.mkdir(parents=True, exist_ok=True)

    def launch(port: int) -> MotoS3:
        proc = ServiceProcess("moto_server", [str(MOTO), "-H", "127.0.0.1", "-p", str(port)],
                              workdir / f"moto-{port}.log")
        proc.wait_ready(lambda: listens_on(proc.pid, port) and _answers(port),
                        bind_failure=("Address already in use",))
        return MotoS3(port=port, process=proc)

    server = retry_on_port_in_use(launch)
    try:
        yield server
    finally:
        server.process.stop()
