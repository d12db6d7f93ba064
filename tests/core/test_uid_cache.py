"""The item codec's UID cache (issue 18) never changes what a UID decodes to, or refuses.

A hit must return what the wire rule returns on a miss; a refused value must never be
cached (its next occurrence is refused again, with the same wording); the cache stays
bounded however many distinct UIDs a peer sends.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from aiodicom.core import _item_codec, _uid_cache
from aiodicom.core.buffer import Reader
from aiodicom.core.uids import uid_from_wire
from aiodicom.errors import InvalidPDU


def decode(raw: bytes) -> str:
    return _item_codec.decode_uid(Reader(raw, base=10), len(raw), "abstract syntax")


@given(st.binary(min_size=1, max_size=66) | st.from_regex(rb"\A[0-9.]{1,64}\x00?\Z"))
def test_hit_and_miss_agree_with_the_wire_rule(raw: bytes) -> None:
    expected = uid_from_wire(raw)
    for _ in range(2):  # the first call may fill the cache, the second may hit it
        if expected is None:
            with pytest.raises(InvalidPDU, match="abstract syntax is not a valid UID"):
                decode(raw)
            assert raw not in _uid_cache._DECODED
        else:
            assert decode(raw) == expected


def test_padded_and_unpadded_forms_decode_alike() -> None:
    assert decode(b"1.2.840.10008.1.1\x00") == decode(b"1.2.840.10008.1.1") == "1.2.840.10008.1.1"


def test_refusal_keeps_offset_and_wording_on_every_occurrence() -> None:
    for _ in range(3):
        with pytest.raises(InvalidPDU) as info:
            decode(b"1.2.x")
        assert info.value.offset == 10
        assert "b'1.2.x'" in str(info.value)


def test_cache_is_bounded_and_correct_after_it_empties() -> None:
    size = _uid_cache.UID_CACHE_SIZE
    for i in range(3 * size):
        assert decode(f"1.2.3.{i}".encode()) == f"1.2.3.{i}"
        assert len(_uid_cache._DECODED) <= size
    assert decode(b"1.2.3.0") == "1.2.3.0"  # evicted long ago: decoded afresh


def test_encoder_cache_is_bounded_and_still_refuses() -> None:
    size = _uid_cache.UID_CACHE_SIZE
    for i in range(2 * size + 3):
        assert _item_codec.check_uid(f"1.2.4.{i}", "transfer syntax") == f"1.2.4.{i}".encode()
        assert len(_uid_cache._ENCODED) <= size
    for _ in range(2):
        with pytest.raises(ValueError, match="transfer syntax '1.2.x' is not a UID"):
            _item_codec.check_uid("1.2.x", "transfer syntax")
    assert "1.2.x" not in _uid_cache._ENCODED
