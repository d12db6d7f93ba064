"""`aiodicom pki publish` from an older copy of the CA directory (a restored backup, a second
admin machine) must not replace a newer CRL in the store: running nodes refuse it as a
rollback, but a node (re)started after it would take it and un-revoke certificates."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import pytest

from aiodicom.app import pki
from aiodicom.app.pki.publish import publish_async
from aiodicom.errors import ConfigurationError

URL = "az://trust/site"


@pytest.fixture
def memory_store(monkeypatch: pytest.MonkeyPatch) -> Any:
    from obstore.store import MemoryStore

    import aiodicom.app.objstore as objstore

    store = MemoryStore()
    monkeypatch.setattr(objstore, "open_store", lambda url, **kw: (store, "site"))
    return store


def _crl_in_store(store: Any) -> bytes:
    import obstore

    async def get() -> bytes:
        return bytes(await (await obstore.get_async(store, "site/crl.pem")).bytes_async())

    return asyncio.run(get())


def test_an_older_crl_is_not_published_over_a_newer_one(tmp_path: Path,
                                                        memory_store: Any) -> None:
    ca = tmp_path / "ca"
    pki.init_ca(ca)
    pki.write_crl(ca)
    backup = tmp_path / "backup"
    shutil.copytree(ca, backup)
    client = pki.issue_client(ca, ae_titles=["CT01"], out=tmp_path / "ct01")
    pki.revoke(ca, client.cert)
    pki.write_crl(ca)
    asyncio.run(publish_async(ca, URL))
    newer = _crl_in_store(memory_store)
    with pytest.raises(ConfigurationError, match="older|rollback|not newer"):
        asyncio.run(publish_async(backup, URL))
    assert _crl_in_store(memory_store) == newer
    asyncio.run(publish_async(ca, URL))  # the same CRL again is fine
