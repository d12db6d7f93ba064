"""PROXY protocol version 2 header (HAProxy ``send-proxy-v2``), sans-I/O.

A TCP load balancer that does not terminate TLS (HAProxy in ``mode tcp``) puts this header
in clear at the start of each connection it opens to a node, before the first byte of the
client's own stream (the TLS ClientHello or the A-ASSOCIATE-RQ). It carries the client's
real address, so logs, the audit trail and per-address limits see the client, not the proxy.
Specification: HAProxy's "The PROXY protocol, Versions 1 & 2" (section 2.2).

Layout: a 12-byte signature, one version/command byte (version 2; LOCAL or PROXY), one
family/transport byte, a 2-byte big-endian length of what follows, then the addresses for
that family and optional TLVs. LOCAL (HAProxy's own health checks) carries no client: the
connection's real endpoints stand. TLVs are skipped unread; their total is bounded by
`MAX_V2_LENGTH`, far below what the format allows (64 KiB), so a peer cannot make us buffer.

Only version 2 is accepted. The version 1 text form (``send-proxy``) is recognised and
refused with an error that names the fix: the binary form has exact lengths, so a reader
never takes a byte of the stream that follows, and one form is one parser to trust.

`header_bytes_needed` tells a reader exactly how many more bytes to read (never more than
the header), so the bytes after it stay in the socket for the TLS handshake or the DICOM
upper layer; it refuses a wrong signature on its first byte.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass

__all__ = [
    "FIXED_LENGTH",
    "MAX_V2_LENGTH",
    "SIGNATURE",
    "ProxyCommand",
    "ProxyFamily",
    "ProxyHeader",
    "ProxyHeaderError",
    "encode_proxy_header",
    "header_bytes_needed",
    "parse_proxy_header",
]

SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
"""The 12-byte v2 signature (it cannot start an A-ASSOCIATE-RQ, a TLS record or HTTP)."""
FIXED_LENGTH = 16
"""Signature, version/command, family/transport, 2-byte length."""
MAX_V2_LENGTH = 512
"""Longest address block + TLVs accepted: a UNIX address pair is 216 bytes; HAProxy's
TLVs (ALPN, authority, unique ID, SSL summary) add a few dozen to a few hundred."""

_V1_PREFIX = b"PROXY "
_VERSION = 0x2


class ProxyCommand(enum.IntEnum):
    LOCAL = 0x0
    """The proxy's own connection (a health check): use the real endpoints."""
    PROXY = 0x1
    """Relayed for a client whose addresses follow."""


class ProxyFamily(enum.IntEnum):
    UNSPEC = 0x0
    INET = 0x1
    INET6 = 0x2
    UNIX = 0x3


_ADDRESS_LENGTH: dict[int, int] = {ProxyFamily.INET: 12, ProxyFamily.INET6: 36}
_STREAM = 0x1


class ProxyHeaderError(ValueError):
    """The connection does not start with a PROXY v2 header we accept (refuse it)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyHeader:
    """A parsed header. LOCAL: ``family`` UNSPEC, no addresses (the spec says to ignore
    them; the connection's own endpoints stand)."""

    command: ProxyCommand
    family: ProxyFamily
    source: tuple[str, int] | None = None
    """The client's (address, port) as the proxy saw it."""
    destination: tuple[str, int] | None = None
    """The proxy's own (address, port) the client connected to."""
    length: int = FIXED_LENGTH
    """Bytes the header took (16 + its length field)."""


def header_bytes_needed(data: bytes | bytearray | memoryview) -> int:
    """How many more bytes complete the header that `data` starts (0: it is whole).

    Raises `ProxyHeaderError` as soon as the bytes so far cannot begin a v2 header, so a
    connection without one is refused on its first byte.
    """
    head = bytes(data[:FIXED_LENGTH])
    if not SIGNATURE.startswith(head[: len(SIGNATURE)]):
        if _V1_PREFIX.startswith(head[: len(_V1_PREFIX)]):
            raise ProxyHeaderError(
                "a PROXY protocol v1 (text) header: this server accepts v2 only "
                "(HAProxy: send-proxy-v2 on the server line)")
        raise ProxyHeaderError(
            "the connection does not start with a PROXY protocol v2 header "
            f"(first bytes {head[:8].hex()}); is it coming through the proxy?")
    if len(head) < FIXED_LENGTH:
        return FIXED_LENGTH - len(head)
    length = _check_fixed(head)
    return max(0, FIXED_LENGTH + length - len(data))


def _check_fixed(head: bytes) -> int:
    """Validate the 16-byte fixed part (signature already checked); return its length."""
    version, command = head[12] >> 4, head[12] & 0x0F
    if version != _VERSION:
        raise ProxyHeaderError(f"PROXY header version {version}, expected 2")
    if command not in (ProxyCommand.LOCAL, ProxyCommand.PROXY):
        raise ProxyHeaderError(f"PROXY v2 command {command:#x} is neither LOCAL nor PROXY")
    length = int.from_bytes(head[14:16], "big")
    if length > MAX_V2_LENGTH:
        raise ProxyHeaderError(
            f"PROXY v2 header of {length} bytes after the fixed part; at most "
            f"{MAX_V2_LENGTH} accepted")
    if command == ProxyCommand.PROXY:
        family, transport = head[13] >> 4, head[13] & 0x0F
        needed = _ADDRESS_LENGTH.get(family)
        if needed is None or transport != _STREAM:
            raise ProxyHeaderError(
                f"PROXY v2 family/transport {head[13]:#04x}: only TCP over IPv4 (0x11) or "
                "IPv6 (0x21) is relayed here")
        if length < needed:
            raise ProxyHeaderError(
                f"PROXY v2 length {length} is shorter than the {needed}-byte address block "
                f"of family {ProxyFamily(family).name}")
    return length


def parse_proxy_header(data: bytes | bytearray | memoryview) -> ProxyHeader:
    """Parse exactly one whole header (what `header_bytes_needed` said to read)."""
    if header_bytes_needed(data):
        raise ProxyHeaderError(f"PROXY v2 header incomplete ({len(data)} bytes)")
    head = bytes(data[:FIXED_LENGTH])
    length = _check_fixed(head)
    total = FIXED_LENGTH + length
    if len(data) != total:
        raise ProxyHeaderError(
            f"PROXY v2 header is {total} bytes but {len(data)} were given")
    command = ProxyCommand(head[12] & 0x0F)
    if command == ProxyCommand.LOCAL:
        return ProxyHeader(command=command, family=ProxyFamily.UNSPEC, length=total)
    body = bytes(data[FIXED_LENGTH:total])
    family = ProxyFamily(head[13] >> 4)
    size = 4 if family == ProxyFamily.INET else 16
    source = ipaddress.ip_address(body[:size])
    destination = ipaddress.ip_address(body[size:2 * size])
    ports = body[2 * size:2 * size + 4]
    return ProxyHeader(
        command=command, family=family, length=total,
        source=(str(source), int.from_bytes(ports[:2], "big")),
        destination=(str(destination), int.from_bytes(ports[2:], "big")),
    )


def encode_proxy_header(
    source: tuple[str, int] | None = None,
    destination: tuple[str, int] | None = None,
    *,
    tlvs: bytes = b"",
) -> bytes:
    """A PROXY v2 header: PROXY/TCP for the given addresses, LOCAL when both are None.

    For tests, fuzzing and tools that speak to a node as the proxy would.
    """
    if source is None or destination is None:
        if source is not None or destination is not None:
            raise ValueError("give both source and destination, or neither (LOCAL)")
        return SIGNATURE + bytes((0x20, 0x00)) + len(tlvs).to_bytes(2, "big") + tlvs
    src, dst = ipaddress.ip_address(source[0]), ipaddress.ip_address(destination[0])
    if src.version != dst.version:
        raise ValueError("source and destination must both be IPv4 or both IPv6")
    family = ProxyFamily.INET if src.version == 4 else ProxyFamily.INET6
    body = (src.packed + dst.packed + source[1].to_bytes(2, "big")
            + destination[1].to_bytes(2, "big") + tlvs)
    return (SIGNATURE + bytes((0x21, (family << 4) | _STREAM))
            + len(body).to_bytes(2, "big") + body)
