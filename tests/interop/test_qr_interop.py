"""DCMTK findscu, getscu and movescu (and pynetdicom's C-FIND SCU) against the bundled
server's query/retrieve (`build_server`: index-backed handlers, serve's acceptor policy)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pydicom
import pytest

from aiodicom.aio.client import connect, storage_contexts_for
from aiodicom.aio.server import Server
from aiodicom.app.server.config import ServeOptions
from aiodicom.app.server.run import build_server
from aiodicom.core.dimse import Status
from tests.conftest import write_ct
from tests.interop.peers import dcmtk, free_port, run_tool

pytestmark = pytest.mark.interop


async def _filled_server(tmp_path: Path, n: int = 2, **options: Any) -> tuple[Server, int,
                                                                               list[str]]:
    files = [write_ct(tmp_path / f"ct{i}.dcm", size=4096 + 2 * i) for i in range(n)]
    opts = dataclasses.replace(ServeOptions(port=0, storage=tmp_path / "store"), **options)
    server, _ = build_server(opts)
    _, port = await server.listen()
    async with connect("127.0.0.1", port, contexts=storage_contexts_for(files)) as assoc:
        for path in files:
            assert await assoc.store(path) == Status.SUCCESS
    return server, port, sorted(str(pydicom.dcmread(f).SOPInstanceUID) for f in files)


def _received(folder: Path) -> list[str]:
    return sorted(str(pydicom.dcmread(p).SOPInstanceUID) for p in folder.rglob("*")
                  if p.is_file())


def test_findscu_study_and_image_levels(run: Any, tmp_path: Path) -> None:
    async def main() -> tuple[tuple[int, str], tuple[int, str], list[str]]:
        server, port, uids = await _filled_server(tmp_path)
        try:
            study = await run_tool(dcmtk("findscu"), "-v", "-S", "-aec", "AIODICOM",
                                   "-k", "QueryRetrieveLevel=STUDY", "-k", "PatientID=",
                                   "-k", "StudyInstanceUID", "-k", "PatientName=Doe*",
                                   "127.0.0.1", str(port))
            image = await run_tool(dcmtk("findscu"), "-v", "-P", "-aec", "AIODICOM",
                                   "-k", "QueryRetrieveLevel=IMAGE", "-k", "PatientID=PID-1",
                                   "-k", "StudyInstanceUID=1.2.3.4.5",
                                   "-k", "SeriesInstanceUID=1.2.3.4.5.6",
                                   "-k", "SOPInstanceUID", "127.0.0.1", str(port))
        finally:
            await server.close()
        return study, image, uids

    (code, out), (icode, iout), uids = run(main())
    assert code == 0, out
    assert "1.2.3.4.5" in out and "PID-1" in out
    assert out.count("Find Response: 1 (Pending)") == 1 and "Final Find Response (Success)" in out
    assert icode == 0, iout
    assert all(uid in iout for uid in uids)


def test_getscu_retrieves_into_a_folder(run: Any, tmp_path: Path) -> None:
    out_dir = tmp_path / "got"
    out_dir.mkdir()

    async def main() -> tuple[int, str, list[str]]:
        server, port, uids = await _filled_server(tmp_path)
        try:
            code, out = await run_tool(dcmtk("getscu"), "-S", "-aec", "AIODICOM",
                                       "-k", "QueryRetrieveLevel=STUDY",
                                       "-k", "StudyInstanceUID=1.2.3.4.5",
                                       "-od", str(out_dir), "127.0.0.1", str(port))
        finally:
            await server.close()
        return code, out, uids

    code, out, uids = run(main())
    assert code == 0, out
    assert _received(out_dir) == uids


def test_movescu_to_itself(run: Any, tmp_path: Path) -> None:
    for attempt in range(3):  # movescu binds a port we picked: another test may take it
        work = tmp_path / f"try{attempt}"
        out_dir = work / "moved"
        out_dir.mkdir(parents=True)
        code, out, uids = run(_move_to_itself(work, out_dir, free_port()))
        if "Address already in use" not in out:
            break
    assert code == 0, out
    assert _received(out_dir) == uids


async def _move_to_itself(tmp_path: Path, out_dir: Path,
                          dest_port: int) -> tuple[int, str, list[str]]:
    server, port, uids = await _filled_server(
        tmp_path, move_destinations={"MOVESCU": f"127.0.0.1:{dest_port}"})
    try:
        code, out = await run_tool(dcmtk("movescu"), "-S", "-aet", "MOVESCU", "-aem",
                                   "MOVESCU", "-aec", "AIODICOM", "--port", str(dest_port),
                                   "-k", "QueryRetrieveLevel=STUDY",
                                   "-k", "StudyInstanceUID=1.2.3.4.5",
                                   "-od", str(out_dir), "127.0.0.1", str(port))
    finally:
        await server.close()
    return code, out, uids


def test_movescu_without_a_unique_key_moves_nothing(run: Any, tmp_path: Path) -> None:
    """PS3.4 C.4.2.2.1: a C-MOVE names its unique keys; a wildcard or a non-unique key is
    refused (0xA900) rather than moving whatever matches."""
    out_dir = tmp_path / "moved"
    out_dir.mkdir()
    dest_port = free_port()

    async def main() -> list[tuple[int, str]]:
        server, port, _ = await _filled_server(
            tmp_path, move_destinations={"MOVESCU": f"127.0.0.1:{dest_port}"})
        results = []
        try:
            for keys in (["-k", "StudyInstanceUID=*"], ["-k", "PatientName=Doe*"],
                         ["-k", "QueryRetrieveLevel=SERIES",
                          "-k", "SeriesInstanceUID=1.2.3.4.5.6"]):
                level = [] if "QueryRetrieveLevel=SERIES" in keys else [
                    "-k", "QueryRetrieveLevel=STUDY"]
                listen = dest_port
                for _attempt in range(3):  # the port movescu binds may be taken meanwhile
                    code, out = await run_tool(
                        dcmtk("movescu"), "-v", "-S", "-aet", "MOVESCU", "-aem", "MOVESCU",
                        "-aec", "AIODICOM", "--port", str(listen), *level, *keys,
                        "-od", str(out_dir), "127.0.0.1", str(port))
                    if "Address already in use" not in out:
                        break
                    listen = free_port()
                results.append((code, out))
        finally:
            await server.close()
        return results

    for _, out in run(main()):
        assert "Final Move Response (Error: DataSetDoesNotMatchSOPClass)" in out, out
    assert _received(out_dir) == []


def test_move_to_a_destination_that_is_down_names_the_failed_instances(
        run: Any, tmp_path: Path) -> None:
    """A702 carries the Failed SOP Instance UID List (PS3.4 C.4.2.1.5), and Retrieve AE
    Title in C-FIND answers is ours (C.4.1.1.3.2)."""
    from pydicom.dataset import Dataset

    from aiodicom.core.qr import qr_contexts

    async def main() -> tuple[Any, list[str], list[str]]:
        server, port, uids = await _filled_server(
            tmp_path, move_destinations={"DOWN": f"127.0.0.1:{free_port()}"})
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = "1.2.3.4.5"
        try:
            async with connect("127.0.0.1", port, called_ae_title="AIODICOM",
                               contexts=qr_contexts()) as assoc:
                result = await assoc.move(ds, "DOWN")
                ds.RetrieveAETitle = ""
                async with assoc.find(ds) as matches:
                    titles = [str(match.RetrieveAETitle) async for match in matches]
        finally:
            await server.close()
        return result, uids, titles

    result, uids, titles = run(main())
    assert result.status == Status.SUBOPERATIONS_FAILED and result.failed == len(uids)
    assert sorted(result.failed_sop_instances) == uids
    assert titles == ["AIODICOM"]


def test_pynetdicom_find_scu(run: Any, tmp_path: Path) -> None:
    import asyncio

    from pydicom.dataset import Dataset
    from pynetdicom import AE
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    def query(port: int) -> list[tuple[int, str | None]]:
        ae = AE(ae_title="PYNETDICOM")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelFind)
        assoc = ae.associate("127.0.0.1", port, ae_title="AIODICOM")
        assert assoc.is_established
        ds = Dataset()
        ds.QueryRetrieveLevel = "SERIES"
        ds.StudyInstanceUID = "1.2.3.4.5"
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
        results = []
        for status, identifier in assoc.send_c_find(
                ds, StudyRootQueryRetrieveInformationModelFind):
            results.append((int(status.Status), None if identifier is None
                            else str(identifier.Modality)))
        assoc.release()
        return results

    async def main() -> list[tuple[int, str | None]]:
        server, port, _ = await _filled_server(tmp_path)
        try:
            return await asyncio.to_thread(query, port)
        finally:
            await server.close()

    assert run(main()) == [(0xFF00, "CT"), (0x0000, None)]
