"""Storage commitment through the real command line against `aiodicom serve`:
`aiodicom store --commit` and `aiodicom commit`, with their exit codes."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pydicom

from tests.app.server.test_serve_cli import ServeProcess, cli
from tests.conftest import write_ct


def test_store_commit_and_commit_against_serve(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    files = [write_ct(tmp_path / "in" / f"ct{i}.dcm", size=2048 + 2 * i) for i in range(3)]
    never_sent = write_ct(tmp_path / "never.dcm")
    server = ServeProcess.start("--port", "0", "--storage", tmp_path / "store")
    port = str(server.ports["dicom"])
    try:
        stored = cli("store", "127.0.0.1", port, tmp_path / "in", "-q", "--commit")
        assert stored.returncode == 0, stored.stdout + stored.stderr
        assert "committed 3 of 3 instance(s)" in stored.stdout

        again = cli("commit", "127.0.0.1", port, files[0], files[2])
        assert again.returncode == 0, again.stdout + again.stderr
        assert "committed 2 of 2" in again.stdout

        missing = cli("commit", "127.0.0.1", port, files[1], never_sent)
        assert missing.returncode == 1, missing.stdout + missing.stderr
        assert "committed 1 of 2" in missing.stdout
        assert f"NOT COMMITTED {never_sent}: not committed: 0x0112" in missing.stdout
        assert str(files[1]) not in missing.stdout

        # the file on disk is the truth: remove one and it is no longer committed
        uid = str(pydicom.dcmread(files[2]).SOPInstanceUID)
        (held,) = (tmp_path / "store").rglob(f"{uid}.dcm")
        held.unlink()
        gone = cli("commit", "127.0.0.1", port, files[2])
        assert gone.returncode == 1 and "0x0112" in gone.stdout

        # sent now (over two associations asked for, one used): committed
        late = cli("store", "127.0.0.1", port, never_sent, "-q", "--commit", "--associations",
                   "2")
        assert late.returncode == 0, late.stdout + late.stderr
        assert "committed 1 of 1" in late.stdout
    finally:
        assert server.stop() == 0


def test_commit_refuses_a_file_that_is_not_dicom(tmp_path: Path) -> None:
    junk = tmp_path / "junk.txt"
    junk.write_text("not dicom")
    result = cli("commit", "127.0.0.1", "9", junk)
    assert result.returncode == 1 and "junk.txt" in result.stderr


def test_commit_help_names_the_contract() -> None:
    result = cli("commit", "--help")
    assert result.returncode == 0 and "HOST" not in result.stderr
    assert "PATH" in result.stdout and "--timeout" in result.stdout
    store = cli("store", "--help")
    assert "--commit" in store.stdout


def _pynetdicom_store_commit_scp(keep: set[str]) -> Any:
    """A pynetdicom Storage + Storage Commitment SCP; commits only the UIDs in ``keep``."""
    from pydicom.dataset import Dataset
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import (  # type: ignore[attr-defined]
        CTImageStorage,
        StorageCommitmentPushModel,
    )

    ae = AE(ae_title="PYSCP")
    ae.add_supported_context(CTImageStorage)
    ae.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)

    def on_store(event: Any) -> int:
        return 0x0000

    def on_action(event: Any) -> Any:
        info = event.action_information

        def report() -> None:
            ds = Dataset()
            ds.TransactionUID = info.TransactionUID
            ok = [i for i in info.ReferencedSOPSequence if i.ReferencedSOPInstanceUID in keep]
            bad = [i for i in info.ReferencedSOPSequence if i not in ok]
            for item in bad:
                item.FailureReason = 0x0110
            if ok:
                ds.ReferencedSOPSequence = ok
            if bad:
                ds.FailedSOPSequence = bad
            event.assoc.send_n_event_report(ds, 2 if bad else 1, StorageCommitmentPushModel,
                                            "1.2.840.10008.1.20.1.1")

        threading.Thread(target=report, daemon=True).start()
        return 0x0000, None

    return ae.start_server(("127.0.0.1", 0), block=False,
                           evt_handlers=[(evt.EVT_C_STORE, on_store),
                                         (evt.EVT_N_ACTION, on_action)])


def test_store_commit_against_pynetdicom_scp(tmp_path: Path) -> None:
    files = [write_ct(tmp_path / f"ct{i}.dcm") for i in range(2)]
    uids = [str(pydicom.dcmread(f).SOPInstanceUID) for f in files]
    server = _pynetdicom_store_commit_scp({uids[0]})
    port = str(server.socket.getsockname()[1])
    try:
        result = cli("store", "127.0.0.1", port, *files, "-q", "--commit")
    finally:
        server.shutdown()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "sent 2 of 2" in result.stdout and "committed 1 of 2" in result.stdout
    assert f"NOT COMMITTED {files[1]}: not committed: 0x0110" in result.stdout
    assert str(files[0]) not in result.stdout.split("committed 1 of 2")[1]
