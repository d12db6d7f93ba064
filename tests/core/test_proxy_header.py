"""PROXY protocol v2 header parser (core/proxy_header.py): every accepted and refused form."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.proxy_header import (
    FIXED_LENGTH,
    MAX_V2_LENGTH,
    SIGNATURE,
    ProxyCommand,
    ProxyFamily,
    ProxyHeader,
    ProxyHeaderError,
    encode_proxy_header,
    header_bytes_needed,
    parse_proxy_header,
)

# What HAProxy 2.6 sends for a health check with `check send-proxy-v2` (captured on this
# machine): LOCAL, family UNSPEC, no addresses.
HAPROXY_LOCAL = bytes.fromhex("0d0a0d0a000d0a515549540a20000000")
# A PROXY TCP4 header 127.0.0.1:40000 -> 127.0.0.1:11112 as HAProxy builds it.
TCP4 = SIGNATURE + bytes.fromhex("2111000c" "7f000001" "7f000001" "9c40" "2b68")


def read_all(data: bytes) -> ProxyHeader:
    """Read as the aio shell does: exactly what `header_bytes_needed` asks, then parse."""
    got = b""
    while need := header_bytes_needed(got):
        got += data[len(got):len(got) + need]
        assert len(got) <= len(data), "asked for more than the header"
    return parse_proxy_header(got)


def test_haproxy_local_health_check() -> None:
    header = read_all(HAPROXY_LOCAL + b"\x16\x03\x01")
    assert header == ProxyHeader(command=ProxyCommand.LOCAL, family=ProxyFamily.UNSPEC,
                                 length=16)
    assert header.source is None and header.destination is None


def test_tcp4_header() -> None:
    header = read_all(TCP4 + b"\x01\x00")
    assert header.command is ProxyCommand.PROXY and header.family is ProxyFamily.INET
    assert header.source == ("127.0.0.1", 40000)
    assert header.destination == ("127.0.0.1", 11112)
    assert header.length == 28


def test_tcp6_header_with_tlvs_skipped() -> None:
    tlvs = bytes.fromhex("0100026832") + bytes.fromhex("0400") + b"\x00" * 4  # ALPN, NOOP
    data = encode_proxy_header(("2001:db8::1", 1234), ("::1", 2762), tlvs=tlvs)
    header = read_all(data + b"rest")
    assert header.family is ProxyFamily.INET6
    assert header.source == ("2001:db8::1", 1234) and header.destination == ("::1", 2762)
    assert header.length == len(data) == 16 + 36 + len(tlvs)


def test_local_ignores_any_addresses() -> None:
    data = SIGNATURE + bytes((0x20, 0x11)) + (12).to_bytes(2, "big") + b"\x01" * 12
    header = read_all(data)
    assert header.command is ProxyCommand.LOCAL and header.source is None
    assert header.family is ProxyFamily.UNSPEC and header.length == 28


def test_encode_local_and_round_trip() -> None:
    assert encode_proxy_header() == HAPROXY_LOCAL
    assert encode_proxy_header(("127.0.0.1", 40000), ("127.0.0.1", 11112)) == TCP4


def test_encode_refuses_half_or_mixed_addresses() -> None:
    with pytest.raises(ValueError, match="both source and destination"):
        encode_proxy_header(("127.0.0.1", 1), None)
    with pytest.raises(ValueError, match="IPv4 or both IPv6"):
        encode_proxy_header(("127.0.0.1", 1), ("::1", 2))


def test_needed_counts_down_exactly() -> None:
    assert header_bytes_needed(b"") == FIXED_LENGTH
    assert header_bytes_needed(TCP4[:5]) == 11
    assert header_bytes_needed(TCP4[:16]) == 12
    assert header_bytes_needed(TCP4[:27]) == 1
    assert header_bytes_needed(TCP4) == 0
    assert header_bytes_needed(memoryview(TCP4)) == 0


@pytest.mark.parametrize("first", [
    b"\x01\x00\x00\x00\x00\xcd",  # an A-ASSOCIATE-RQ without a header
    b"\x16\x03\x01",  # a TLS ClientHello without a header
    b"GET / HTTP/1.1\r\n",
    b"\r\n\r\n\x01",  # right start, wrong 4th byte
])
def test_no_header_refused_on_first_wrong_byte(first: bytes) -> None:
    with pytest.raises(ProxyHeaderError, match="does not start with a PROXY protocol v2"):
        header_bytes_needed(first)


@pytest.mark.parametrize("first", [b"P", b"PROX", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"])
def test_v1_text_refused_naming_the_fix(first: bytes) -> None:
    with pytest.raises(ProxyHeaderError, match="v1 .*send-proxy-v2"):
        header_bytes_needed(first)


def fixed(ver_cmd: int, fam: int, length: int) -> bytes:
    return SIGNATURE + bytes((ver_cmd, fam)) + length.to_bytes(2, "big")


@pytest.mark.parametrize(("head", "message"), [
    (fixed(0x11, 0x11, 12), "version 1, expected 2"),
    (fixed(0x31, 0x11, 12), "version 3"),
    (fixed(0x22, 0x11, 12), "command 0x2 is neither"),
    (fixed(0x2F, 0x11, 12), "command 0xf"),
    (fixed(0x21, 0x11, MAX_V2_LENGTH + 1), "at most 512"),
    (fixed(0x20, 0x00, 0xFFFF), "65535 bytes"),
    (fixed(0x21, 0x12, 12), "0x12: only TCP"),  # UDP
    (fixed(0x21, 0x31, 216), "0x31"),  # UNIX stream
    (fixed(0x21, 0x01, 0), "0x01"),  # UNSPEC with PROXY
    (fixed(0x21, 0x41, 12), "0x41"),  # unknown family
    (fixed(0x21, 0x10, 12), "0x10"),  # INET, UNSPEC transport
    (fixed(0x21, 0x11, 11), "shorter than the 12-byte address block of family INET"),
    (fixed(0x21, 0x21, 12), "shorter than the 36-byte address block of family INET6"),
])
def test_bad_fixed_part_refused(head: bytes, message: str) -> None:
    with pytest.raises(ProxyHeaderError, match=message):
        header_bytes_needed(head)
    with pytest.raises(ProxyHeaderError, match=message):
        parse_proxy_header(head + b"\x00" * int.from_bytes(head[14:16], "big"))


def test_parse_refuses_incomplete_and_overlong() -> None:
    with pytest.raises(ProxyHeaderError, match="incomplete"):
        parse_proxy_header(TCP4[:20])
    with pytest.raises(ProxyHeaderError, match="incomplete"):
        parse_proxy_header(b"")
    with pytest.raises(ProxyHeaderError, match="28 bytes but 29 were given"):
        parse_proxy_header(TCP4 + b"\x01")


@settings(max_examples=200, deadline=None)
@given(
    v6=st.booleans(), data=st.data(),
    sport=st.integers(0, 65535), dport=st.integers(0, 65535),
    tlvs=st.binary(max_size=MAX_V2_LENGTH - 36),
)
def test_round_trip_property(v6: bool, data: st.DataObject, sport: int, dport: int,
                             tlvs: bytes) -> None:
    bits = 128 if v6 else 32
    make = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    src = str(make(data.draw(st.integers(0, 2**bits - 1))))
    dst = str(make(data.draw(st.integers(0, 2**bits - 1))))
    wire = encode_proxy_header((src, sport), (dst, dport), tlvs=tlvs)
    header = read_all(wire + b"\x16\x03\x01 trailing stream bytes")
    assert header.source == (src, sport) and header.destination == (dst, dport)
    assert header.length == len(wire)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_parse_or_refuse_cleanly(blob: bytes) -> None:
    """Any input: a header, a count of bytes still needed, or ProxyHeaderError; never more."""
    try:
        need = header_bytes_needed(blob)
    except ProxyHeaderError:
        return
    assert 0 <= need <= FIXED_LENGTH + MAX_V2_LENGTH
    if need == 0:
        try:
            header = parse_proxy_header(blob)
        except ProxyHeaderError as exc:
            assert "were given" in str(exc)
        else:
            assert header.length == len(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=4, max_size=40), st.integers(0, 40))
def test_signature_prefixed_garbage(tail: bytes, cut: int) -> None:
    blob = (SIGNATURE + tail)[: len(SIGNATURE) + cut]
    try:
        need = header_bytes_needed(blob)
    except ProxyHeaderError:
        return
    assert need >= 0


def test_fuzz_corpus_replays_clean() -> None:
    """fuzz/corpus/fuzz_proxy through the harness's properties (no atheris needed)."""
    from tests.core.test_fuzz_regressions import FUZZ, harness

    seeds = sorted((FUZZ / "corpus" / "fuzz_proxy").glob("*"))
    assert len(seeds) >= 6
    one_input = harness("fuzz_proxy").one_input
    for path in seeds:
        one_input(path.read_bytes())
