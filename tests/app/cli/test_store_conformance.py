"""`aiodicom store` against a pynetdicom SCP: exit status like storescu, and conversion
between uncompressed transfer syntaxes (issue 13)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiodicom.app.cli.main import main
from tests.conftest import write_ct

IMPLICIT = "1.2.840.10008.1.2"


@pytest.fixture
def implicit_only_scp() -> Iterator[tuple[int, list[Any]]]:
    """A pynetdicom SCP that takes CT Image Storage in Implicit VR Little Endian only."""
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import CTImageStorage, Verification

    received: list[Any] = []

    def on_store(event: Any) -> int:
        received.append((event.context.transfer_syntax, event.dataset))
        return 0

    ae = AE(ae_title="PYSCP")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, [IMPLICIT])
    scp = ae.start_server(("127.0.0.1", 0), block=False,
                          evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        yield scp.server_address[1], received
    finally:
        scp.shutdown()


@pytest.mark.parametrize("syntax", [
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
])
def test_store_converts_to_the_accepted_uncompressed_syntax(
    tmp_path: Path, implicit_only_scp: tuple[int, list[Any]], syntax: str
) -> None:
    import pydicom

    port, received = implicit_only_scp
    path = write_ct(tmp_path / "ct.dcm", size=64, transfer_syntax=syntax)
    assert main(["store", "127.0.0.1", str(port), str(path), "-aec", "PYSCP", "-q"]) == 0
    ((ts, ds),) = received
    assert ts == IMPLICIT
    original = pydicom.dcmread(path)
    assert ds.SOPInstanceUID == original.SOPInstanceUID
    pixels = original.PixelData
    if syntax == "1.2.840.10008.1.2.2":  # OW words change byte order with the syntax
        pixels = b"".join(pixels[i + 1 : i + 2] + pixels[i : i + 1]
                          for i in range(0, len(pixels), 2))
    assert ds.PixelData == pixels and ds.PatientName == original.PatientName


def test_store_exits_1_when_a_named_file_is_not_dicom(
    tmp_path: Path, implicit_only_scp: tuple[int, list[Any]]
) -> None:
    port, received = implicit_only_scp
    good = write_ct(tmp_path / "good.dcm", size=64, transfer_syntax=IMPLICIT)
    bad = tmp_path / "notes.txt"
    bad.write_text("not DICOM\n")
    argv = ["store", "127.0.0.1", str(port), str(bad), str(good), "-aec", "PYSCP", "-q"]
    assert main(argv) == 1  # storescu exits 1 too
    assert len(received) == 1  # the rest is still sent
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "README").write_text("skipped when found under a folder\n")
    write_ct(folder / "x.dcm", size=64, transfer_syntax=IMPLICIT)
    assert main(["store", "127.0.0.1", str(port), str(folder), "-aec", "PYSCP", "-q"]) == 0
