"""Test data: many 512 KiB CT images and one big CT, uncompressed explicit VR little endian.

The big data set is written without ever holding it in memory: pydicom writes everything but
Pixel Data, then the (7FE0,0010) OW header and the pixel bytes are appended in 8 MiB chunks.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = ["big_shape", "folder_bytes", "make_big_ct", "make_ct_series", "pixel_bytes"]

_CHUNK = 8 * 1024 * 1024


def _ct(rows: int, columns: int, study: str, series: str, number: int) -> Dataset:
    """A CT Image Storage data set with no Pixel Data, 16-bit unsigned monochrome."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.Modality = "CT"
    ds.PatientName = "Bench^Macro"
    ds.PatientID = "BENCH0001"
    ds.StudyDate = "20240101"
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = rows
    ds.Columns = columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = "-1024"
    ds.RescaleSlope = "1"
    return ds


def pixel_bytes(size: int) -> bytes:
    """Deterministic, incompressible-looking pixel bytes (so nothing is accidentally cheap)."""
    block = bytes((i * 2654435761 >> 13) & 0xFF for i in range(65536))
    reps, rest = divmod(size, len(block))
    return block * reps + block[:rest]


def make_ct_series(folder: Path, count: int, rows: int = 512, columns: int = 512) -> list[Path]:
    """Write `count` CT images of rows x columns x 16 bit into `folder`; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series = generate_uid(), generate_uid()
    pixels = pixel_bytes(rows * columns * 2)
    paths = []
    for number in range(1, count + 1):
        ds = _ct(rows, columns, study, series, number)
        ds.PixelData = pixels
        ds["PixelData"].VR = "OW"
        path = folder / f"ct{number:04d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def big_shape(size_bytes: int) -> tuple[int, int]:
    """Rows x columns of a 16-bit image with about `size_bytes` of pixel data."""
    columns = 16384
    rows = max(1, min(65535, size_bytes // (columns * 2)))
    return rows, columns


def make_big_ct(path: Path, size_bytes: int) -> int:
    """Write one CT whose Pixel Data is about `size_bytes`; return the pixel data length."""
    rows, columns = big_shape(size_bytes)
    length = rows * columns * 2
    path.parent.mkdir(parents=True, exist_ok=True)  # `--only big` runs no series first
    ds = _ct(rows, columns, generate_uid(), generate_uid(), 1)
    dcmwrite(path, ds, enforce_file_format=True)
    block = pixel_bytes(_CHUNK)
    with path.open("ab") as f:
        # Explicit VR LE, OW: tag, VR, 2 reserved bytes, 32-bit length (PS3.5 7.1.2).
        f.write(struct.pack("<HH2s2xI", 0x7FE0, 0x0010, b"OW", length))
        left = length
        while left:
            n = min(left, len(block))
            f.write(memoryview(block)[:n])
            left -= n
    return length


def folder_bytes(folder: Path) -> tuple[int, int]:
    """(number of files, total bytes) under `folder`, ignoring an index database."""
    count = total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            if name.startswith("index.sqlite"):
                continue
            count += 1
            total += os.path.getsize(os.path.join(root, name))
    return count, total
