"""Hostile review of the C-STORE write path (Part10Writer on a raw descriptor, write_all):
a failing or deviating file system gets a clear refusal, never a hang or a partial file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiodicom.app.archive.storage import Storage, StorageError, StorageFailure, StorageSettings

from .test_storage import EXPLICIT, encode, make_dataset, store


def test_a_write_that_takes_nothing_is_refused_not_retried_forever(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """writev and write returning 0 for a non-empty buffer (a deviating file system, FUSE):
    write_all retried forever and hung the event loop; now the store is refused as an I/O
    error and nothing is left."""
    calls = [0]

    def nothing(fd: int, data: bytes | memoryview) -> int:
        calls[0] += 1
        if calls[0] > 1000:
            raise AssertionError("write_all keeps retrying a write that returns 0")
        return 0

    monkeypatch.setattr(os, "writev", lambda fd, buffers: 0)
    monkeypatch.setattr(os, "write", nothing)
    storage = Storage(StorageSettings(root=tmp_path / "store"))
    with pytest.raises(StorageError, match="wrote nothing") as caught:
        store(storage, encode(make_dataset(), EXPLICIT))
    assert caught.value.failure is StorageFailure.IO_ERROR
    assert [p for p in (tmp_path / "store").rglob("*") if p.is_file()] == []
