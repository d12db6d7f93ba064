"""The PostgreSQL index beyond the shared suite (issue 14 item 2): a server down at start is
a clear error (and `aiodicom serve` exits non-zero), a server lost mid-run leaves stores
queued and retried while C-FIND/C-GET/C-MOVE answer a failure instead of hanging, nodes
opening the same database migrate it once, and wildcard characters of LIKE stay literal."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiodicom.app.archive import index_writer
from aiodicom.app.archive.index_pg import IndexUnavailable, PgIndex, redact
from aiodicom.app.archive.index_schema import SCHEMA_VERSION
from aiodicom.app.archive.index_writer import IndexWriter
from aiodicom.app.archive.qr import QueryRetrieve
from aiodicom.app.archive.storage import Storage, StorageError
from aiodicom.core.dimse import Status

from .test_index import populate, storage, uid  # noqa: F401 - fixture
from .test_qr import find, retrieve
from .test_storage import EXPLICIT, encode, make_dataset, store


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class CuttableProxy:
    """A TCP forwarder to the PostgreSQL server that the test can cut (every connection
    closed, new ones refused at once) and restore: an outage without killing the server."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.up = True
        self.sockets: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            server = socket.create_connection(self.target)
            with self.lock:
                self.sockets += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            for each in self.sockets:
                with contextlib.suppress(OSError):
                    each.shutdown(socket.SHUT_RDWR)
                each.close()
            self.sockets.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        self.listener.close()


@pytest.fixture
def database(postgres: Any) -> str:
    return str(postgres.create_database(f"pg_{os.urandom(6).hex()}"))


@pytest.fixture
def proxy(postgres: Any) -> Iterator[CuttableProxy]:
    forwarder = CuttableProxy(postgres.port)
    yield forwarder
    forwarder.close()


def test_server_down_at_start_is_a_clear_error() -> None:
    url = f"postgresql://aiodicom:s3cret@127.0.0.1:{_free_port()}/aiodicom"
    with pytest.raises(StorageError, match="cannot open the PostgreSQL index") as caught:
        PgIndex(url)
    assert "s3cret" not in str(caught.value) and "127.0.0.1" in str(caught.value)
    assert redact(url) == url.replace("s3cret", "***")


def test_serve_exits_non_zero_when_the_index_server_is_down(tmp_path: Path) -> None:
    url = f"postgresql://aiodicom:s3cret@127.0.0.1:{_free_port()}/aiodicom"
    result = subprocess.run(
        [sys.executable, "-m", "aiodicom", "serve", "--port", "0", "--storage",
         str(tmp_path / "store"), "--index", url],
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert "cannot open the PostgreSQL index" in result.stderr
    assert "s3cret" not in result.stderr + result.stdout


def test_nodes_opening_one_database_migrate_it_once(database: str) -> None:
    opened: list[PgIndex] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PgIndex(database))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    try:
        rows = opened[0]._read("SELECT version FROM schema_version", [])
        assert [tuple(row) for row in rows] == [(SCHEMA_VERSION,)]
    finally:
        for each in opened:
            each.close()


def test_like_characters_are_literal(database: str, storage: Storage) -> None:  # noqa: F811
    """`%`, `_`, `\\` and `'` in keys and values match themselves (parameters, escapes)."""
    with PgIndex(database) as index:
        for number, pid in enumerate(["100%_x", "100ab", "O'Hara"], start=1):
            sop = uid(70, number, 1)
            ds = make_dataset(sop=sop, PatientID=pid, StudyInstanceUID=uid(70, number),
                              SeriesInstanceUID=uid(70, number, 9))
            index.add(store(storage, encode(ds, EXPLICIT), sop=sop))
        found = {key: sorted(r["PatientID"] for r in index.query("PATIENT", {"PatientID": key}))
                 for key in ("100%*", "100__", "1%", "O'Hara", "O'*", "*'", "100%_?")}
        assert found == {"100%*": ["100%_x"], "100__": [], "1%": [], "O'Hara": ["O'Hara"],
                         "O'*": ["O'Hara"], "*'": [], "100%_?": ["100%_x"]}
        assert index.count() == 3


def test_outage_mid_run(database: str, storage: Storage, proxy: CuttableProxy,  # noqa: F811
                        postgres: Any, caplog: pytest.LogCaptureFixture,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Down mid-run: stores stay queued and retried (logged), C-FIND/C-GET/C-MOVE answer
    0xC000 instead of hanging; back up: the queued rows land."""
    monkeypatch.setattr(index_writer, "RETRY_PAUSE", (0.05, 0.2))
    url = database.replace(f":{postgres.port}/", f":{proxy.port}/")
    stored = populate(storage)
    index = PgIndex(url)
    writer = IndexWriter(index)
    try:
        for each in stored[:3]:
            writer.submit(each)
        writer.flush(timeout=60)
        assert index.count() == 3
        qr = QueryRetrieve(storage.root, index)

        proxy.cut()
        caplog.set_level(logging.WARNING, logger="aiodicom.app.archive.index_writer")
        with pytest.raises(IndexUnavailable):
            index.count()
        for each in stored[3:]:
            writer.submit(each)  # returns at once: the C-STORE is answered from the file
        assert find(qr, "study", "STUDY", AccessionNumber="") == [(Status.CANNOT_UNDERSTAND,
                                                                    None)]
        for kind in ("get", "move"):
            assert retrieve(qr, kind, "study", "STUDY",
                            StudyInstanceUID=uid(1)) == Status.CANNOT_UNDERSTAND
        settled = writer.settle()
        assert not settled.done()  # the batch waits for the server, it is not dropped
        assert any("queued and retried" in r.getMessage() for r in caplog.records)

        proxy.restore()
        settled.result(timeout=60)
        assert index.count() == len(stored)
        studies = find(qr, "study", "STUDY", AccessionNumber="")
        assert [s for s, _ in studies] == [Status.PENDING] * 4
        assert any("available again" in r.getMessage() for r in caplog.records)
    finally:
        writer.close(timeout=30)
        index.close()


def test_no_asyncpg_for_a_plain_index() -> None:
    code = ("import sys, tempfile, pathlib\n"
            "from aiodicom.app.archive.index_writer import open_index\n"
            "open_index(None, pathlib.Path(tempfile.mkdtemp())).close()\n"
            "assert 'asyncpg' not in sys.modules\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_loop_of_the_caller_is_not_used(database: str) -> None:
    """PgIndex runs asyncpg on its own loop: callable from inside a running loop's thread
    pool, and from plain threads, alike."""
    with PgIndex(database) as index:
        async def main() -> int:
            return await asyncio.to_thread(index.count)

        assert asyncio.run(main()) == 0
        assert index.count() == 0


def test_cli_rebuilds_a_postgresql_index(database: str, storage: Storage) -> None:  # noqa: F811
    """`aiodicom index rebuild STORAGE --index URL`: what an outage left out comes back."""
    stored = populate(storage)
    result = subprocess.run(
        [sys.executable, "-m", "aiodicom", "index", "rebuild", str(storage.root), "--index",
         database], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert f"indexed {len(stored)} instance(s)" in result.stdout
    assert "aiodicom-test-pw" not in result.stdout
    with PgIndex(database) as index:
        assert index.count() == len(stored)


def _serve_store_find(tmp_path: Path, index: str | None, run: Any,
                      cut: CuttableProxy | None = None) -> tuple[list[Status], Any, list[Any]]:
    """`aiodicom serve`'s server with ``index``: 3 C-STOREs, then C-FINDs at STUDY and
    IMAGE level; with ``cut``, the index server is cut off before the third C-STORE."""
    from pydicom.dataset import Dataset

    from aiodicom.aio.client import connect
    from aiodicom.app.server.config import ServeOptions
    from aiodicom.app.server.run import build_server
    from aiodicom.core.negotiation import IMPLICIT_VR_LITTLE_ENDIAN, VERIFICATION_SOP_CLASS
    from aiodicom.core.qr import qr_contexts
    from tests.conftest import write_ct

    root = tmp_path / "store"
    tmp_path.mkdir(parents=True, exist_ok=True)
    sources = [write_ct(tmp_path / f"ct{n}.dcm", size=64, sop_instance_uid=f"1.2.3.9.{n}",
                        series_uid=f"1.2.3.4.5.{6 + n % 2}") for n in range(3)]
    options = ServeOptions(port=0, storage=root, index=index)

    async def main() -> tuple[list[Status], Any, list[Any]]:
        server, _ = build_server(options)
        contexts = [("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1"]),
                    (VERIFICATION_SOP_CLASS, [IMPLICIT_VR_LITTLE_ENDIAN]), *qr_contexts()]
        answers: list[Any] = []
        async with server:
            host, port = await server.listen()
            async with connect(host, port, contexts=contexts) as assoc:
                stored = []
                for number, source in enumerate(sources):
                    if cut is not None and number == 2:
                        cut.cut()
                    stored.append(await assoc.send_store(source))
                for level, keys in (("STUDY", {"StudyInstanceUID": "", "PatientName": "",
                                               "ModalitiesInStudy": "",
                                               "NumberOfStudyRelatedInstances": ""}),
                                    ("IMAGE", {"StudyInstanceUID": "1.2.3.4.5",
                                               "SeriesInstanceUID": "1.2.3.4.5.6",
                                               "SOPInstanceUID": "", "InstanceNumber": ""})):
                    query = Dataset()
                    query.QueryRetrieveLevel = level
                    for keyword, value in keys.items():
                        setattr(query, keyword, value)
                    async with assoc.find(query) as matches:
                        found = [ds async for ds in matches]
                    answers.append((matches.status, found))
        return stored, answers, sources

    return run(main())


def test_serve_answers_the_same_from_both_backends(tmp_path: Path, database: str,
                                                   run: Any) -> None:
    stored, sqlite_answers, _ = _serve_store_find(tmp_path / "sqlite", None, run)
    pg_stored, pg_answers, _ = _serve_store_find(tmp_path / "pg", database, run)
    assert stored == pg_stored == [Status.SUCCESS] * 3
    assert [status for status, _ in pg_answers] == [Status.SUCCESS] * 2
    assert [len(found) for _, found in pg_answers] == [1, 2]
    assert pg_answers == sqlite_answers  # every status and every data set, in order
    (_, (study,)), _ = pg_answers
    assert int(study.NumberOfStudyRelatedInstances) == 3


def test_serve_with_postgresql_cut_off(tmp_path: Path, database: str, postgres: Any,
                                       proxy: CuttableProxy, run: Any,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The C-STORE after the cut is answered with success (its file is in place), and the
    C-FIND answers a failure, within the test's 60 s bound, not a hang."""
    monkeypatch.setattr(index_writer, "SETTLE_TIMEOUT", 1.0)
    monkeypatch.setattr(index_writer, "RETRY_FOR", 2.0)
    url = database.replace(f":{postgres.port}/", f":{proxy.port}/")
    stored, answers, sources = _serve_store_find(tmp_path, url, run, cut=proxy)
    assert stored == [Status.SUCCESS] * 3
    assert [(int(status), found) for status, found in answers] == [(0xC000, [])] * 2
    assert len(list((tmp_path / "store").rglob("*.dcm"))) == 3


def test_newer_schema_and_bad_url_are_refused(database: str) -> None:
    with PgIndex(database) as index, index._transaction() as db:
        db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    with pytest.raises(StorageError, match=f"schema version {SCHEMA_VERSION + 1}, newer"):
        PgIndex(database)
    with pytest.raises(StorageError, match="cannot open the PostgreSQL index"):
        PgIndex("postgresql://u:secret@127.0.0.1:notaport/db")
