"""Storage: Part 10 files written fragment by fragment, atomically, with checked UIDs."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
import zlib
from pathlib import Path

import pytest
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite

from aiodicom.app.archive.index import read_stored_file
from aiodicom.app.archive.storage import (
    HEADER_KEYWORDS,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    DuplicatePolicy,
    InvalidStorageRequest,
    Storage,
    StorageError,
    StorageFailure,
    StorageSettings,
    StoredInstance,
    StoreOutcome,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.826.0.1.3680043.2.1125.1.4"
STUDY = "1.2.826.0.1.3680043.2.1125.1.2"
SERIES = "1.2.826.0.1.3680043.2.1125.1.3"
IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
BIG = "1.2.840.10008.1.2.2"
DEFLATED = "1.2.840.10008.1.2.1.99"


def make_dataset(sop: str = SOP, **values: str) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = sop
    ds.StudyDate = "20240131"
    ds.StudyTime = "101500"
    ds.AccessionNumber = "ACC1"
    ds.Modality = "CT"
    ds.StudyDescription = "Head"
    ds.PatientName = "Müller^Jörg"
    ds.PatientID = "PID1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "M"
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = SERIES
    ds.SeriesNumber = "3"
    ds.InstanceNumber = "7"
    ds.Rows = 2
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def encode(ds: Dataset, syntax: str) -> bytes:
    """The data set bytes in `syntax`, as a C-STORE carries them (no meta)."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.file_meta.MediaStorageSOPClassUID = CT
    ds.file_meta.MediaStorageSOPInstanceUID = SOP
    buffer = io.BytesIO()
    dcmwrite(buffer, ds, enforce_file_format=True)
    data = buffer.getvalue()
    assert data[128:132] == b"DICM"
    (group_length,) = struct.unpack_from("<L", data, 140)
    return data[144 + group_length :]


def store(
    storage: Storage,
    data: bytes,
    syntax: str = EXPLICIT,
    *,
    sop: str = SOP,
    fragment: int = 1000,
) -> StoredInstance:
    view = memoryview(data)
    with storage.begin(
        sop_class_uid=CT,
        sop_instance_uid=sop,
        transfer_syntax_uid=syntax,
        source_ae_title="MODALITY1",
        receiving_ae_title="ARCHIVE",
    ) as writer:
        for start in range(0, len(view), fragment):
            writer.write(view[start : start + fragment])
        return writer.commit()


def visible_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def storage(tmp_path: Path) -> Storage:
    return Storage(StorageSettings(root=tmp_path / "store"))


@pytest.mark.parametrize("syntax", [IMPLICIT, EXPLICIT, BIG, DEFLATED])
def test_part10_file_readable_with_correct_meta(storage: Storage, syntax: str) -> None:
    data = encode(make_dataset(), syntax)
    stored = store(storage, data, syntax)
    assert stored.path == storage.root / STUDY / SERIES / f"{SOP}.dcm"
    assert stored.outcome is StoreOutcome.STORED
    raw = stored.path.read_bytes()
    assert raw[:128] == bytes(128)
    assert raw[128:132] == b"DICM"
    assert raw.endswith(data)  # the data set bytes are stored exactly as received
    assert stored.size == len(raw)
    ds = dcmread(stored.path)
    meta = ds.file_meta
    assert meta.FileMetaInformationVersion == b"\x00\x01"
    assert meta.MediaStorageSOPClassUID == CT
    assert meta.MediaStorageSOPInstanceUID == SOP
    assert meta.TransferSyntaxUID == syntax
    assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
    assert meta.ImplementationVersionName == IMPLEMENTATION_VERSION_NAME
    assert meta.SourceApplicationEntityTitle == "MODALITY1"
    assert meta.SendingApplicationEntityTitle == "MODALITY1"
    assert meta.ReceivingApplicationEntityTitle == "ARCHIVE"
    assert meta.FileMetaInformationGroupLength == len(raw) - len(data) - 144
    assert ds.PatientName == "Müller^Jörg"
    assert ds.StudyInstanceUID == STUDY
    assert stored.transfer_syntax_uid == syntax
    assert stored.attributes["PatientName"] == "Müller^Jörg"
    assert stored.attributes["SeriesNumber"] == "3"
    assert set(stored.attributes) == set(HEADER_KEYWORDS)
    assert visible_files(storage.incoming) == []


def test_attributes_and_read_back(storage: Storage) -> None:
    stored = store(storage, encode(make_dataset(), EXPLICIT))
    assert stored.attributes == {
        "SOPClassUID": CT,
        "SOPInstanceUID": SOP,
        "StudyDate": "20240131",
        "ContentDate": "",
        "AcquisitionDateTime": "",
        "StudyTime": "101500",
        "ContentTime": "",
        "AccessionNumber": "ACC1",
        "Modality": "CT",
        "ReferringPhysicianName": "",
        "StudyDescription": "Head",
        "SeriesDescription": "",
        "PatientName": "Müller^Jörg",
        "PatientID": "PID1",
        "PatientBirthDate": "19700101",
        "PatientSex": "M",
        "StudyInstanceUID": STUDY,
        "SeriesInstanceUID": SERIES,
        "StudyID": "",
        "SeriesNumber": "3",
        "InstanceNumber": "7",
    }
    again = read_stored_file(stored.path)
    assert again.attributes == stored.attributes
    assert again.source_ae_title == "MODALITY1"
    assert (again.sop_instance_uid, again.study_instance_uid) == (SOP, STUDY)
    assert again.size == stored.size


def test_padded_command_uid_accepted(storage: Storage) -> None:
    data = encode(make_dataset(), EXPLICIT)
    stored = store(storage, data, sop=SOP + "\x00")
    assert stored.sop_instance_uid == SOP
    assert stored.path.name == f"{SOP}.dcm"


@pytest.mark.parametrize(
    "bad",
    ["../../etc/passwd", "1.2/3", "1.2.3\\4", "1.2\x00.3", "1." + "2" * 70, "", "1..2", "01.2"],
)
def test_bad_command_uid_writes_nothing(storage: Storage, bad: str) -> None:
    with pytest.raises(InvalidStorageRequest, match="Affected SOP Instance UID") as info:
        storage.begin(
            sop_class_uid=CT, sop_instance_uid=bad, transfer_syntax_uid=EXPLICIT,
            source_ae_title="A",
        )
    assert isinstance(info.value, ValueError)
    assert info.value.failure is StorageFailure.INVALID_REQUEST
    assert visible_files(storage.root) == []


@pytest.mark.parametrize("field", ["sop_class_uid", "transfer_syntax_uid"])
def test_other_bad_command_uids(storage: Storage, field: str) -> None:
    args = {"sop_class_uid": CT, "sop_instance_uid": SOP, "transfer_syntax_uid": EXPLICIT}
    args[field] = "1.2.x"
    with pytest.raises(InvalidStorageRequest):
        storage.begin(**args, source_ae_title="A")
    assert visible_files(storage.root) == []


@pytest.mark.parametrize("ae", ["", "   ", "A" * 17, "BAD\\AE", "NUL\x00", "ÄE"])
def test_bad_ae_title_writes_nothing(storage: Storage, ae: str) -> None:
    with pytest.raises(InvalidStorageRequest, match="AE title"):
        storage.begin(
            sop_class_uid=CT, sop_instance_uid=SOP, transfer_syntax_uid=EXPLICIT,
            source_ae_title=ae,
        )
    assert visible_files(storage.root) == []


def with_raw_uid(keyword: str, tag: int, value: str) -> Dataset:
    ds = make_dataset()
    del ds[keyword]
    ds.add(DataElement(tag, "UI", value, validation_mode=pydicom_config.IGNORE))
    return ds


@pytest.mark.parametrize("bad", ["../../../tmp/x", "1.2/3", "1.2\\3", "1." + "9" * 70, ".."])
@pytest.mark.parametrize(
    ("keyword", "tag"), [("StudyInstanceUID", 0x0020000D), ("SeriesInstanceUID", 0x0020000E)]
)
def test_bad_uid_in_data_stores_nothing(
    storage: Storage, bad: str, keyword: str, tag: int
) -> None:
    data = encode(with_raw_uid(keyword, tag, bad), EXPLICIT)
    with pytest.raises(StorageError, match="Instance UID") as info:
        store(storage, data)
    assert info.value.failure is StorageFailure.INVALID_DATASET
    assert visible_files(storage.root) == []


@pytest.mark.parametrize("keyword", ["StudyInstanceUID", "SeriesInstanceUID"])
def test_missing_uid_in_data_stores_nothing(storage: Storage, keyword: str) -> None:
    ds = make_dataset()
    del ds[keyword]
    with pytest.raises(StorageError, match="not a valid UID: it is empty"):
        store(storage, encode(ds, IMPLICIT), IMPLICIT)
    assert visible_files(storage.root) == []


def test_data_not_matching_command(storage: Storage) -> None:
    data = encode(make_dataset(sop="1.2.3.999"), EXPLICIT)
    with pytest.raises(StorageError, match="SOPInstanceUID") as info:
        store(storage, data)
    assert info.value.failure is StorageFailure.MISMATCH
    ds = make_dataset(SOPClassUID="1.2.840.10008.5.1.4.1.1.4")
    with pytest.raises(StorageError, match="SOPClassUID"):
        store(storage, encode(ds, EXPLICIT))
    assert visible_files(storage.root) == []


@pytest.mark.parametrize(
    ("data", "syntax"),
    [
        (b"", EXPLICIT),
        (b"\x08\x00", EXPLICIT),
        (os.urandom(4096), EXPLICIT),
        (b"\xff" * 300, IMPLICIT),
        (b"not deflate at all" * 10, DEFLATED),
    ],
)
def test_garbage_stores_nothing(storage: Storage, data: bytes, syntax: str) -> None:
    with pytest.raises(StorageError) as info:
        store(storage, data, syntax)
    assert info.value.failure in (StorageFailure.INVALID_DATASET, StorageFailure.MISMATCH)
    assert visible_files(storage.root) == []


def test_truncated_data_set(storage: Storage) -> None:
    data = encode(make_dataset(), EXPLICIT)
    cut = data.index(b"Head") + 2  # inside StudyDescription, before the study UID
    with pytest.raises(StorageError, match="truncated"):
        store(storage, data[:cut])
    assert visible_files(storage.root) == []


def test_wrong_vr_encoding_for_syntax(storage: Storage) -> None:
    data = encode(make_dataset(), IMPLICIT)
    with pytest.raises(StorageError, match="not encoded as its transfer syntax"):
        store(storage, data, EXPLICIT)
    assert visible_files(storage.root) == []


def test_oversized_header_value_refused(storage: Storage) -> None:
    ds = make_dataset()
    ds.add(DataElement(0x00100020, "LO", "x" * 10_000, validation_mode=pydicom_config.IGNORE))
    data = encode(ds, EXPLICIT)
    with pytest.raises(StorageError, match="10000 bytes long"):
        store(storage, data)
    assert visible_files(storage.root) == []


def test_lying_length_allocates_nothing(storage: Storage) -> None:
    data = bytearray(encode(make_dataset(), EXPLICIT))
    at = data.index(b"PID1") - 2  # the PatientID length (explicit VR, 2 bytes)
    data[at : at + 2] = b"\xff\xff"
    with pytest.raises(StorageError):
        store(storage, bytes(data))
    assert visible_files(storage.root) == []


def test_abort_and_context_manager_leave_nothing(storage: Storage) -> None:
    data = encode(make_dataset(), EXPLICIT)
    writer = storage.begin(
        sop_class_uid=CT, sop_instance_uid=SOP, transfer_syntax_uid=EXPLICIT,
        source_ae_title="A",
    )
    assert writer.temp_path.parent == storage.incoming
    assert SOP not in writer.temp_path.name
    writer.write(data[:100])
    assert writer.temp_path.exists()
    writer.abort()
    writer.abort()
    assert writer.finished
    with pytest.raises(StorageError) as info:
        writer.write(b"more")
    assert info.value.failure is StorageFailure.STATE
    with pytest.raises(StorageError):
        writer.commit()
    with pytest.raises(RuntimeError), storage.begin(  # noqa: PT012
        sop_class_uid=CT, sop_instance_uid=SOP, transfer_syntax_uid=EXPLICIT,
        source_ae_title="A",
    ) as other:
        other.write(data)
        raise RuntimeError("connection lost")
    assert other.finished
    assert visible_files(storage.root) == []


def test_commit_twice_refused(storage: Storage) -> None:
    data = encode(make_dataset(), EXPLICIT)
    writer = storage.begin(
        sop_class_uid=CT, sop_instance_uid=SOP, transfer_syntax_uid=EXPLICIT,
        source_ae_title="A",
    )
    writer.write(data)
    stored = writer.commit()
    with pytest.raises(StorageError, match="commit after commit"):
        writer.commit()
    assert visible_files(storage.root) == [stored.path]


@pytest.mark.parametrize("policy", list(DuplicatePolicy))
def test_duplicate_policies(tmp_path: Path, policy: DuplicatePolicy) -> None:
    storage = Storage(StorageSettings(root=tmp_path, duplicates=policy))
    first = store(storage, encode(make_dataset(PatientID="FIRST"), EXPLICIT))
    second_data = encode(make_dataset(PatientID="SECOND"), EXPLICIT)
    if policy is DuplicatePolicy.REJECT:
        with pytest.raises(StorageError, match="already stored") as info:
            store(storage, second_data)
        assert info.value.failure is StorageFailure.DUPLICATE
        expected = "FIRST"
    else:
        second = store(storage, second_data)
        assert second.path == first.path
        if policy is DuplicatePolicy.OVERWRITE:
            assert second.outcome is StoreOutcome.REPLACED
            expected = "SECOND"
        else:
            assert second.outcome is StoreOutcome.KEPT_EXISTING
            expected = "FIRST"
    assert dcmread(first.path).PatientID == expected
    assert visible_files(tmp_path) == [first.path]


def test_default_policy_is_overwrite(tmp_path: Path) -> None:
    assert StorageSettings(root=tmp_path).duplicates is DuplicatePolicy.OVERWRITE


def test_fsync_and_file_mode(tmp_path: Path) -> None:
    storage = Storage(StorageSettings(root=tmp_path, fsync=True, file_mode=0o640))
    stored = store(storage, encode(make_dataset(), EXPLICIT))
    assert stored.path.stat().st_mode & 0o777 == 0o640
    assert dcmread(stored.path).SOPInstanceUID == SOP


def _pixel_data_head(size: int) -> bytes:
    head = encode(make_dataset(), EXPLICIT)
    return head + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, size)


def test_memory_bounded_for_200_mb(storage: Storage) -> None:
    size = 200 * 1024 * 1024
    head = _pixel_data_head(size)
    chunk = memoryview(bytearray(b"\x5a" * (1024 * 1024)))
    tracemalloc.start()
    try:
        writer = storage.begin(
            sop_class_uid=CT, sop_instance_uid=SOP, transfer_syntax_uid=EXPLICIT,
            source_ae_title="BIG",
        )
        writer.write(head)
        for _ in range(size // len(chunk)):
            writer.write(chunk)
        stored = writer.commit()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak
    assert stored.size == stored.path.stat().st_size
    assert stored.size > size + len(head)
    ds = dcmread(stored.path, stop_before_pixels=True)
    assert ds.SOPInstanceUID == SOP
    stored.path.unlink()


def test_deflate_bomb_is_bounded(storage: Storage) -> None:
    ds = make_dataset()
    ds.add_new(0x00090010, "LO", "BOMB")
    ds.add_new(0x00091000, "OB", bytes(64 * 1024 * 1024))  # inflated before the UIDs
    data = encode(ds, DEFLATED)
    del ds
    assert len(data) < 1024 * 1024
    tracemalloc.start()
    try:
        stored = store(storage, data, DEFLATED, fragment=16384)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak
    assert stored.attributes["StudyInstanceUID"] == STUDY
    inflated = zlib.decompressobj(-zlib.MAX_WBITS)
    assert len(inflated.decompress(data, 1 << 20)) > 0


def test_read_stored_file_rejects_non_dicom(tmp_path: Path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(b"hello")
    with pytest.raises(StorageError, match="not a usable DICOM"):
        read_stored_file(path)


def test_purge_incoming_removes_only_old_temporaries(storage: Storage) -> None:
    old = storage.incoming / "crashed.part"
    old.write_bytes(b"partial")
    os.utime(old, (1, 1))
    writer = storage.begin(
        sop_class_uid=CT, sop_instance_uid=SOP, transfer_syntax_uid=EXPLICIT,
        source_ae_title="A",
    )
    keep = storage.incoming / "other-file.txt"
    keep.write_bytes(b"x")
    os.utime(keep, (1, 1))
    assert storage.purge_incoming(older_than=3600) == 1
    assert not old.exists()
    assert writer.temp_path.exists() and keep.exists()
    writer.abort()
