"""Part 10 (PS3.10 §7) and the data set codec (PS3.5 Annex A): core.part10."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import config as pydicom_config
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import UID
from pynetdicom.dsutils import encode as pynetdicom_encode

from aiodicom.core._dataset_codec import _Chunks
from aiodicom.core.part10 import (
    LONG_VRS,
    META_VALUE_LIMIT,
    DatasetCodecError,
    FileMeta,
    NotPart10Error,
    Part10Info,
    TransferSyntaxMismatch,
    decode_dataset,
    encode_dataset,
    encode_file_meta,
    read_file_meta,
    read_part10_info,
    stream_dataset,
)
from aiodicom.errors import DicomError

IMPLICIT = "1.2.840.10008.1.2"
EXPLICIT = "1.2.840.10008.1.2.1"
DEFLATED = "1.2.840.10008.1.2.1.99"
BIG = "1.2.840.10008.1.2.2"
JPEG = "1.2.840.10008.1.2.4.50"
RLE = "1.2.840.10008.1.2.5"
NATIVE = [IMPLICIT, EXPLICIT, DEFLATED, BIG]
CT = "1.2.840.10008.5.1.4.1.1.2"
SOP = "1.2.3.4.5"


def meta(**kw: str) -> bytes:
    args = {"sop_class_uid": CT, "sop_instance_uid": SOP, "transfer_syntax_uid": EXPLICIT}
    args.update(kw)
    return encode_file_meta(**args)  # type: ignore[arg-type]


def element(group: int, elem: int, vr: bytes, value: bytes, *, length: int | None = None) -> bytes:
    """One explicit VR LE element, with an optional lying length."""
    n = len(value) if length is None else length
    if vr in LONG_VRS:
        return struct.pack("<HH2sHL", group, elem, vr, 0, n) + value
    return struct.pack("<HH2sH", group, elem, vr, n) + value


PREFIX = bytes(128) + b"DICM"


def test_long_vrs_are_pydicoms_and_include_sv_uv() -> None:
    assert {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"SQ", b"UT", b"UN", b"UC", b"UR"} < LONG_VRS
    assert {b"SV", b"UV"} < LONG_VRS
    assert b"US" not in LONG_VRS and b"UI" not in LONG_VRS


# -- the File Meta reader ---------------------------------------------------------------------


def test_meta_round_trip_and_pydicom_agrees() -> None:
    data = meta(source_ae_title=" MODALITY ", sending_ae_title="MODALITY",
                receiving_ae_title="ARCHIVE")
    body = encode_dataset(Dataset(), EXPLICIT)
    fp = io.BytesIO(data + body + b"\x08\x00\x16\x00UI\x02\x001\x00")
    found = read_file_meta(fp)
    assert found.dataset_offset == len(data)
    assert fp.tell() == len(data)
    assert found.text(0x00020002) == CT
    assert found.text(0x00020003) == SOP
    assert found.text(0x00020010) == EXPLICIT
    assert found.text(0x00020016) == "MODALITY"
    assert found.text(0x00020018) == "ARCHIVE"
    assert found.text(0x00020099) == ""
    assert found.elements[0x00020001] == b"\x00\x01"
    ds = dcmread(io.BytesIO(data + b"\x08\x00\x16\x00UI\x02\x001\x00"))
    assert ds.file_meta.MediaStorageSOPInstanceUID == SOP
    assert ds.file_meta.SourceApplicationEntityTitle == "MODALITY"
    assert ds.file_meta.FileMetaInformationGroupLength == len(data) - 132 - 12


def test_meta_without_optional_elements() -> None:
    data = meta(implementation_version_name=None)  # type: ignore[arg-type]
    found = read_file_meta(io.BytesIO(data))
    assert 0x00020013 not in found.elements and 0x00020016 not in found.elements
    assert found.dataset_offset == len(data)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"sop_instance_uid": "1.2.x"}, "SOP instance UID"),
        ({"transfer_syntax_uid": ""}, "transfer syntax"),
        ({"source_ae_title": "BAD\\AE"}, "source AE title"),
        ({"receiving_ae_title": "X" * 17}, "receiving AE title"),
        ({"implementation_version_name": "V" * 17}, "implementation version name"),
        ({"implementation_version_name": "TAB\t"}, "implementation version name"),
    ],
)
def test_meta_writer_refuses_what_group_0002_cannot_hold(kw: dict[str, str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        meta(**kw)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "no 'DICM'"),
        (bytes(132), "no 'DICM'"),
        (PREFIX + element(2, 1, b"OB", b"")[:9], "truncated in \\(0002,0001\\)"),
        (PREFIX + element(2, 0x10, b"UI", b"1.2", length=200), "claims 200 bytes but only 3"),
        (PREFIX + element(2, 0x102, b"OB", b"", length=0xFFFFFFF0), "claims 4294967280"),
        (PREFIX + element(2, 0x10, b"UI", b"12") * 1025, "more than 1024 elements"),
    ],
)
def test_meta_reader_refuses(data: bytes, match: str) -> None:
    with pytest.raises(NotPart10Error, match=match) as info:
        read_file_meta(io.BytesIO(data))
    assert isinstance(info.value, DicomError) and isinstance(info.value, ValueError)


def test_meta_reader_skips_long_values_and_stops_at_group_0008() -> None:
    big = b"x" * (META_VALUE_LIMIT + 2)
    tail = element(8, 0x16, b"UI", CT.encode() + b"\x00")
    data = PREFIX + element(2, 0x10, b"UI", b"1.2\x00") + element(2, 0x102, b"OB", big) + tail
    found = read_file_meta(io.BytesIO(data))
    assert set(found.elements) == {0x00020010}
    assert found.text(0x00020010) == "1.2"
    assert found.dataset_offset == len(data) - len(tail)
    assert FileMeta(elements={}, dataset_offset=0).text(0x00020010) == ""


def test_meta_reader_ends_at_a_short_tail() -> None:
    data = PREFIX + element(2, 0x10, b"UI", b"1.2\x00") + b"\x08\x00"
    found = read_file_meta(io.BytesIO(data))
    assert found.dataset_offset == len(data) - 2


# -- read_part10_info / stream_dataset ----------------------------------------------------------


def test_part10_info_and_stream(tmp_path: Path) -> None:
    body = bytes(range(256)) * 41
    path = tmp_path / "x.dcm"
    path.write_bytes(meta() + body)
    info = read_part10_info(path)
    assert info == Part10Info(path=path, sop_class_uid=CT, sop_instance_uid=SOP,
                              transfer_syntax_uid=EXPLICIT, dataset_offset=len(meta()),
                              size=len(meta()) + len(body))
    assert info.dataset_length == len(body)
    chunks = list(stream_dataset(info, 1000))
    assert b"".join(chunks) == body
    assert [len(c) for c in chunks[:-1]] == [1000] * (len(chunks) - 1)
    assert len({id(c) for c in chunks}) == len(chunks)  # fresh buffers


def test_part10_info_refusals_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "plain.txt"
    path.write_bytes(b"hello")
    with pytest.raises(NotPart10Error, match=f"^{path}: not a DICOM Part 10 file"):
        read_part10_info(path)
    no_uid = tmp_path / "no-uid.dcm"
    no_uid.write_bytes(PREFIX + element(2, 0x10, b"UI", b"1.2\x00"))
    with pytest.raises(NotPart10Error, match="lacks MediaStorageSOPClassUID"):
        read_part10_info(no_uid)


# -- the data set codec ---------------------------------------------------------------------------


def image(**kw: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT
    ds.SOPInstanceUID = SOP
    ds.PatientName = "Doe^John"
    ds.Rows, ds.Columns = 2, 2
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.add_new(0x7FE00010, "OW", bytes(range(1, 9)))
    for key, value in kw.items():
        setattr(ds, key, value)
    return ds


def big_endian_vector() -> tuple[Dataset, bytes]:
    """A data set with every multi-byte binary kind, and its Explicit VR Big Endian bytes,
    written out by hand from PS3.5 §7.1.2 and §7.3 (values are words in big endian order)."""
    ds = Dataset()
    ds.add_new(0x00280010, "US", 0x0102)
    ds.add_new(0x00660022, "OD", bytes(range(1, 9)))  # DoublePointCoordinatesData
    ds.add_new(0x00660040, "OL", bytes(range(1, 9)))  # LongPrimitivePointIndexList
    ds.add_new(0x00640009, "OF", bytes(range(1, 5)))  # VectorGridData
    item = Dataset()
    item.add_new(0x00281201, "OW", b"\x01\x02\x03\x04")  # RedPaletteColorLookupTableData
    ds.add_new(0x00081115, "SQ", Sequence([item]))  # ReferencedSeriesSequence
    ds.add_new(0x7FE00001, "OV", bytes(range(1, 9)))  # ExtendedOffsetTable
    ds.add_new(0x7FE00010, "OW", b"\x01\x02\x03\x04")
    item_bytes = b"\x00\x28\x12\x01OW\x00\x00\x00\x00\x00\x04\x02\x01\x04\x03"
    expected = b"".join((
        b"\x00\x08\x11\x15SQ\x00\x00" + struct.pack(">L", 8 + len(item_bytes)),
        b"\xff\xfe\xe0\x00" + struct.pack(">L", len(item_bytes)) + item_bytes,
        b"\x00\x28\x00\x10US\x00\x02\x01\x02",
        b"\x00\x64\x00\x09OF\x00\x00\x00\x00\x00\x04\x04\x03\x02\x01",
        b"\x00\x66\x00\x22OD\x00\x00\x00\x00\x00\x08\x08\x07\x06\x05\x04\x03\x02\x01",
        b"\x00\x66\x00\x40OL\x00\x00\x00\x00\x00\x08\x04\x03\x02\x01\x08\x07\x06\x05",
        b"\x7f\xe0\x00\x01OV\x00\x00\x00\x00\x00\x08\x08\x07\x06\x05\x04\x03\x02\x01",
        b"\x7f\xe0\x00\x10OW\x00\x00\x00\x00\x00\x04\x02\x01\x04\x03",
    ))
    return ds, expected


def test_big_endian_swaps_binary_values_as_ps3_5_says() -> None:
    ds, expected = big_endian_vector()
    assert encode_dataset(ds, BIG) == expected
    back = decode_dataset(expected, BIG)
    assert back.original_encoding == (False, False)
    assert back[0x00280010].value == 0x0102
    little = encode_dataset(ds, EXPLICIT)
    assert encode_dataset(back, EXPLICIT) == little  # swapped back from big endian
    assert encode_dataset(back, BIG) == expected  # same order: the bytes as they are


def test_big_endian_file_reads_back_in_pydicom() -> None:
    ds = image()
    data = meta(transfer_syntax_uid=BIG) + encode_dataset(ds, BIG)
    read = dcmread(io.BytesIO(data))
    assert read.original_encoding == (False, False)
    assert read.Rows == 2 and read.PatientName == "Doe^John"
    # pydicom keeps OW in file order: words 0x0102, 0x0304... stored big endian
    assert read.PixelData == b"\x02\x01\x04\x03\x06\x05\x08\x07"
    assert encode_dataset(read, EXPLICIT) == encode_dataset(ds, EXPLICIT)


def test_implicit_pixel_data_becomes_ow_and_is_swapped() -> None:
    ds = image()
    implicit = encode_dataset(ds, IMPLICIT)
    decoded = decode_dataset(implicit, IMPLICIT)  # Pixel Data is "OB or OW" in implicit VR
    big = encode_dataset(decoded, BIG)
    assert big.endswith(b"OW\x00\x00\x00\x00\x00\x08\x02\x01\x04\x03\x06\x05\x08\x07")


def test_a_created_data_set_with_big_endian_file_meta_is_taken_as_big_endian() -> None:
    ds = image()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(BIG)
    assert encode_dataset(ds, BIG).endswith(bytes(range(1, 9)))
    assert encode_dataset(ds, EXPLICIT).endswith(b"\x02\x01\x04\x03\x06\x05\x08\x07")


@pytest.mark.parametrize("ts", [IMPLICIT, EXPLICIT, DEFLATED])
def test_little_endian_bytes_match_pynetdicom(ts: str) -> None:
    ds = image()
    ours = encode_dataset(ds, ts)
    theirs = pynetdicom_encode(ds, ts == IMPLICIT, True, ts == DEFLATED)
    assert ours == theirs


def test_deflated_is_raw_deflate_padded_to_even_length() -> None:
    ds = image()
    data = encode_dataset(ds, DEFLATED)
    assert len(data) % 2 == 0
    inflated = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
    assert inflated == encode_dataset(ds, EXPLICIT)
    for name in ("A", "AB", "ABC", "ABCD"):  # one of these deflates to an odd length
        ds.PatientName = name
        assert len(encode_dataset(ds, DEFLATED)) % 2 == 0


def deflate(data: bytes) -> bytes:
    d = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    return d.compress(data) + d.flush()


def test_deflated_decode_refusals() -> None:
    body = encode_dataset(image(), EXPLICIT)
    stream = deflate(body)
    assert decode_dataset(stream + b"\x00", DEFLATED).PatientName == "Doe^John"
    assert decode_dataset([stream[:5], stream[5:], b"\x00"], DEFLATED).Rows == 2
    with pytest.raises(DatasetCodecError, match="3 bytes follow"):
        decode_dataset([stream, b"\x00", b"ab"], DEFLATED)
    with pytest.raises(DatasetCodecError, match="truncated"):
        decode_dataset(stream[:-4], DEFLATED)
    with pytest.raises(DatasetCodecError, match="does not inflate"):
        decode_dataset(b"\xff" * 16, DEFLATED)
    with pytest.raises(DatasetCodecError, match="more than 64 bytes"):
        decode_dataset(stream, DEFLATED, max_inflated_size=64)
    bomb = deflate(bytes(8 << 20))
    with pytest.raises(DatasetCodecError, match="max_inflated_size"):
        decode_dataset(bomb, DEFLATED, max_inflated_size=1 << 20)


def test_decode_from_fragments_and_records_the_syntax() -> None:
    data = encode_dataset(image(), EXPLICIT)
    views = [memoryview(data)[i : i + 7] for i in range(0, len(data), 7)]
    ds = decode_dataset(views, EXPLICIT)
    assert ds.file_meta.TransferSyntaxUID == EXPLICIT
    assert ds.PixelData == bytes(range(1, 9))
    assert decode_dataset(bytearray(data), EXPLICIT) == ds
    assert len(decode_dataset([], EXPLICIT)) == 0


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x10\x00\x10\x00PN\x08\x00Doe", "truncated"),  # value runs past the end
        (b"\x10\x00\x10\x00PN\x04\x00Doe^\x10\x00", "truncated"),  # a 2-byte tail
        (b"\x10\x00\x10\x00PN\x08\x00", "truncated"),  # value absent at the very end
        (b"\x10\x00\x10\x00ZZ\x02\x00ab", "does not parse as Explicit VR Little Endian"),
        (b"\x10\x00", "truncated"),
    ],
)
def test_decode_refuses_truncated_or_broken(data: bytes, match: str) -> None:
    with pytest.raises(DatasetCodecError, match=match):
        decode_dataset(data, EXPLICIT)


@pytest.mark.parametrize(("ts", "other", "found"), [(IMPLICIT, EXPLICIT, "explicit"),
                                                     (EXPLICIT, IMPLICIT, "implicit")])
def test_decode_refuses_the_other_vr_mode(ts: str, other: str, found: str) -> None:
    """pydicom would switch silently (a warning); the data set would carry a wrong label."""
    data = encode_dataset(image(), other)
    with pytest.raises(DatasetCodecError, match=f"not encoded as .* says \\({found} VR"):
        decode_dataset(data, ts)


def test_chunk_stream_seek_and_read() -> None:
    chunks = _Chunks([memoryview(b"abc"), memoryview(b"defg")])
    assert chunks.read(0) == b""
    assert chunks.seek(2) == 2 and chunks.read(3) == b"cde"
    assert chunks.seek(-1, os.SEEK_CUR) == 4 and chunks.tell() == 4
    assert chunks.seek(-2, os.SEEK_END) == 5 and chunks.read() == b"fg"
    assert chunks.read(8) == b""  # the one look past the end
    with pytest.raises(DatasetCodecError, match="truncated"):
        chunks.read(8)
    with pytest.raises(DatasetCodecError, match="past the end"):
        chunks.seek(8)


def encapsulated(ts: str) -> Dataset:
    ds = image(BitsAllocated=8, BitsStored=8, HighBit=7)
    ds.PixelData = encapsulate([b"\xff\xd8fake-jpeg\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(ts)
    return ds


def test_encapsulated_round_trip_under_its_own_syntax() -> None:
    ds = encapsulated(JPEG)
    data = encode_dataset(ds, JPEG)
    back = decode_dataset(data, JPEG)
    assert back.PixelData == ds.PixelData
    assert back["PixelData"].is_undefined_length
    assert back.file_meta.TransferSyntaxUID == JPEG
    assert encode_dataset(back, JPEG) == data


@pytest.mark.parametrize(
    ("ds", "target", "match"),
    [
        (encapsulated(JPEG), EXPLICIT, "encoded as JPEG Baseline.*decompress it first"),
        (encapsulated(JPEG), RLE, "mislabel its compressed pixel data"),
        (image(), JPEG, "pixel data is not compressed.*compress it first"),
        (encapsulated(EXPLICIT), JPEG, "not compressed"),
    ],
)
def test_never_mislabel(ds: Dataset, target: str, match: str) -> None:
    with pytest.raises(TransferSyntaxMismatch, match=match) as info:
        encode_dataset(ds, target)
    assert isinstance(info.value, DicomError) and isinstance(info.value, ValueError)


def test_encapsulated_pixel_data_without_file_meta_is_refused() -> None:
    ds = encapsulated(JPEG)
    del ds.file_meta
    with pytest.raises(TransferSyntaxMismatch, match="set it"):
        encode_dataset(ds, JPEG)
    raw = decode_dataset(encode_dataset(encapsulated(JPEG), JPEG), JPEG)
    raw_unparsed = Dataset()
    raw_unparsed.update(raw)  # elements already parsed; undefined length kept
    with pytest.raises(TransferSyntaxMismatch, match="set it"):
        encode_dataset(raw_unparsed, JPEG)


def test_raw_pixel_data_undefined_length_is_detected() -> None:
    from pydicom.filereader import read_dataset

    data = encode_dataset(encapsulated(JPEG), JPEG)
    raw = read_dataset(io.BytesIO(data), False, True)  # elements stay raw until touched
    with pytest.raises(TransferSyntaxMismatch, match="set it"):
        encode_dataset(raw, JPEG)


def test_a_data_set_without_pixel_data_may_go_under_a_compressed_syntax() -> None:
    ds = Dataset()
    ds.PatientName = "Doe^John"
    assert encode_dataset(ds, JPEG) == encode_dataset(ds, EXPLICIT)


@pytest.mark.parametrize("uid", ["1.2.3.4", "1.2.840.10008.5.1.4.1.1.2", "nonsense"])
def test_unknown_transfer_syntaxes_are_refused(uid: str) -> None:
    with pytest.raises(DatasetCodecError, match="not a transfer syntax aiodicom knows"):
        encode_dataset(image(), uid)
    with pytest.raises(DatasetCodecError, match="not a transfer syntax"):
        decode_dataset(b"", uid)


@pytest.mark.parametrize("uid", ["1.2.3.4", "1.2.840.10008.5.1.4.1.1.2"])
def test_an_unknown_own_transfer_syntax_is_refused(uid: str) -> None:
    ds = image()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(uid)
    with pytest.raises(DatasetCodecError, match="file_meta.TransferSyntaxUID"):
        encode_dataset(ds, EXPLICIT)


def test_swap_refusals() -> None:
    odd = image()
    odd.add_new(0x00660022, "OD", b"\x01\x02\x03")
    with pytest.raises(DatasetCodecError, match="not a multiple of its 8-byte words"):
        encode_dataset(odd, BIG)
    buffered = image()
    buffered[0x7FE00010].value = io.BytesIO(bytes(8))
    with pytest.raises(DatasetCodecError, match="buffered value"):
        encode_dataset(buffered, BIG)
    assert encode_dataset(buffered, EXPLICIT).endswith(bytes(8))


def test_pydicom_write_failures_become_codec_errors() -> None:
    ds = Dataset()
    ds.add(DataElement(0x00280010, "US", "not a number", validation_mode=pydicom_config.IGNORE))
    with pytest.raises(DatasetCodecError, match="cannot be encoded as Explicit VR Little"):
        encode_dataset(ds, EXPLICIT)


# -- round trips -----------------------------------------------------------------------------

_text = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ ^0123456789", max_size=20).map(str.strip)


@st.composite
def datasets(draw: st.DrawFn) -> Dataset:
    ds = Dataset()
    ds.PatientName = draw(_text)
    ds.PatientID = draw(_text)
    ds.SOPInstanceUID = draw(st.sampled_from([SOP, "1.2.840.10008.1.1", "2.25.1"]))
    ds.Rows = draw(st.integers(0, 0xFFFF))
    ds.add_new(0x00181150, "IS", draw(st.integers(-(2**31), 2**31 - 1)))  # ExposureTime
    ds.add_new(0x00660022, "OD", draw(st.binary(max_size=4).map(lambda b: b * 8)))
    ds.add_new(0x00640009, "OF", draw(st.binary(max_size=8).map(lambda b: b * 4)))
    items = []
    for _ in range(draw(st.integers(0, 2))):
        item = Dataset()
        item.add_new(0x00281201, "OW", draw(st.binary(max_size=8).map(lambda b: b * 2)))
        item.ReferencedSOPInstanceUID = SOP
        items.append(item)
    ds.ReferencedSeriesSequence = Sequence(items)
    ds.add_new(0x7FE00010, "OW", draw(st.binary(max_size=32).map(lambda b: b * 2)))
    return ds


@settings(max_examples=40, deadline=None)
@given(datasets(), st.sampled_from(NATIVE), st.integers(1, 50))
def test_round_trip_every_native_syntax(ds: Dataset, ts: str, split: int) -> None:
    data = encode_dataset(ds, ts)
    pieces = [data[i : i + split] for i in range(0, len(data), split)]
    back = decode_dataset(pieces, ts)
    assert encode_dataset(back, ts) == data
    assert encode_dataset(back, EXPLICIT) == encode_dataset(ds, EXPLICIT)
    assert str(back.PatientName) == str(ds.PatientName) and back.Rows == ds.Rows


def test_a_compressed_files_header_encodes_under_any_syntax() -> None:
    """A header read with stop_before_pixels from a JPEG file (a C-FIND answer, a query)
    has no pixel data to mislabel: it may go out as Explicit VR Little Endian."""
    ds = Dataset()
    ds.PatientName = "Doe^John"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = UID(JPEG)
    assert decode_dataset(encode_dataset(ds, EXPLICIT), EXPLICIT).PatientName == "Doe^John"


def test_a_standard_syntax_newer_than_pydicom_is_encapsulated_explicit_le() -> None:
    jpeg_xl = "1.2.840.10008.1.2.4.110"  # not in pydicom 3.0's dictionary
    ds = Dataset()
    ds.PatientName = "Doe^John"
    raw = encode_dataset(ds, jpeg_xl)
    assert raw == encode_dataset(ds, EXPLICIT)
    assert decode_dataset(raw, jpeg_xl).PatientName == "Doe^John"


def test_jpip_htj2k_referenced_deflate_is_deflated() -> None:
    uid = "1.2.840.10008.1.2.4.205"
    ds = Dataset()
    ds.PatientName = "Doe^John"
    raw = encode_dataset(ds, uid)
    assert raw != encode_dataset(ds, EXPLICIT)  # deflated
    assert decode_dataset(raw, uid).PatientName == "Doe^John"
