"""Shared fixtures: both event loops, DICOM test files, and a development CA."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import settings

T = TypeVar("T")

# No wall-clock limit on a property example: speed is measured in bench/, never asserted, and
# Hypothesis' default 200 ms deadline turned slow examples into failures on a loaded machine.
settings.register_profile("aiodicom", deadline=None)
settings.load_profile("aiodicom")

# Real PostgreSQL, Azurite and moto S3 servers as session fixtures (tests/services/).
pytest_plugins = ["tests.services.fixtures"]

LOOPS = ["asyncio", "uvloop"]


def make_runner(kind: str) -> Callable[[Coroutine[Any, Any, T]], T]:
    def run(coro: Coroutine[Any, Any, T]) -> T:
        if kind == "uvloop":
            import uvloop

            factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
        else:
            factory = asyncio.new_event_loop
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, 60))

    return run


@pytest.fixture(params=LOOPS)
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Runs a coroutine on the default loop and on uvloop (every network test, both)."""
    return make_runner(request.param)


def write_ct(path: Path, *, size: int = 4096, sop_instance_uid: str | None = None,
             study_uid: str = "1.2.3.4.5", series_uid: str = "1.2.3.4.5.6",
             transfer_syntax: str = "1.2.840.10008.1.2.1") -> Path:
    """A small CT Image Part 10 file whose pixel data is ``size`` bytes (even)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import generate_uid

    sop = sop_instance_uid or generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.PatientID = "PID-1"
    ds.PatientName = "Doe^Jane"
    ds.Modality = "CT"
    ds.StudyDate = "20260101"
    ds.Columns = max(1, min(size // 2, 1024))
    ds.Rows = max(1, size // (2 * ds.Columns))
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes((i * 7) & 0xFF for i in range(size))
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def ct_file(tmp_path: Path) -> Path:
    return write_ct(tmp_path / "ct.dcm")
