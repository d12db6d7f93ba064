"""Query/retrieve through the real command line: files stored to `aiodicom serve`, then
`aiodicom find`, `get` and `move` against it; the move_destinations config key."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from aiodicom.aio.client import RemoteAE
from aiodicom.app.cli.client import build_identifier
from aiodicom.app.server.config import ServeOptions, load_config
from aiodicom.app.server.destinations import parse_move_destinations
from aiodicom.errors import ConfigurationError, DicomError
from tests.app.server.test_serve_cli import ServeProcess, cli
from tests.conftest import write_ct


def _stored(tmp_path: Path, n: int = 3) -> tuple[ServeProcess, list[str]]:
    (tmp_path / "in").mkdir()
    files = [write_ct(tmp_path / "in" / f"ct{i}.dcm", size=2048 + 2 * i,
                      series_uid=f"1.2.3.4.5.{6 + i % 2}") for i in range(n)]
    server = ServeProcess.start("--port", "0", "--storage", tmp_path / "store")
    result = cli("store", "127.0.0.1", str(server.ports["dicom"]), tmp_path / "in", "-q")
    assert result.returncode == 0, result.stdout + result.stderr
    return server, sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in files)


def test_find_and_get_against_serve(tmp_path: Path) -> None:
    server, uids = _stored(tmp_path)
    port = str(server.ports["dicom"])
    try:
        found = cli("find", "127.0.0.1", port, "-k", "PatientName=doe*", "-k",
                    "StudyDate=20251231-")
        assert found.returncode == 0, found.stderr
        lines = found.stdout.splitlines()
        assert len(lines) == 1  # one study
        assert "StudyInstanceUID=1.2.3.4.5" in lines[0] and "StudyDate=20260101" in lines[0]
        assert "PatientName=Doe^Jane" in lines[0]

        series = cli("find", "127.0.0.1", port, "--level", "SERIES", "-k",
                     "StudyInstanceUID=1.2.3.4.5", "-k", "Modality=")
        assert series.returncode == 0, series.stderr
        assert len(series.stdout.splitlines()) == 2

        images = cli("find", "127.0.0.1", port, "--model", "patient", "--level", "IMAGE",
                     "-k", "PatientID=PID-1", "-k", "StudyInstanceUID=1.2.3.4.5",
                     "-k", "SeriesInstanceUID=1.2.3.4.5.6")
        assert images.returncode == 0, images.stderr
        assert len(images.stdout.splitlines()) == 2

        none = cli("find", "127.0.0.1", port, "-k", "PatientName=Nobody")
        assert none.returncode == 0 and none.stdout == ""

        # no StudyInstanceUID above a Study Root SERIES query: refused, not "every series"
        broad = cli("find", "127.0.0.1", port, "--level", "SERIES", "-k", "Modality=")
        assert broad.returncode == 1 and broad.stdout == "" and "0xA900" in broad.stderr

        # a retrieve without its unique key: the CLI does not send it; forced, A900
        out = tmp_path / "got"
        refused = cli("get", "127.0.0.1", port, "-k", "PatientName=Doe*", "--out", out)
        assert refused.returncode == 1 and "not sent" in refused.stderr
        assert "--allow-broad" in refused.stderr
        forced = cli("get", "127.0.0.1", port, "-k", "PatientName=Doe*", "--out", out,
                     "--allow-broad")
        assert forced.returncode == 1 and "0xA900" in forced.stdout
        assert not out.exists() or not any(p.is_file() for p in out.rglob("*.dcm"))

        got = cli("get", "127.0.0.1", port, "-k", "StudyInstanceUID=1.2.3.4.5", "--out", out)
        assert got.returncode == 0, got.stdout + got.stderr
        assert "completed 3, failed 0" in got.stdout
        received = sorted(str(pydicom.dcmread(p).SOPInstanceUID)
                          for p in out.rglob("*") if p.is_file() and ".incoming" not in p.parts)
        assert received == uids
    finally:
        assert server.stop() == 0


def test_move_between_two_servers(tmp_path: Path) -> None:
    dest = ServeProcess.start("--port", "0", "--storage", tmp_path / "dest")
    try:
        config = tmp_path / "aiodicom.toml"
        config.write_text(f'[move_destinations]\nDEST = "127.0.0.1:{dest.ports["dicom"]}"\n')
        write_ct(tmp_path / "one.dcm")
        source = ServeProcess.start("--config", config, "--port", "0",
                                    "--storage", tmp_path / "src")
        try:
            port = str(source.ports["dicom"])
            assert cli("store", "127.0.0.1", port, tmp_path / "one.dcm", "-q").returncode == 0
            moved = cli("move", "127.0.0.1", port, "DEST", "-k", "StudyInstanceUID=1.2.3.4.5")
            assert moved.returncode == 0, moved.stdout + moved.stderr
            assert "completed 1, failed 0" in moved.stdout
            everything = cli("move", "127.0.0.1", port, "DEST")
            assert everything.returncode == 1 and "not sent" in everything.stderr
            unknown = cli("move", "127.0.0.1", port, "ELSEWHERE", "-k",
                          "StudyInstanceUID=1.2.3.4.5")
            assert unknown.returncode == 1 and "0xA801" in unknown.stdout
        finally:
            assert source.stop() == 0
        found = cli("find", "127.0.0.1", str(dest.ports["dicom"]), "-k",
                    "NumberOfStudyRelatedInstances=")
        assert found.returncode == 0 and len(found.stdout.splitlines()) == 1
        assert "NumberOfStudyRelatedInstances=1" in found.stdout
    finally:
        assert dest.stop() == 0


def test_build_identifier() -> None:
    ds = build_identifier(["PatientName=Doe*", "0010,0020=", "StudyDate=20260101-"], "STUDY")
    assert ds.QueryRetrieveLevel == "STUDY"
    assert str(ds.PatientName) == "Doe*" and ds.PatientID in (None, "")
    assert ds.StudyDate == "20260101-" and "StudyInstanceUID" in ds
    with pytest.raises(DicomError, match="neither a DICOM keyword"):
        build_identifier(["NotAKeyword=1"], "STUDY")


@pytest.mark.parametrize(("key", "message"), [
    ("SeriesNumber=1*", "SeriesNumber is a number"),
    ("SliceThickness=?.5", "SliceThickness is a number"),
    ("SeriesNumber=one", "not a valid IS value"),
])
def test_build_identifier_refuses_what_the_vr_cannot_hold(key: str, message: str) -> None:
    with pytest.raises(DicomError, match=message):
        build_identifier([key], "SERIES")


def test_find_with_a_wildcard_number_is_a_clear_error() -> None:
    result = cli("find", "127.0.0.1", "9", "--level", "SERIES", "-k", "SeriesNumber=1*")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "wildcards do not apply" in result.stderr


def test_move_destinations_config(tmp_path: Path) -> None:
    assert parse_move_destinations({"DEST": "10.0.0.1:104"}) == {"DEST": RemoteAE("10.0.0.1", 104)}
    for bad in ({"DEST": "nohost"}, {"DEST": "h:0"}, {"DEST": 104}, {"": "h:1"}):
        with pytest.raises(ConfigurationError):
            parse_move_destinations(bad)
    path = tmp_path / "c.toml"
    path.write_text('move_destinations = "x"\n')
    with pytest.raises(ConfigurationError, match="move_destinations must be a table"):
        load_config(path)
    path.write_text('[move_destinations]\nPACS = "pacs.example:11112"\n')
    values = load_config(path)
    assert ServeOptions(port=0, **values).check().move_destinations == {
        "PACS": "pacs.example:11112"}
    with pytest.raises(ConfigurationError, match="host:port"):
        ServeOptions(port=0, move_destinations={"PACS": "pacs"}).check()
