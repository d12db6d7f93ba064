"""Issue 17 item 11 (server side): syslog header fields, the workers' TOML, file modes."""

from __future__ import annotations

import socket
from pathlib import Path

from aiodicom.app.server.audit import AuditTrail
from aiodicom.app.server.config import ServeOptions, load_config, merge
from aiodicom.app.server.workers import worker_config


def _syslog_datagram(tmp_path: Path, source_id: str) -> bytes:
    collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    collector.bind(("127.0.0.1", 0))
    collector.settimeout(5)
    try:
        audit = AuditTrail(tmp_path / "a.log", source_id=source_id,
                           syslog=f"127.0.0.1:{collector.getsockname()[1]}")
        audit.application_started()
        audit.close()
        return collector.recv(65535)
    finally:
        collector.close()


def test_syslog_header_survives_an_ae_title_with_a_space(tmp_path: Path) -> None:
    """RFC 5424 §6: APP-NAME is 1*48 PRINTUSASCII; a space would shift PROCID and MSGID."""
    header, bom, _ = _syslog_datagram(tmp_path, "MY PACS").partition(b"\xef\xbb\xbf")
    assert bom
    fields = header.decode("ascii").split(" ")
    assert len(fields) == 8 and fields[7] == ""
    assert fields[3] == "MY_PACS"
    assert fields[4].isdigit() and fields[5] == "DICOM+RFC3881" and fields[6] == "-"


def test_syslog_header_non_ascii_and_empty_app_name(tmp_path: Path) -> None:
    header = _syslog_datagram(tmp_path, "  ").partition(b"\xef\xbb\xbf")[0]
    assert header.decode("ascii").split(" ")[3] == "-"  # NILVALUE, never an empty field
    header = _syslog_datagram(tmp_path, "PÄCS\x7f").partition(b"\xef\xbb\xbf")[0]
    app = header.decode("ascii").split(" ")[3]
    assert app == "P_CS_" and all(33 <= ord(c) <= 126 for c in app)


def test_worker_config_non_bmp_path_and_quotes_round_trip(tmp_path: Path) -> None:
    """A path with a non-BMP character (and quotes, backslashes) reads back unchanged."""
    storage = tmp_path / "st\U0001f600re \"q\" \\ x"
    options = ServeOptions(ae_title="GW 1", port=11112, storage=storage, workers=2,
                           move_destinations={"DEST": "127.0.0.1:104"})
    path = tmp_path / "w.toml"
    path.write_text(worker_config(options), encoding="utf-8")
    back = merge(load_config(path), {})
    assert back.storage == storage
    assert back.ae_title == "GW 1" and back.workers == 1
    assert dict(back.move_destinations) == {"DEST": "127.0.0.1:104"}


def test_index_and_its_wal_shm_are_private(tmp_path: Path) -> None:
    """index.sqlite holds patient names, IDs and birth dates: 0600, like the instances,
    whatever the umask; an index left 0644 by an older version is tightened."""
    import os
    import stat

    from aiodicom.app.archive.index import INDEX_NAME, Index

    old = os.umask(0o022)
    try:
        index = Index.for_root(tmp_path)
        index.query("PATIENT", {})
        names = [INDEX_NAME, INDEX_NAME + "-wal", INDEX_NAME + "-shm"]
        modes = {n: stat.S_IMODE((tmp_path / n).stat().st_mode) for n in names}
        assert modes == dict.fromkeys(names, 0o600)
        index.close()
        (tmp_path / INDEX_NAME).chmod(0o644)
        Index.for_root(tmp_path).close()
        assert stat.S_IMODE((tmp_path / INDEX_NAME).stat().st_mode) == 0o600
    finally:
        os.umask(old)
