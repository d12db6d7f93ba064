"""PROXY protocol v2 on a listener: behind HAProxy in ``mode tcp`` (``send-proxy-v2``).

With `ProxyProtocol` given to `Server`, every connection must come from an address in
``allowed`` (else it is closed before a byte is read) and start with a PROXY v2 header
(`aiodicom.core.proxy_header`; else it is closed). The header is read from the raw socket
with exactly the byte counts the parser asks for, so the client's own stream (its TLS
ClientHello, its A-ASSOCIATE-RQ) stays in the socket and the same TLS handshake and DICOM
paths then run on it: mutual TLS is end to end, certificate identity and AE binding do not
change. The address in the header is what logs, the audit trail, metrics and the
per-address caps (`_connection_caps`) see.

A LOCAL header is the proxy speaking for itself: HAProxy's health checks send one with no
addresses, then reset the connection (or, with a DICOM check, associate). The peer is then
the proxy. A LOCAL connection that closes before its first byte after the header is a
routine probe: it ends here at debug level, counted in `ProxyStats.probes`, never as a
failed handshake or association. A reset can arrive before bytes already sent are read, so
a reset with no header byte read is treated the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiodicom.core.proxy_header import (
    ProxyCommand,
    ProxyHeaderError,
    header_bytes_needed,
    parse_proxy_header,
)
from aiodicom.errors import ConfigurationError

__all__ = ["DEFAULT_PROXY_FROM", "ProxyProtocol", "ProxyStats", "Relayed", "receive_header"]

log = logging.getLogger("aiodicom.server")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_PROXY_FROM = ("127.0.0.0/8", "::1/128")
"""Where the proxy may connect from when ``--proxy-from`` is not given: this machine."""


def parse_networks(cidrs: str | Iterable[str]) -> tuple[Network, ...]:
    """``"10.0.0.0/8,192.0.2.7"`` (or a list) -> networks; ConfigurationError naming a bad
    one. A bare address is a /32 (/128)."""
    items = cidrs.split(",") if isinstance(cidrs, str) else list(cidrs)
    networks: list[Network] = []
    for item in items:
        text = item.strip()
        if not text:
            continue
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ConfigurationError(f"--proxy-from: {text!r} is not an address or CIDR "
                                     f"({exc})") from None
    if not networks:
        raise ConfigurationError("--proxy-from needs at least one address or CIDR")
    return tuple(networks)


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyProtocol:
    """Require a PROXY v2 header on every connection, from these proxy addresses only."""

    allowed: tuple[Network, ...] = field(
        default_factory=lambda: parse_networks(DEFAULT_PROXY_FROM))
    """The proxies' addresses (``--proxy-from``); any other source is closed at once."""
    header_timeout: float = 5.0
    """A header (and, after LOCAL, the first byte or the close) must arrive within this."""
    max_pending: int = 1024
    """Connections still reading their header, server-wide; at the cap the oldest is
    dropped. They all come from the proxy, so there is no per-address cap at this stage:
    the per-address caps apply after the header, to the client it names."""

    def __post_init__(self) -> None:
        if not self.allowed:
            raise ConfigurationError("ProxyProtocol.allowed must name at least one network")
        if self.header_timeout <= 0:
            raise ConfigurationError("ProxyProtocol.header_timeout must be positive")
        if self.max_pending < 1:
            raise ConfigurationError("ProxyProtocol.max_pending must be at least 1")

    @classmethod
    def from_cidrs(cls, cidrs: str | Iterable[str] | None, **kw: float) -> ProxyProtocol:
        allowed = parse_networks(cidrs if cidrs is not None else DEFAULT_PROXY_FROM)
        return cls(allowed=allowed, **kw)  # type: ignore[arg-type]

    def allows(self, host: str) -> bool:
        address = normal_ip(host)
        return address is not None and any(address in network for network in self.allowed)


@dataclass(slots=True)
class ProxyStats:
    """What the PROXY stage refused or let through (counters, never reset)."""

    refused_sources: int = 0
    """Connections from an address not in ``allowed``."""
    bad_headers: int = 0
    """No header, a malformed one, or one we do not accept (v1, UDP, UNIX...)."""
    timeouts: int = 0
    """No whole header within ``header_timeout``."""
    probes: int = 0
    """LOCAL connections that closed before sending anything else (health checks)."""
    relayed: int = 0
    """Connections handed on (PROXY for a client, or LOCAL that went on to speak)."""


@dataclass(frozen=True, slots=True)
class Relayed:
    peer: tuple[str, int]
    """The client's address from the header; for LOCAL, the proxy's own."""
    local: bool


def refuse_source(stats: ProxyStats, host: str) -> None:
    """Count and log (rate-limited) a connection from a source not allowed to proxy."""
    stats.refused_sources += 1
    if stats.refused_sources == 1 or stats.refused_sources % 100 == 0:
        log.warning("connection from %s refused: not in --proxy-from (a PROXY protocol "
                    "listener only takes the proxy's connections; %d refused so far)",
                    host, stats.refused_sources)


async def receive_header(
    conn: socket.socket, source: tuple[str, int], proxy: ProxyProtocol, stats: ProxyStats,
) -> Relayed | None:
    """Read the header on `conn` (accepted from `source`); None when it is refused or was a
    probe (logged and counted; the caller closes `conn`)."""
    loop = asyncio.get_running_loop()
    data = bytearray()
    try:
        async with asyncio.timeout(proxy.header_timeout):
            while need := header_bytes_needed(data):
                chunk = await loop.sock_recv(conn, need)
                if not chunk:
                    raise EOFError
                data += chunk
            header = parse_proxy_header(data)
            local = header.command == ProxyCommand.LOCAL
            if local and not await _speaks(loop, conn):
                stats.probes += 1
                log.debug("PROXY LOCAL connection from %s:%d closed: a health check",
                          *source)
                return None
    except ProxyHeaderError as exc:
        _bad_header(stats, source, str(exc))
        return None
    except TimeoutError:
        stats.timeouts += 1
        log.info("connection from proxy %s:%d dropped: no PROXY header within %gs "
                 "(%d bytes received)", *source, proxy.header_timeout, len(data))
        return None
    except (OSError, EOFError) as exc:
        if data:
            _bad_header(stats, source, f"closed after {len(data)} bytes of a PROXY header "
                        f"({type(exc).__name__})")
        else:  # a reset may discard what the proxy sent: treat it as a probe
            stats.probes += 1
            log.debug("connection from proxy %s:%d closed before its PROXY header: %r",
                      *source, exc)
        return None
    stats.relayed += 1
    if header.source is None:
        return Relayed(peer=client_address(source), local=True)
    return Relayed(peer=client_address(header.source), local=False)


def client_address(peer: tuple[str, int]) -> tuple[str, int]:
    """One spelling per client: an IPv4-mapped IPv6 address (``::ffff:192.0.2.7``, what a
    dual-stack proxy reports for an IPv4 client) becomes its IPv4 form, so the per-address
    caps, logs and audit count one client once, not under two names."""
    address = normal_ip(peer[0])
    if isinstance(address, ipaddress.IPv4Address) and ":" in peer[0]:
        return (str(address), peer[1])
    return peer


def normal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """`host` as an address (zone index dropped, IPv4-mapped IPv6 as IPv4); None if it is
    not one."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _bad_header(stats: ProxyStats, source: tuple[str, int], why: str) -> None:
    stats.bad_headers += 1
    if stats.bad_headers <= 10 or stats.bad_headers % 100 == 0:
        log.warning("connection from %s:%d refused: %s (%d refused so far)",
                    *source, why, stats.bad_headers)


async def _speaks(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bool:
    """After LOCAL: True once a byte is waiting (left in the socket), False on close/reset."""
    ready: asyncio.Future[None] = loop.create_future()
    fd = conn.fileno()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)
    try:
        return bool(conn.recv(1, socket.MSG_PEEK))
    except BlockingIOError:  # pragma: no cover - readable yet nothing: look again
        return await _speaks(loop, conn)
    except OSError:
        return False


def close_quietly(conn: socket.socket) -> None:
    with contextlib.suppress(OSError):
        conn.close()
