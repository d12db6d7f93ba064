"""The supervisor's one ``/metrics`` for ``aiodicom serve --workers N --metrics PORT``.

Workers write their values into prometheus_client's multiprocess files in a directory the
supervisor creates for this run (``PROMETHEUS_MULTIPROC_DIR``) and removes at exit. The
supervisor serves the aggregate on the configured address with the same bounded endpoint a
single process uses (`serve_metrics`, on a loop in a thread of its own): counters and
histograms summed over every worker of the run (a replaced worker's counts stay in the sum),
gauges as each declares (associations active: the sum over live workers), and the
``process_*`` metrics of each live worker from ``/proc/PID``, labelled ``pid``.

A dead worker's files: prometheus_client's ``mark_process_dead`` removes its ``live*``
gauge files (every gauge here is ``live*``), but leaves its counter and histogram files,
one more per restart. `SharedMetrics.worker_exited` therefore folds them into one
``counter_archive.db`` / ``histogram_archive.db`` (values added key by key, under the lock a
scrape takes, so a scrape never sees a total drop or double) and removes them: the totals
never reset, and the directory holds the live workers' files plus two.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from aiodicom.app.server.metrics import SHARED_ENV, parse_listen_address, serve_metrics
from aiodicom.errors import ConfigurationError

__all__ = ["SharedMetrics"]


def _constant(pid: int) -> Callable[[], int]:
    return lambda: pid


class _WorkerProcesses:
    """A collector: prometheus_client's process metrics of each live worker, ``pid`` label."""

    def __init__(self, pids: Callable[[], Iterable[int]]) -> None:
        self._pids = pids

    def collect(self) -> Iterator[Any]:
        from prometheus_client import Metric, ProcessCollector

        families: dict[str, Any] = {}
        for pid in self._pids():
            collector = ProcessCollector(pid=_constant(pid), registry=None)
            for family in collector.collect():  # a worker gone meanwhile yields nothing
                merged = families.get(family.name)
                if merged is None:
                    merged = families[family.name] = Metric(
                        family.name, family.documentation, family.type)
                for sample in family.samples:
                    merged.add_sample(sample.name, {**sample.labels, "pid": str(pid)},
                                      sample.value)
        yield from families.values()


def fold_into_archive(dead: Path, archive: Path) -> None:
    """Add every value of ``dead`` (a dead process's multiprocess file) into ``archive``,
    then remove ``dead``. Nothing to do when ``dead`` does not exist."""
    from prometheus_client.mmap_dict import MmapedDict

    if not dead.exists():
        return
    values = list(MmapedDict.read_all_values_from_file(str(dead)))  # type: ignore[no-untyped-call]
    target = MmapedDict(str(archive))  # type: ignore[no-untyped-call]
    try:
        for key, value, timestamp, *_ in values:  # (key, value, timestamp, position)
            old, _ = target.read_value(key)  # type: ignore[no-untyped-call]
            target.write_value(key, old + value, timestamp)  # type: ignore[no-untyped-call]
    finally:
        target.close()  # type: ignore[no-untyped-call]
    dead.unlink()


class SharedMetrics:
    """The multiprocess directory and the aggregating endpoint of one supervisor run."""

    def __init__(self, address: str, pids: Callable[[], Iterable[int]],
                 directory: Path | None = None) -> None:
        self.host, self.port = parse_listen_address(address)
        self.directory = directory or Path(tempfile.mkdtemp(prefix="aiodicom-metrics-"))
        self._lock = threading.Lock()  # a scrape vs folding a dead worker's files
        from prometheus_client import CollectorRegistry, disable_created_metrics
        from prometheus_client.multiprocess import MultiProcessCollector

        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry()
        MultiProcessCollector(self.registry, path=str(self.directory))  # type: ignore[no-untyped-call]
        self.registry.register(_WorkerProcesses(pids))
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._ready = threading.Event()
        self.bound: tuple[str, int] | None = None

    def env(self) -> dict[str, str]:
        """What each worker's environment adds."""
        return {SHARED_ENV: str(self.directory)}

    def render(self) -> str:
        from prometheus_client import generate_latest

        with self._lock:
            return generate_latest(self.registry).decode("utf-8")

    def worker_exited(self, pid: int) -> None:
        """Drop a dead worker's live gauges; fold its counters and histograms into the
        archive files (they stay in the sums) and remove its files."""
        from prometheus_client.multiprocess import mark_process_dead

        with self._lock:
            mark_process_dead(pid, str(self.directory))  # type: ignore[no-untyped-call]
            for kind in ("counter", "histogram", "summary"):
                fold_into_archive(self.directory / f"{kind}_{pid}.db",
                                  self.directory / f"{kind}_archive.db")

    def start(self) -> tuple[str, int]:
        """Bind and serve in a thread; ConfigurationError if the address cannot be bound."""
        self._thread = threading.Thread(target=self._run, name="metrics", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._error is not None:
            self.close()
            raise ConfigurationError(
                f"cannot serve metrics on {self.host}:{self.port}: {self._error}")
        assert self.bound is not None
        return self.bound

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        try:
            server = await serve_metrics(self.host, self.port, self)
        except OSError as exc:
            self._error = exc
            self._ready.set()
            return
        self.bound = server.sockets[0].getsockname()[:2]
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            server.close()
            await server.wait_closed()

    def close(self) -> None:
        """Stop the endpoint and remove the directory."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            if self._thread.is_alive():
                self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(10)
        shutil.rmtree(self.directory, ignore_errors=True)
