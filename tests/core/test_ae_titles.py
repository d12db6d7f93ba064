"""The one AE-title rule (PS3.5 Table 6.2-1, PS3.8 §9.3.2) and every layer that wraps it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.ae_titles import (
    AE_TITLE_FIELD_LENGTH,
    decode_ae_title_field,
    encode_ae_title_field,
    is_valid_ae_title,
    validate_ae_title,
)
from aiodicom.core.buffer import Reader
from aiodicom.core.negotiation import AcceptorPolicy
from aiodicom.errors import AbortReason, ConfigurationError, InvalidPDU
from aiodicom.settings import AssociationSettings
from tests.strategies import AE_ALPHABET, ae_titles

VALID = ["A", "STORESCU", "CT 01", "A" * 16, "  PADDED  ", " " + "B" * 16 + " ", "a~!@#$%^&*()_+|"]
# (value, what the message must say)
INVALID: list[tuple[object, str]] = [
    ("", "empty or all spaces"),
    ("    ", "empty or all spaces"),
    ("A" * 17, "17 significant characters; the maximum is 16"),
    ("BACK\\SLASH", "contains '\\\\\\\\'"),
    ("TAB\tX", "contains '\\\\t'"),
    ("NUL\x00", "contains '\\\\x00'"),
    ("\tLEADING", "contains '\\\\t'"),
    ("ÄE", "contains 'Ä'"),
    ("DEL\x7f", "contains '\\\\x7f'"),
    (b"BYTES", "must be a str, got bytes"),
    (None, "must be a str, got NoneType"),
]


@pytest.mark.parametrize("value", VALID)
def test_valid_titles_are_returned_without_padding(value: str) -> None:
    assert is_valid_ae_title(value)
    assert validate_ae_title(value) == value.strip(" ")


@pytest.mark.parametrize(("value", "reason"), INVALID)
def test_invalid_titles_say_what_is_wrong(value: object, reason: str) -> None:
    assert not is_valid_ae_title(value)
    with pytest.raises(ValueError, match=reason) as info:
        validate_ae_title(value, "calling AE title")
    assert str(info.value).startswith("calling AE title ")


def test_long_values_are_shown_truncated() -> None:
    with pytest.raises(ValueError) as info:
        validate_ae_title("X" * 500)
    assert len(str(info.value)) < 150
    assert "..." in str(info.value)


def test_field_is_padded_and_keeps_leading_spaces() -> None:
    assert encode_ae_title_field("CT") == b"CT" + b" " * 14
    assert encode_ae_title_field(" CT") == b" CT" + b" " * 13
    assert len(encode_ae_title_field("A" * 16)) == AE_TITLE_FIELD_LENGTH


@pytest.mark.parametrize("title", ["", "A" * 17, " " + "A" * 16, "A" * 16 + " ", "É"])
def test_field_refuses_what_does_not_fit(title: str) -> None:
    with pytest.raises(ValueError, match="called AE title"):
        encode_ae_title_field(title, "called AE title")


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b" " * 16, "empty or all spaces"),
        (b"CT\x00" + b" " * 13, "outside ISO 646"),
        (b"\xe9T\xe9" + b" " * 13, "outside ISO 646"),
        (b"A\\B" + b" " * 13, "outside ISO 646"),
        (b"A" * 17, "17 significant"),
    ],
)
def test_decode_field_refuses(raw: bytes, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        decode_ae_title_field(raw)


@settings(max_examples=200, deadline=None)
@given(ae_titles())
def test_field_round_trip(title: str) -> None:
    assert decode_ae_title_field(encode_ae_title_field(title)) == title


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_every_layer_agrees(value: str) -> None:
    """The rule, the wire decoder, negotiation and settings accept exactly the same titles."""
    expected = (
        0 < len(value.strip(" ")) <= 16 and all(c in AE_ALPHABET for c in value.strip(" "))
    )
    assert is_valid_ae_title(value) == expected
    try:
        AcceptorPolicy(calling_ae_titles=frozenset({value}))
        policy_ok = True
    except ConfigurationError:
        policy_ok = False
    assert policy_ok == expected
    try:
        AssociationSettings(ae_title=value)
        settings_ok = True
    except ConfigurationError:
        settings_ok = False
    assert settings_ok == expected
    if len(value) <= 16 and value.isascii():
        field = value.encode("ascii").ljust(16)
        try:
            decoded: str | None = decode_ae_title_field(field)
        except ValueError:
            decoded = None
        assert decoded == (value.strip(" ") if expected else None)


def test_codec_wraps_the_rule_in_invalid_pdu_at_the_field_offset() -> None:
    from aiodicom.core._item_codec import decode_ae_title

    data = memoryview(b"XXXX" + b"BAD\\AE" + b" " * 10)
    r = Reader(data, base=0)
    r.skip(4, "prefix")
    with pytest.raises(InvalidPDU) as info:
        decode_ae_title(r, "calling AE title", strict=True)
    assert info.value.offset == 4
    assert info.value.reason == AbortReason.INVALID_PDU_PARAMETER_VALUE
    assert "calling AE title" in str(info.value)
    lenient = Reader(data, base=0)
    lenient.skip(4, "prefix")
    assert decode_ae_title(lenient, "called AE title", strict=False) == "BAD\\AE"
