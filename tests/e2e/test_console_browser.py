"""The certificate console in a real browser (Debian's chromium driven by Playwright).

One story, end to end, against `aiodicom serve --console` run as a subprocess: log in with
the printed one-time link, enrol CT01 of Radiology East, download its PEM bundle, store with
DCMTK storescu over mutual TLS using exactly the downloaded files and the command line the
page shows, see an association on Connected now (and abort it from the page), revoke the
certificate and see the next store refused within 10 s (issue 15).

The browser is never downloaded: /usr/bin/chromium must exist (`make peers`), or the test
fails. Set AIODICOM_CONSOLE_SCREENSHOTS=docs/console to refresh the documentation's images.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiodicom.app.pki import ensure_dev_pki, init_ca
from tests.conftest import write_ct

CHROMIUM = Path("/usr/bin/chromium")
STORESCU = Path("/usr/bin/storescu")
ECHOSCU = Path("/usr/bin/echoscu")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
POLICY = """\
default = "deny"

[[rule]]
organization = "Radiology East"
group = "ct"
services = ["verification", "storage"]

[[rule]]
organization = "Radiology East"
services = ["verification", "storage", "query", "retrieve"]
calling_ae = ["PACS*"]
"""


def _wait_for(path: Path, pattern: str, proc: subprocess.Popen[bytes],
              timeout: float = 60.0) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(pattern, path.read_text(errors="replace"))
        if found:
            return found
        assert proc.poll() is None, f"the server exited: {path.read_text()}"
        time.sleep(0.1)
    raise AssertionError(f"{pattern!r} never appeared in {path}: {path.read_text()}")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[dict[str, object]]:
    pki = tmp_path / "pki"
    dev = ensure_dev_pki(pki)
    init_ca(pki, org="Radiology East")
    (tmp_path / "policy.toml").write_text(POLICY)
    out, err = tmp_path / "serve.out", tmp_path / "serve.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from aiodicom.app.cli import main; "
             "sys.exit(main())", "serve", "--tls-port", "0",
             "--cert", str(dev.server_cert), "--key", str(dev.server_key),
             "--ca", str(dev.ca_cert), "--crl", str(dev.crl), "--require-ae-binding",
             "--policy", str(tmp_path / "policy.toml"), "--storage", str(tmp_path / "store"),
             "--audit-log", str(tmp_path / "audit.log"), "--console", "127.0.0.1:0"],
            stdout=fo, stderr=fe, cwd=tmp_path)
    try:
        link = _wait_for(out, r"log in \(once\) with: (\S+)", proc).group(1)
        port = int(_wait_for(err, r"listening for dicom\+tls on 127\.0\.0\.1:(\d+)",
                             proc).group(1))
        yield {"link": link, "port": port, "pki": pki, "audit": tmp_path / "audit.log"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _dcmtk(line: str, cwd: Path, file: Path | None = None,
           timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """Run a command line shown by the console (FILE replaced), DCMTK from /usr/bin."""
    argv = shlex.split(line)
    argv[0] = f"/usr/bin/{argv[0]}"
    if file is not None:
        argv = [str(file) if a == "FILE" else a for a in argv]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TCP_NODELAY": "1"}, check=False)


def test_enrol_download_store_watch_revoke(served: dict[str, object], tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's chromium is missing: run `make peers`"
    assert STORESCU.exists() and ECHOSCU.exists(), "DCMTK is missing: run `make peers`"
    shots = Path(os.environ.get("AIODICOM_CONSOLE_SCREENSHOTS") or tmp_path / "shots")
    shots.mkdir(parents=True, exist_ok=True)
    unpacked = tmp_path / "modality"
    unpacked.mkdir()
    ct = write_ct(tmp_path / "ct.dcm")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(accept_downloads=True, viewport={"width": 1280,
                                                                     "height": 800})
            page.on("dialog", lambda dialog: dialog.accept())
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            # 1. The one-time login link opens a session; used twice, it is refused.
            page.goto(str(served["link"]))
            assert page.url.endswith("/certificates")
            assert page.locator("#admin").inner_text() == "admin"

            # 2. Enrol CT01 of Radiology East, 20 days (so it shows as expiring).
            page.goto(page.url.replace("/certificates", "/enrol"))
            page.screenshot(path=shots / "enrol.png", full_page=True)
            page.fill("input[name=ae_titles]", "CT01")
            page.fill("input[name=org]", "Radiology East")
            page.fill("input[name=groups]", "ct")
            page.fill("input[name=days]", "20")
            page.check("input[name=format][value=pem]")
            page.click("#enrol button[type=submit]")
            page.wait_for_load_state()
            page.wait_for_selector("#download")
            serial = page.locator("#serial").inner_text()
            storescu = page.locator("#cmd-storescu").inner_text()
            echoscu = page.locator("#cmd-echoscu").inner_text()
            assert f" 127.0.0.1 {served['port']} " in f"{storescu} "
            page.screenshot(path=shots / "enrolled.png", full_page=True)
            with page.expect_download() as info:
                page.click("#download")
            bundle = tmp_path / info.value.suggested_filename
            info.value.save_as(bundle)
            with zipfile.ZipFile(bundle) as zf:
                zf.extractall(unpacked)
            names = sorted(p.name for p in unpacked.iterdir())
            assert "ca.crt" in names and "README.txt" in names
            assert sum(n.endswith(".key") for n in names) == 1
            # The key's only copy was the download: not on the server's disk any more.
            assert not list((Path(str(served["pki"])) / "console").rglob("*.key"))

            # 3. Store with exactly what was downloaded, as the page says.
            stored = _dcmtk(storescu, unpacked, ct)
            assert stored.returncode == 0, stored.stderr + stored.stdout

            # 4. Connected now shows a live association of CT01; abort it from the page.
            page.goto(page.url.rsplit("/", 1)[0] + "/connected")
            held = subprocess.Popen(
                [f"/usr/bin/{a}" if i == 0 else a
                 for i, a in enumerate(shlex.split(echoscu) + ["--repeat", "100000000"])],
                cwd=unpacked, env={**os.environ, "TCP_NODELAY": "1"},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                row = page.locator("#associations tbody tr", has_text="CT01")
                row.wait_for(timeout=20_000)  # the page polls /api/associations itself
                assert "Radiology East" in row.inner_text()
                assert "CN=CT01" in row.inner_text()
                page.screenshot(path=shots / "connected.png", full_page=True)
                row.get_by_role("button", name="Abort").click()
                page.locator("#associations tbody tr", has_text="CT01").wait_for(
                    state="detached", timeout=20_000)
                # 10^8 echoes would take days: echoscu ends because its association was
                # aborted (it exits 0 after logging the abort, so the status tells nothing).
                held.wait(timeout=30)
                assert "console abort: aborted association" in Path(
                    str(served["audit"])).read_text()
            finally:
                if held.poll() is None:
                    held.kill()
                    held.wait()

            # 5. The certificates page lists it, highlighted as expiring; revoke it.
            page.goto(page.url.rsplit("/", 1)[0] + "/certificates")
            cert_row = page.locator(f"tr[data-serial='{serial}']")
            assert "expiring" in (cert_row.get_attribute("class") or "")
            assert "CT01" in cert_row.inner_text() and "valid" in cert_row.inner_text()
            page.screenshot(path=shots / "certificates.png", full_page=True)
            cert_row.locator("input[name=reason]").fill("modality stolen")
            cert_row.get_by_role("button", name="Revoke").click()
            page.wait_for_load_state()
            revoked_at = time.monotonic()
            assert "revoked" in page.locator(f"tr[data-serial='{serial}'] td.status").inner_text()

            # 6. The next store with the same files is refused, within 10 s.
            refused = None
            while time.monotonic() - revoked_at < 10.0:
                attempt = _dcmtk(storescu, unpacked, ct, timeout=10)
                if attempt.returncode != 0:
                    refused = attempt
                    break
                time.sleep(0.5)
            assert refused is not None, "the revoked certificate still stores after 10 s"

            # Other pages, for the record (and the docs' screenshots).
            base = page.url.split("/certificates")[0]
            page.goto(base + "/organizations")
            assert "Radiology East" in page.locator("#organizations").inner_text()
            page.screenshot(path=shots / "organizations.png", full_page=True)
            page.goto(base + "/activity?event=console")
            activity = page.locator("#activity").inner_text()
            assert "revoked CN=CT01" in activity and "admin" in activity
            page.screenshot(path=shots / "activity.png", full_page=True)
            page.goto(base + "/policy")
            page.fill("input[name=calling_ae]", "CT01")
            page.fill("input[name=organization]", "Radiology East")
            page.fill("input[name=groups]", "ct")
            page.select_option("select[name=operation]", "C-MOVE")
            page.click("#check button[type=submit]")
            assert "refused" in page.locator("#answer").inner_text()
            page.screenshot(path=shots / "policy.png", full_page=True)
            page.goto(base + "/enrol")
            page.fill("input[name=ae_titles]", "US03")
            page.fill("input[name=org]", "Radiology East")
            page.check("input[name=queue]")
            page.click("#enrol button[type=submit]")
            assert "waiting for an administrator" in page.locator("#filed").inner_text()
            assert "US03" in page.locator("#requests").inner_text()
            page.screenshot(path=shots / "requests.png", full_page=True)
            assert not errors, errors  # no CSP violation or script error in the console

            # The link was consumed: a second browser cannot use it.
            other = browser.new_page()
            response = other.goto(str(served["link"]))
            assert response is not None and response.status == 403
            other.screenshot(path=shots / "login.png", full_page=True)
        finally:
            browser.close()
    audit = Path(str(served["audit"])).read_text()
    assert 'UserID="admin"' in audit and "console revoke" in audit
