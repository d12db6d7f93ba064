"""UID validation (PS3.5 §9.1): the result becomes a path component, so it is strict."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.uids import (
    MAX_UID_LENGTH,
    is_uid_syntax,
    is_valid_uid,
    strip_uid_padding,
    uid_from_wire,
    validate_uid,
)

VALID = [
    "0",
    "1.2",
    "1.2.840.10008.1.1",
    "1.2.840.10008.5.1.4.1.1.2",
    "2.25.317339702861192838975127692494383384703",
    "1.0.2",
    "1." + "2" * 62,  # exactly 64
]

INVALID = [
    "",
    ".",
    "1.",
    ".1",
    "1..2",
    "01.2",
    "1.02",
    "1.2.00",
    "1." + "2" * 63,  # 65 characters
    "1.2.3\x00",  # padding must be stripped before validation
    "1.2.3 ",
    " 1.2.3",
    "1.2\x00.3",
    "1.2.3\n",
    "1.2.a",
    "1.2.-3",
    "1,2,3",
    "../1.2",
    "1.2/../../etc",
    "/1.2.3",
    "1.2\\3",
    "..",
    "1.2.３",  # a non-ASCII digit
    "1.2.٣",
]


@pytest.mark.parametrize("uid", VALID)
def test_valid(uid: str) -> None:
    assert is_valid_uid(uid)
    assert validate_uid(uid, "Study Instance UID") == uid


@pytest.mark.parametrize("uid", INVALID)
def test_invalid(uid: str) -> None:
    assert not is_valid_uid(uid)
    with pytest.raises(ValueError, match="Study Instance UID"):
        validate_uid(uid, "Study Instance UID")


def test_message_names_the_value_and_truncates() -> None:
    with pytest.raises(ValueError) as info:
        validate_uid("1." + "9" * 500, "SOP Instance UID")
    message = str(info.value)
    assert "SOP Instance UID" in message
    assert "'1.999" in message
    assert f"at most {MAX_UID_LENGTH}" in message
    assert len(message) < 300


def test_non_string_rejected() -> None:
    assert not is_valid_uid(b"1.2.3")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bytes"):
        validate_uid(b"1.2.3", "Transfer Syntax UID")


def test_strip_padding_only_at_the_end() -> None:
    assert strip_uid_padding("1.2.3\x00") == "1.2.3"
    assert strip_uid_padding("1.2.3 ") == "1.2.3"
    assert strip_uid_padding("1.2\x003") == "1.2\x003"


_REFERENCE = re.compile(r"(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789./\\\x00 a", max_size=70))
def test_matches_reference_and_is_a_safe_path_component(value: str) -> None:
    expected = len(value) <= MAX_UID_LENGTH and _REFERENCE.fullmatch(value) is not None
    assert is_valid_uid(value) == expected
    if is_valid_uid(value):
        assert "/" not in value and "\\" not in value and "\x00" not in value
        assert value not in (".", "..") and not value.startswith(".")


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10**12), min_size=1, max_size=6))
def test_generated_uids_are_valid(parts: list[int]) -> None:
    uid = ".".join(str(p) for p in parts)
    assert is_valid_uid(uid) == (len(uid) <= MAX_UID_LENGTH)


# -- the wire rule: what the PDU codec accepts and sends -------------------------------------

WIRE_ONLY = ["01.2", "1.02", "1..2", ".1", "1.", ".", "1.2.00"]
"""Not PS3.5 §9.1 UIDs, but real peers send such values: the wire rule lets them through."""


@pytest.mark.parametrize("uid", [*VALID, *WIRE_ONLY])
def test_wire_rule_accepts_digits_and_dots(uid: str) -> None:
    assert is_uid_syntax(uid)
    assert is_uid_syntax(uid.encode("ascii"))
    assert uid_from_wire(uid.encode("ascii")) == uid
    assert uid_from_wire(uid.encode("ascii") + b"\x00") == uid


@pytest.mark.parametrize(
    "uid", ["", "1." + "2" * 63, "1.2.3 ", "1.2\x00.3", "1.2.a", "1.2.３", "../1", "1/2"]
)
def test_wire_rule_refuses_anything_else(uid: str) -> None:
    assert not is_uid_syntax(uid)
    raw = uid.encode("utf-8")
    assert not is_uid_syntax(raw)
    assert uid_from_wire(raw) is None


def test_wire_rule_tolerates_one_nul_pad_only() -> None:
    assert uid_from_wire(b"1.2.3\x00") == "1.2.3"
    assert uid_from_wire(b"1.2.3\x00\x00") is None
    assert uid_from_wire(b"\x00") is None
    assert uid_from_wire(b"1.2.3 ") is None
    assert uid_from_wire(b"1." + b"2" * 62 + b"\x00") == "1." + "2" * 62


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789.a\x00", max_size=70))
def test_strict_rule_implies_wire_rule(value: str) -> None:
    if is_valid_uid(value):
        assert is_uid_syntax(value)
    expected = 0 < len(value) <= MAX_UID_LENGTH and set(value) <= set("0123456789.")
    assert is_uid_syntax(value) == expected


def test_codec_and_negotiation_use_the_rules() -> None:
    """The PDU codec keeps the wire rule (leading zeros pass), negotiation the strict one."""
    from aiodicom.core._item_codec import check_uid
    from aiodicom.core._negotiation_model import check_uid as check_config_uid
    from aiodicom.errors import ConfigurationError

    assert check_uid("1.2.840.10008.01.2", "transfer syntax") == b"1.2.840.10008.01.2"
    with pytest.raises(ValueError, match="transfer syntax"):
        check_uid("1.2.x", "transfer syntax")
    with pytest.raises(ConfigurationError, match="must be a UID"):
        check_config_uid("1.2.840.10008.01.2", "transfer syntax")
