"""Prometheus metrics for `aiodicom serve` through prometheus_client: observer and endpoint.

`MetricsObserver` turns the `Server`'s notifications (`aiodicom.aio.events`) into
prometheus_client counters, gauges and histograms in a `Metrics` registry; `serve_metrics`
answers ``GET /metrics`` on a bounded, always-closing HTTP/1.1 listener on the same loop.

One endpoint whatever the number of workers: under ``serve --workers N`` the supervisor
gives every worker a ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess mode:
each worker's values live in memory-mapped files there) and serves the aggregate itself
(`app/server/metrics_shared.py`): counters and histograms summed over workers, dead ones
included; ``aiodicom_associations_active`` summed over live workers; the CRL gauges the
worst of the live workers; ``process_*`` per worker (``pid`` label). A worker then serves
no endpoint of its own. prometheus_client is imported only when metrics are on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

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

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = [
    "CONTENT_TYPE",
    "SHARED_ENV",
    "Metrics",
    "MetricsObserver",
    "parse_listen_address",
    "register_crl_metrics",
    "register_proxy_metrics",
    "register_trust_metrics",
    "serve_metrics",
]

log = logging.getLogger("aiodicom.serve")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SHARED_ENV = "PROMETHEUS_MULTIPROC_DIR"
"""Set by the supervisor for its workers: values go to files there, it serves the sum."""

REQUEST_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ASSOCIATION_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)


class Renderable(Protocol):
    def render(self) -> str: ...


class Metrics:
    """A prometheus_client registry (never the global one) plus hooks that refresh gauges.

    ``shared`` is true in a worker of ``serve --workers N`` (prometheus_client's
    multiprocess mode): the supervisor scrapes its files, so gauges that are computed (CRL
    age) must be refreshed periodically by the worker (`refresh`), not at scrape time.
    """

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]  # no ``*_created`` series: the names operators know
        self.registry: CollectorRegistry = CollectorRegistry()
        self.shared = bool(os.environ.get(SHARED_ENV)) and bool(os.environ.get("AIODICOM_WORKER"))
        self._refresh: list[Callable[[], None]] = []

    def on_refresh(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` before each scrape (and periodically in a worker: `refresh`)."""
        self._refresh.append(hook)

    def refresh(self) -> None:
        for hook in self._refresh:
            try:
                hook()
            except Exception:  # a broken gauge must not break the scrape
                log.exception("metrics refresh failed")

    def render(self) -> str:
        """The text exposition format 0.0.4, newline-terminated."""
        from prometheus_client import generate_latest

        self.refresh()
        return generate_latest(self.registry).decode("utf-8")


def register_crl_metrics(metrics: Metrics, tls_context: Any) -> None:
    """CRL freshness gauges from a `ReloadingServerContext` (its ``crl_validity``), present
    when a CRL is in use: alert on ``aiodicom_tls_crl_next_update_timestamp_seconds - time()``
    falling under a few days, since past it every client the CRL covers is refused. Across
    workers: the earliest next update and the oldest CRL of the live workers."""
    from prometheus_client import Gauge

    if getattr(tls_context, "crl_validity", None) is None:
        return
    next_update = Gauge(
        "aiodicom_tls_crl_next_update_timestamp_seconds",
        "Earliest nextUpdate of the CRLs in use (Unix time); past it, clients are refused.",
        registry=metrics.registry, multiprocess_mode="livemin")
    age = Gauge("aiodicom_tls_crl_age_seconds",
                "Seconds since the newest lastUpdate of the CRLs in use.",
                registry=metrics.registry, multiprocess_mode="livemax")

    def refresh() -> None:
        validity = getattr(tls_context, "crl_validity", None)
        if validity is None:
            return
        if validity.next_update is not None:
            next_update.set(validity.next_update.timestamp())
        age.set(time.time() - validity.last_update.timestamp())

    refresh()
    metrics.on_refresh(refresh)


def register_trust_metrics(metrics: Metrics, mirrors: Any, tls_context: Any = None) -> None:
    """Trust objects polled from an object store (`app/server/trust_source.TrustMirrors`):
    fetches by result (``updated``, ``unchanged``, ``failed``, ``refused``) and the time of
    the last fetch that reached the store, per option; alert when that time falls behind or
    ``failed``/``refused`` grow. ``aiodicom_tls_reload_failing`` is 1 while the newest trust
    files do not build a TLS context (the previous one stays in force)."""
    from prometheus_client import Counter, Gauge

    fetches = Counter("aiodicom_trust_fetches_total",
                      "Conditional GETs of trust objects (--ca/--crl/--policy/--users URLs), "
                      "by option and result.", ("option", "result"), registry=metrics.registry)
    last = Gauge("aiodicom_trust_last_success_timestamp_seconds",
                 "Unix time of the last fetch of a trust object that reached the store.",
                 ("option",), registry=metrics.registry, multiprocess_mode="livemin")
    seen: dict[tuple[str, str], int] = {}
    failing = None
    if tls_context is not None:
        failing = Gauge("aiodicom_tls_reload_failing",
                        "1 while the newest trust files do not build a TLS context.",
                        registry=metrics.registry, multiprocess_mode="livemax")
    for f in mirrors.files:
        for result in ("updated", "unchanged", "failed", "refused"):
            fetches.labels(option=f.option, result=result)

    def refresh() -> None:  # counters follow the mirrors' own counts (no prometheus there)
        for f in mirrors.files:
            for result, count in f.stats.results.items():
                before = seen.get((f.option, result), 0)
                if count > before:
                    fetches.labels(option=f.option, result=result).inc(count - before)
                    seen[(f.option, result)] = count
            last.labels(option=f.option).set(f.stats.last_success)
        if failing is not None:
            failing.set(0 if getattr(tls_context, "last_error", None) is None else 1)

    refresh()
    metrics.on_refresh(refresh)


PROXY_COUNTERS = (
    ("refused_sources", "aiodicom_proxy_refused_sources_total",
     "Connections refused because their source is not in --proxy-from."),
    ("bad_headers", "aiodicom_proxy_bad_headers_total",
     "Connections closed for a missing, malformed or unaccepted PROXY v2 header."),
    ("timeouts", "aiodicom_proxy_header_timeouts_total",
     "Connections closed because no whole PROXY header arrived in time."),
    ("probes", "aiodicom_proxy_probes_total",
     "LOCAL connections that closed before speaking (the proxy's health checks)."),
    ("relayed", "aiodicom_proxy_relayed_total",
     "Connections handed on after their PROXY header (a client's, or LOCAL that spoke)."),
)
"""`ProxyStats` field, metric name, help: what ``--proxy-protocol`` refused or let through."""


def register_proxy_metrics(metrics: Metrics, stats: Any) -> None:
    """The PROXY stage's counters (``Server.proxy_stats``, `aiodicom.aio._proxy.ProxyStats`,
    plain integers in the aio layer) as Prometheus counters. Each refresh adds what the
    stats gained since the last one, so in a worker of ``serve --workers N`` the counter in
    its own multiprocess file holds that worker's count and the supervisor's sum is the
    server's: read at scrape time, never counted twice. Alert on ``refused_sources`` (a
    machine that is not the proxy reaching the port) and ``bad_headers`` growing."""
    from prometheus_client import Counter

    counters = [(field, Counter(name, text, registry=metrics.registry))
                for field, name, text in PROXY_COUNTERS]
    seen = dict.fromkeys((field for field, _ in counters), 0)

    def refresh() -> None:
        for field, counter in counters:
            count = int(getattr(stats, field))
            if count > seen[field]:
                counter.inc(count - seen[field])
                seen[field] = count

    refresh()
    metrics.on_refresh(refresh)


# -- the observer --------------------------------------------------------------------------------


class MetricsObserver:
    """A `Server` observer counting associations, requests and bytes into a `Metrics`.

    Only associations that were accepted count as active, end as released/aborted and have
    a duration; ``bytes_received`` counts every connection, refused ones included. Label
    children are looked up once and kept, so an event costs the increments and nothing else.
    """

    wants_requests = True
    """Every request is counted (`aiodicom.aio.events.wants_requests`)."""

    def __init__(self, metrics: Metrics | None = None, *, process: bool = True) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        m = self.metrics = metrics if metrics is not None else Metrics()
        r = m.registry
        self.active = Gauge("aiodicom_associations_active", "Associations established now.",
                            registry=r, multiprocess_mode="livesum")
        self.associations = Counter(
            "aiodicom_associations_total", "Association requests answered, by result.",
            ("result",), registry=r)
        self.ended = Counter(
            "aiodicom_associations_ended_total",
            "Established associations that ended, by how (A-RELEASE or abort/drop).", ("how",),
            registry=r)
        self.bytes_received = Counter(
            "aiodicom_bytes_received_total", "Bytes received on DICOM connections (PDUs).",
            registry=r)
        self.requests = Counter(
            "aiodicom_requests_total", "DIMSE requests performed, by service and status category.",
            ("service", "status_category"), registry=r)
        self.stores = Counter(
            "aiodicom_stores_total", "C-STORE requests by final status code (hex).", ("status",),
            registry=r)
        self.request_duration = Histogram(
            "aiodicom_request_duration_seconds",
            "Time from a request's command to its response, by service.", ("service",),
            buckets=REQUEST_BUCKETS, registry=r)
        self.association_duration = Histogram(
            "aiodicom_association_duration_seconds",
            "Lifetime of established associations, connection to close.",
            buckets=ASSOCIATION_BUCKETS, registry=r)
        self.handshake_failures = Counter(
            "aiodicom_tls_handshake_failures_total",
            "Connections to a TLS listener that ended before the handshake completed.",
            registry=r)
        self._accepted = self.associations.labels(result="accepted")
        self._rejected = self.associations.labels(result="rejected")
        self._released = self.ended.labels(how="released")
        self._aborted = self.ended.labels(how="aborted")
        self._per_request: dict[str, dict[int, tuple[Any, Any, Any]]] = {}
        if process and not m.shared:  # workers: the supervisor reads /proc/PID per worker
            from prometheus_client import ProcessCollector

            ProcessCollector(registry=r)

    def _children(self, service: str, status: int) -> tuple[Any, Any, Any]:
        category = Status(status).category.value
        children = (
            self.requests.labels(service=service, status_category=category),
            self.request_duration.labels(service=service),
            self.stores.labels(status=f"0x{status:04X}") if service == "C-STORE" else None,
        )
        self._per_request.setdefault(service, {})[status] = children
        return children

    def __call__(self, event: ServerEvent) -> None:
        if isinstance(event, RequestCompleted):
            by_status = self._per_request.get(event.service)
            children = by_status.get(event.status) if by_status is not None else None
            if children is None:
                children = self._children(event.service, event.status)
            count, duration, store = children
            count.inc()
            duration.observe(event.duration)
            if store is not None:
                store.inc()
        elif isinstance(event, AssociationAccepted):
            self._accepted.inc()
            self.active.inc()
        elif isinstance(event, AssociationRefused):
            self._rejected.inc()
        elif isinstance(event, HandshakeFailed):
            self.handshake_failures.inc()
        elif isinstance(event, AssociationEnded):
            self.bytes_received.inc(event.bytes_received)
            if event.info is not None:
                self.active.dec()
                (self._aborted if event.aborted else self._released).inc()
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


def _answer(head: bytes, metrics: Renderable) -> bytes:
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
    try:
        body = metrics.render().encode("utf-8")
    except Exception:  # e.g. a worker's file being written: answer, do not hang up
        log.exception("rendering /metrics failed")
        return _response("500 Internal Server Error", b"metrics failed, see the log\n", text)
    return _response("200 OK", body, CONTENT_TYPE, head=method == "HEAD")


async def _handle(metrics: Renderable, reader: asyncio.StreamReader,
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


async def serve_metrics(host: str, port: int, metrics: Renderable) -> asyncio.Server:
    """Listen for Prometheus scrapes: ``GET /metrics`` answers, anything else 404/405.

    One request per connection (``Connection: close``); the request head is bounded by
    `MAX_REQUEST_HEAD` and `READ_TIMEOUT`, and the body is rendered in memory, so a slow or
    hostile client holds one small task, never the loop.
    """

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(metrics, reader, writer)

    return await asyncio.start_server(handle, host, port, limit=MAX_REQUEST_HEAD)
