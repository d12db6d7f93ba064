"""Prometheus metrics for `aiodicom serve`: a small registry, an observer, an HTTP endpoint.

No client library: the registry writes the text exposition format 0.0.4 itself (``# HELP``
and ``# TYPE`` lines, escaped label values, cumulative histogram buckets ending in
``le="+Inf"``). `MetricsObserver` turns the `Server`'s notifications (`aiodicom.aio.events`)
into counters; process gauges are read from ``/proc/self`` when scraped. `serve_metrics`
answers ``GET /metrics`` on a bounded, always-closing HTTP/1.1 listener on the same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiodicom.aio.events import (
    AssociationAccepted,
    AssociationEnded,
    AssociationRefused,
    HandshakeFailed,
    RequestCompleted,
    ServerEvent,
)
from aiodicom.core.dimse import Status
from aiodicom.errors import ConfigurationError

__all__ = [
    "CONTENT_TYPE",
    "Counter",
    "Gauge",
    "Histogram",
    "Metrics",
    "MetricsObserver",
    "parse_listen_address",
    "register_crl_metrics",
    "serve_metrics",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*\Z")
_LABEL = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")

REQUEST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ASSOCIATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)

Labels = tuple[str, ...]


def format_value(value: float) -> str:
    """A sample value as Prometheus writes it: integers without ``.0``, ``+Inf``, ``NaN``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


def escape_label_value(value: str) -> str:
    """Label values escape backslash, double quote and newline (format 0.0.4)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    pairs = ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + pairs + "}"


class _Metric:
    kind = "untyped"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = ()) -> None:
        if not _NAME.match(name):
            raise ConfigurationError(f"metric name {name!r} is not [a-zA-Z_:][a-zA-Z0-9_:]*")
        for label in labelnames:
            if not _LABEL.match(label) or label.startswith("__") or label == "le":
                raise ConfigurationError(f"label name {label!r} is not allowed on {name}")
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)

    def _key(self, labels: dict[str, str]) -> Labels:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name} takes labels {self.labelnames}, got {tuple(labels)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> Iterable[str]:
        raise NotImplementedError


class Counter(_Metric):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (), *,
                 function: Callable[[], float | None] | None = None) -> None:
        super().__init__(name, help, labelnames)
        self._values: dict[Labels, float] = {} if labelnames else {(): 0.0}
        self._function = function
        """Read at each scrape instead of the stored value (label-less metrics only)."""

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError(f"{self.name}: a counter only goes up (got {amount})")
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def value(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> Iterable[str]:
        if self._function is not None:
            value = self._function()
            if value is not None:
                yield f"{self.name} {format_value(value)}"
            return
        for key, value in self._values.items():
            yield f"{self.name}{_label_text(self.labelnames, key)} {format_value(value)}"


class Gauge(Counter):
    """A value that goes up and down; ``function`` (if given) is read at each scrape."""

    kind = "gauge"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def set(self, value: float, **labels: str) -> None:
        self._values[self._key(labels)] = float(value)


class Histogram(_Metric):
    """Observations counted into fixed, cumulative ``le`` buckets, with ``_sum`` and ``_count``."""

    kind = "histogram"

    def __init__(self, name: str, help: str, labelnames: Sequence[str] = (), *,
                 buckets: Sequence[float] = REQUEST_BUCKETS) -> None:
        super().__init__(name, help, labelnames)
        bounds = sorted(float(b) for b in buckets if not math.isinf(b))
        if not bounds or len(set(bounds)) != len(bounds):
            raise ConfigurationError(f"{name}: buckets must be distinct finite numbers")
        self.buckets = tuple(bounds)
        self._series: dict[Labels, tuple[list[int], list[float]]] = {}
        if not labelnames:
            self._series[()] = ([0] * (len(bounds) + 1), [0.0])

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = ([0] * (len(self.buckets) + 1), [0.0])
        counts, total = series
        index = len(self.buckets)
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                index = i
                break
        counts[index] += 1
        total[0] += value

    def count(self, **labels: str) -> int:
        series = self._series.get(self._key(labels))
        return sum(series[0]) if series else 0

    def samples(self) -> Iterable[str]:
        names = (*self.labelnames, "le")
        for key, (counts, total) in self._series.items():
            running = 0
            for bound, n in zip((*self.buckets, math.inf), counts, strict=True):
                running += n
                le = "+Inf" if math.isinf(bound) else repr(bound)
                yield f"{self.name}_bucket{_label_text(names, (*key, le))} {running}"
            labels = _label_text(self.labelnames, key)
            yield f"{self.name}_sum{labels} {format_value(total[0])}"
            yield f"{self.name}_count{labels} {running}"


class Metrics:
    """A registry: metrics in registration order, rendered as one exposition document."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _add(self, metric: _Metric) -> None:
        if metric.name in self._metrics:
            raise ConfigurationError(f"metric {metric.name} is registered twice")
        self._metrics[metric.name] = metric

    def counter(self, name: str, help: str, labelnames: Sequence[str] = (), *,
                function: Callable[[], float | None] | None = None) -> Counter:
        metric = Counter(name, help, labelnames, function=function)
        self._add(metric)
        return metric

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = (), *,
              function: Callable[[], float | None] | None = None) -> Gauge:
        metric = Gauge(name, help, labelnames, function=function)
        self._add(metric)
        return metric

    def histogram(self, name: str, help: str, labelnames: Sequence[str] = (), *,
                  buckets: Sequence[float] = REQUEST_BUCKETS) -> Histogram:
        metric = Histogram(name, help, labelnames, buckets=buckets)
        self._add(metric)
        return metric

    def render(self) -> str:
        """The text exposition format 0.0.4, newline-terminated."""
        lines: list[str] = []
        for metric in self._metrics.values():
            lines += metric.header()
            lines += metric.samples()
        return "\n".join(lines) + "\n"


# -- process gauges (Linux /proc; absent elsewhere) -------------------------------------------


def _resident_memory() -> float | None:
    try:
        with open("/proc/self/statm", "rb") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return float(pages * os.sysconf("SC_PAGE_SIZE"))


def _open_fds() -> float | None:
    try:
        return float(len(os.listdir("/proc/self/fd")))
    except OSError:
        return None


def _max_fds() -> float | None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return None
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return None if soft == resource.RLIM_INFINITY else float(soft)


def _cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def register_process_metrics(metrics: Metrics) -> None:
    """The standard ``process_*`` gauges, read at scrape time."""
    metrics.gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                  function=_resident_memory)
    metrics.gauge("process_open_fds", "Number of open file descriptors.", function=_open_fds)
    metrics.gauge("process_max_fds", "Maximum number of open file descriptors.",
                  function=_max_fds)
    metrics.counter("process_cpu_seconds_total", "Total user and system CPU time in seconds.",
                    function=_cpu_seconds)


def register_crl_metrics(metrics: Metrics, tls_context: Any) -> None:
    """CRL freshness gauges read at scrape time from a `ReloadingServerContext` (its
    ``crl_validity``): alert on ``aiodicom_tls_crl_next_update_timestamp_seconds - time()``
    falling under a few days, since past it every client the CRL covers is refused."""

    def validity() -> Any:
        return getattr(tls_context, "crl_validity", None)

    def next_update() -> float | None:
        v = validity()
        return None if v is None or v.next_update is None else float(v.next_update.timestamp())

    def age() -> float | None:
        v = validity()
        return None if v is None else time.time() - v.last_update.timestamp()

    metrics.gauge("aiodicom_tls_crl_next_update_timestamp_seconds",
                  "Earliest nextUpdate of the CRLs in use (Unix time); past it, clients are "
                  "refused.", function=next_update)
    metrics.gauge("aiodicom_tls_crl_age_seconds",
                  "Seconds since the newest lastUpdate of the CRLs in use.", function=age)


# -- the observer --------------------------------------------------------------------------------


class MetricsObserver:
    """A `Server` observer counting associations, requests and bytes into a `Metrics`.

    Only associations that were accepted count as active, end as released/aborted and have
    a duration; ``bytes_received`` counts every connection, refused ones included.
    """

    def __init__(self, metrics: Metrics | None = None, *, process: bool = True) -> None:
        m = self.metrics = metrics if metrics is not None else Metrics()
        self.active = m.gauge("aiodicom_associations_active", "Associations established now.")
        self.associations = m.counter(
            "aiodicom_associations_total", "Association requests answered, by result.",
            ("result",))
        self.ended = m.counter(
            "aiodicom_associations_ended_total",
            "Established associations that ended, by how (A-RELEASE or abort/drop).", ("how",))
        self.bytes_received = m.counter(
            "aiodicom_bytes_received_total", "Bytes received on DICOM connections (PDUs).")
        self.requests = m.counter(
            "aiodicom_requests_total", "DIMSE requests performed, by service and status category.",
            ("service", "status_category"))
        self.stores = m.counter(
            "aiodicom_stores_total", "C-STORE requests by final status code (hex).", ("status",))
        self.request_duration = m.histogram(
            "aiodicom_request_duration_seconds",
            "Time from a request's command to its response, by service.", ("service",),
            buckets=REQUEST_BUCKETS)
        self.association_duration = m.histogram(
            "aiodicom_association_duration_seconds",
            "Lifetime of established associations, connection to close.",
            buckets=ASSOCIATION_BUCKETS)
        self.handshake_failures = m.counter(
            "aiodicom_tls_handshake_failures_total",
            "Connections to a TLS listener that ended before the handshake completed.")
        for result in ("accepted", "rejected"):
            self.associations.inc(0, result=result)
        for how in ("released", "aborted"):
            self.ended.inc(0, how=how)
        if process:
            register_process_metrics(m)

    def __call__(self, event: ServerEvent) -> None:
        if isinstance(event, RequestCompleted):
            category = Status(event.status).category.value
            self.requests.inc(service=event.service, status_category=category)
            self.request_duration.observe(event.duration, service=event.service)
            if event.service == "C-STORE":
                self.stores.inc(status=f"0x{event.status:04X}")
        elif isinstance(event, AssociationAccepted):
            self.associations.inc(result="accepted")
            self.active.inc()
        elif isinstance(event, AssociationRefused):
            self.associations.inc(result="rejected")
        elif isinstance(event, HandshakeFailed):
            self.handshake_failures.inc()
        elif isinstance(event, AssociationEnded):
            self.bytes_received.inc(event.bytes_received)
            if event.info is not None:
                self.active.dec()
                self.ended.inc(how="aborted" if event.aborted else "released")
                self.association_duration.observe(event.duration)


# -- the HTTP endpoint --------------------------------------------------------------------------

MAX_REQUEST_HEAD = 8192
"""Largest request line plus headers we read; anything longer gets 431 and a close."""
READ_TIMEOUT = 10.0


def parse_listen_address(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT`` -> (host, port)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = default_host
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigurationError(f"metrics address {text!r}: write an IPv6 host as [HOST]:PORT")
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigurationError(
            f"metrics address {text!r} is not [HOST:]PORT (e.g. 9100 or 0.0.0.0:9100)"
        ) from None
    if not 0 <= port <= 65535:
        raise ConfigurationError(f"metrics port {port} is not a port number (0-65535)")
    return host or default_host, port


def _response(status: str, body: bytes, content_type: str, *, head: bool = False,
              extra: str = "") -> bytes:
    header = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    ).encode("ascii")
    return header if head else header + body


def _answer(head: bytes, metrics: Metrics) -> bytes:
    text = "text/plain; charset=utf-8"
    try:
        method, target, version = head.split(b"\r\n", 1)[0].decode("ascii").split(" ")
    except (UnicodeDecodeError, ValueError):
        return _response("400 Bad Request", b"bad request\n", text)
    if not version.startswith("HTTP/1."):
        return _response("505 HTTP Version Not Supported", b"HTTP/1.x only\n", text)
    if target.split("?", 1)[0] != "/metrics":
        return _response("404 Not Found", b"try /metrics\n", text, head=method == "HEAD")
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", b"GET or HEAD\n", text,
                         extra="Allow: GET, HEAD\r\n")
    return _response("200 OK", metrics.render().encode("utf-8"), CONTENT_TYPE,
                     head=method == "HEAD")


async def _handle(metrics: Metrics, reader: asyncio.StreamReader,
                  writer: asyncio.StreamWriter) -> None:
    try:
        async with asyncio.timeout(READ_TIMEOUT):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                answer = _response("431 Request Header Fields Too Large", b"too large\n",
                                   "text/plain; charset=utf-8")
            except asyncio.IncompleteReadError:
                return
            else:
                answer = _answer(head, metrics)
            writer.write(answer)
            await writer.drain()
    except (TimeoutError, OSError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            async with asyncio.timeout(READ_TIMEOUT):
                await writer.wait_closed()


async def serve_metrics(host: str, port: int, metrics: Metrics) -> asyncio.Server:
    """Listen for Prometheus scrapes: ``GET /metrics`` answers, anything else 404/405.

    One request per connection (``Connection: close``); the request head is bounded by
    `MAX_REQUEST_HEAD` and `READ_TIMEOUT`, and the body is rendered in memory, so a slow or
    hostile client holds one small task, never the loop.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(metrics, reader, writer)

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_HEAD)
