"""core.part10 files as DCMTK's dcmdump reads them: byte order, meta group, deflate."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from aiodicom.core.part10 import encode_dataset, encode_file_meta, read_part10_info
from tests.interop.peers import dcmtk

CT = "1.2.840.10008.5.1.4.1.1.2"


def _dataset() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = "1.2.3.4"
    ds.PatientName = "Doe^John"
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.PixelRepresentation = 1, 2, 16, 0
    ds.add_new(0x00660022, "OD", bytes(range(1, 9)))  # DoublePointCoordinatesData
    ds.add_new(0x7FE00010, "OW", b"\x01\x02\x03\x04")  # words 0x0201, 0x0403
    return ds


@pytest.mark.parametrize(
    ("ts", "dcmtk_name"),
    [
        ("1.2.840.10008.1.2", "Little Endian Implicit"),
        ("1.2.840.10008.1.2.1", "Little Endian Explicit"),
        ("1.2.840.10008.1.2.1.99", "Deflated Explicit VR Little Endian"),
        ("1.2.840.10008.1.2.2", "Big Endian Explicit"),
    ],
)
def test_dcmdump_reads_the_same_values_in_every_syntax(
    tmp_path: Path, ts: str, dcmtk_name: str
) -> None:
    path = tmp_path / "x.dcm"
    meta = encode_file_meta(sop_class_uid=CT, sop_instance_uid="1.2.3.4", transfer_syntax_uid=ts,
                            source_ae_title="SRC")
    path.write_bytes(meta + encode_dataset(_dataset(), ts))
    assert read_part10_info(path).transfer_syntax_uid == ts
    out = subprocess.run([dcmtk("dcmdump"), "+L", "-q", str(path)], capture_output=True,
                         text=True, check=True).stdout
    assert "(7fe0,0010) OW 0201\\0403" in out  # the words, whatever the byte order
    assert "(0028,0010) US 1 " in out and "(0028,0011) US 2 " in out
    assert "[Doe^John]" in out and "[SRC]" in out
    used = [line for line in out.splitlines() if line.startswith("# Used TransferSyntax")]
    assert used[-1] == f"# Used TransferSyntax: {dcmtk_name}"  # the data set's, after the meta's
    od = next(line for line in out.splitlines() if line.startswith("(0066,0022)"))
    assert "5.4476037220116" in od  # the little endian double of bytes 01..08
