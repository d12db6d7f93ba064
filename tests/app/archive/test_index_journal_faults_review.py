"""Hostile review of the index journal's append on a failing disk (the C-STORE path: each
acknowledged instance is journaled before its success is sent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from aiodicom.app.archive.index_journal import Journal, claim_orphans, entry
from aiodicom.app.archive.storage import StoredInstance, StoreOutcome


def _instance(uid: str) -> StoredInstance:
    return StoredInstance(
        path=Path(f"/srv/dicom/1.2/1.2.3/{uid}.dcm"), sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid=uid, transfer_syntax_uid="1.2.840.10008.1.2.1",
        study_instance_uid="1.2", series_instance_uid="1.2.3", size=2048,
        source_ae_title="STORESCU", received_at=1_764_800_000.5, outcome=StoreOutcome.STORED,
        attributes={"PatientID": "P1"})


def test_an_append_whose_write_takes_nothing_fails_instead_of_spinning(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write returning 0 (a deviating file system): append retried for ever on the
    event loop; now it raises OSError (the caller logs that the instance is not
    journaled) and the next append works."""
    journal = Journal(tmp_path / "journal")
    journal.append(entry(_instance("1.2.3.1")))
    real = os.write
    calls = [0]

    def nothing(fd: int, data: bytes | memoryview) -> int:
        calls[0] += 1
        if calls[0] > 1000:
            raise AssertionError("append keeps retrying a write that returns 0")
        return 0

    monkeypatch.setattr(os, "write", nothing)
    with pytest.raises(OSError):
        journal.append(entry(_instance("1.2.3.2")))
    monkeypatch.setattr(os, "write", real)
    journal.append(entry(_instance("1.2.3.3")))
    journal.close()
    (_, instances), = list(claim_orphans(tmp_path / "journal"))
    assert [i.sop_instance_uid for i in instances] == ["1.2.3.1", "1.2.3.3"]


def test_an_append_after_a_torn_one_is_still_replayed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """ENOSPC half way through an entry leaves part of a line in the journal. The next
    entry (an acknowledged instance) was appended right after that part, on the same line:
    a replay after the process died skipped it as malformed, so it was never indexed. Now
    it starts on a line of its own: only the torn line is skipped."""
    import errno

    journal = Journal(tmp_path / "journal")
    journal.append(entry(_instance("1.2.3.1")))
    real = os.write

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        view = memoryview(data)
        if len(view) > 20:
            return real(fd, view[:20])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(OSError):
        journal.append(entry(_instance("1.2.3.2")))
    monkeypatch.setattr(os, "write", real)
    journal.append(entry(_instance("1.2.3.3")))
    journal.close()
    (_, instances), = list(claim_orphans(tmp_path / "journal"))
    assert [i.sop_instance_uid for i in instances] == ["1.2.3.1", "1.2.3.3"]
