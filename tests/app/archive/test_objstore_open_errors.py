"""A credential the store library refuses when the store is built (a malformed Azure account
key) is a ConfigurationError naming the URL, never echoing the key: `aiodicom serve`,
`pki publish` and the trust sources then print one clear line instead of a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from aiodicom.app.objstore import open_store
from aiodicom.errors import ConfigurationError

BAD = {"AZURE_STORAGE_ACCOUNT_NAME": "acct", "AZURE_STORAGE_ACCOUNT_KEY": "SECRET!!notbase64",
       "AZURE_STORAGE_ENDPOINT": "http://127.0.0.1:9/acct"}


def test_a_malformed_key_is_a_configuration_error_without_the_key() -> None:
    with pytest.raises(ConfigurationError, match="az://cont/pre") as info:
        open_store("az://cont/pre", environ=BAD)
    assert "SECRET" not in str(info.value)


def test_serve_says_it_in_one_line_and_exits_non_zero(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", **BAD}
    proc = subprocess.run(
        [sys.executable, "-m", "aiodicom.app.cli.main", "serve", "--port", "0",
         "--storage", "az://cont/pre", "--index", str(tmp_path / "index.sqlite")],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "az://cont/pre" in proc.stderr
    assert "SECRET" not in proc.stderr + proc.stdout
