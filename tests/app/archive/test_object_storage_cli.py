"""`aiodicom serve --storage s3://...|az://...` from the command line and TOML: URLs parsed
with clear errors, --index required, credentials from the environment, and exit status 0
after SIGTERM however obstore's runtime behaves at interpreter exit."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from aiodicom.app.objstore import is_store_url, open_store, parse_store_url, path_or_url
from aiodicom.app.server.config import ServeOptions, load_config, merge
from aiodicom.errors import ConfigurationError
from tests.conftest import write_ct
from tests.services.azurite import AzuriteServer
from tests.services.moto_s3 import MotoS3

AIODICOM = str(Path(sys.executable).with_name("aiodicom"))
LISTENING = re.compile(r"listening for dicom on [0-9.]+:(\d+)")


@pytest.mark.parametrize(("url", "scheme", "bucket", "prefix"), [
    ("az://dicom/site/a", "az", "dicom", "site/a"),
    ("s3://my-bucket", "s3", "my-bucket", ""),
    ("S3://my.bucket//a//b/", "s3", "my.bucket", "a/b"),
    ("gs://bucket_1/x", "gs", "bucket_1", "x"),
])
def test_urls_parse(url: str, scheme: str, bucket: str, prefix: str) -> None:
    parsed = parse_store_url(url)
    assert (parsed.scheme, parsed.bucket, parsed.prefix) == (scheme, bucket, prefix)
    assert parsed.key("1.2/3.4/5.dcm") == "/".join(p for p in (prefix, "1.2/3.4/5.dcm") if p)
    assert is_store_url(url)
    assert path_or_url(url) == url


@pytest.mark.parametrize(("url", "message"), [
    ("http://x/y", "not an object-store URL"),
    ("s3://", "bucket name is missing"),
    ("az:///prefix", "container name is missing"),
    ("s3://Bucket/x", "not a valid bucket name"),
    ("s3://ab/x", "not a valid bucket name"),
    ("s3://bucket/../x", "'..' segments"),
    ("s3://key:secret@bucket/x", "endpoints come from the environment"),
    ("s3://bucket/x?versionId=1", "no ?query"),
])
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        parse_store_url(url)
    assert "secret" not in str(caught.value)


def test_paths_stay_paths() -> None:
    assert not is_store_url("/data/storage")
    assert not is_store_url("storage")
    assert path_or_url("/data/storage") == Path("/data/storage")


def test_plain_http_only_to_a_loopback_emulator() -> None:
    """obstore refuses http:// unless allowed; we allow it for 127.0.0.1/localhost only (the
    store is built without a network call, so a remote http endpoint fails on first use)."""
    import obstore

    env = {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": "http://198.51.100.1:9"}
    store, prefix = open_store("s3://bucket/p", environ=env, retry_timeout=0.1)
    assert prefix == "p"
    with pytest.raises(Exception, match="(?i)http"):
        obstore.head(store, "p/x")


def test_an_object_store_needs_an_index_and_a_valid_url(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="give --index too"):
        ServeOptions(port=0, storage="s3://bucket/x").check()
    with pytest.raises(ConfigurationError, match="--storage: .*not a valid bucket name"):
        ServeOptions(port=0, storage="s3://B/x", index=str(tmp_path / "i.sqlite")).check()
    config = tmp_path / "serve.toml"
    config.write_text('storage = "az://dicom/site"\nindex = "/var/lib/aiodicom/index.sqlite"\n')
    options = merge(load_config(config), {"port": 0})
    assert options.storage == "az://dicom/site"  # kept as text: Path would fold the //
    done = subprocess.run([AIODICOM, "serve", "--port", "0", "--storage", "s3://bucket/x"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode != 0
    assert "give --index too" in done.stderr


def test_a_directory_storage_never_imports_obstore(tmp_path: Path) -> None:
    """The optional library is loaded only for an object store (issue 18's RSS floor)."""
    code = ("import sys; from aiodicom.app.server.config import ServeOptions; "
            "from aiodicom.app.server.run import build_server; "
            f"build_server(ServeOptions(port=0, storage={str(tmp_path)!r}).check()); "
            "print('obstore' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert (done.returncode, done.stdout.strip()) == (0, "False"), done.stderr


def _serve(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], int, list[str]]:
    proc = subprocess.Popen([AIODICOM, "serve", "--port", "0", *args], text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **env})
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if m := LISTENING.search(line):
            return proc, int(m.group(1)), lines
    proc.kill()
    proc.wait()
    raise AssertionError("serve did not start:\n" + "".join(lines))


@pytest.mark.parametrize("kind", ["az", "s3"])
def test_serve_stores_into_the_bucket_and_exits_0(tmp_path: Path, kind: str,
                                                 request: pytest.FixtureRequest) -> None:
    """The real command, three runs: credentials from the environment, a C-STORE from
    `aiodicom store`, SIGTERM, exit status 0 every time (not obstore's SIGABRT)."""
    name = f"cli{uuid.uuid4().hex[:10]}"
    if kind == "az":
        azurite: AzuriteServer = request.getfixturevalue("azurite")
        azurite.create_container(name)
        env, keys = azurite.env(), lambda: azurite.list_blobs(name)
    else:
        moto: MotoS3 = request.getfixturevalue("moto_s3")
        moto.create_bucket(name)
        env, keys = moto.env(), lambda: moto.list_keys(name)
    statuses = []
    for n in range(3):
        source = write_ct(tmp_path / f"{n}.dcm", size=2048, study_uid="1.2.3",
                          series_uid="1.2.3.4", sop_instance_uid=f"1.2.3.4.{n + 1}")
        proc, port, lines = _serve(["--storage", f"{kind}://{name}/site",
                                    "--index", str(tmp_path / "index.sqlite")], env)
        try:
            sent = subprocess.run([AIODICOM, "store", "127.0.0.1", str(port), str(source)],
                                  capture_output=True, text=True, timeout=60, check=False)
            assert sent.returncode == 0, sent.stdout + sent.stderr
        finally:
            proc.send_signal(signal.SIGTERM)
            statuses.append(proc.wait(timeout=30))
            assert proc.stderr is not None
            proc.stderr.close()
    assert statuses == [0, 0, 0]
    assert keys() == [f"site/1.2.3/1.2.3.4/1.2.3.4.{n}.dcm" for n in (1, 2, 3)]
