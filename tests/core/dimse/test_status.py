"""Status values: int behaviour, categories and meanings (PS3.7 Annex C)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aiodicom.core.dimse import Status, StatusCategory


def test_status_is_an_int() -> None:
    assert Status(0xA700) == 0xA700
    assert Status.OUT_OF_RESOURCES == 0xA700
    assert isinstance(Status.SUCCESS, int)
    assert {Status(0xFF00): "x"}[0xFF00] == "x"
    assert f"{Status.PENDING:04X}" == "FF00"


@pytest.mark.parametrize(
    ("code", "category"),
    [
        (0x0000, StatusCategory.SUCCESS),
        (0xFF00, StatusCategory.PENDING),
        (0xFF01, StatusCategory.PENDING),
        (0xFE00, StatusCategory.CANCEL),
        (0x0001, StatusCategory.WARNING),
        (0x0107, StatusCategory.WARNING),
        (0x0116, StatusCategory.WARNING),
        (0xB000, StatusCategory.WARNING),
        (0xB007, StatusCategory.WARNING),
        (0xBFFF, StatusCategory.WARNING),
        (0xA700, StatusCategory.FAILURE),
        (0xA801, StatusCategory.FAILURE),
        (0xC123, StatusCategory.FAILURE),
        (0x0110, StatusCategory.FAILURE),
        (0x0213, StatusCategory.FAILURE),
        (0x1234, StatusCategory.FAILURE),
    ],
)
def test_category(code: int, category: StatusCategory) -> None:
    assert Status(code).category is category


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0x0000, "Success"),
        (0xA7FE, "out of resources"),
        (0xA701, "number of matches"),
        (0xA801, "move destination unknown"),
        (0xA9AB, "does not match SOP class"),
        (0xC00F, "cannot understand"),
        (0xB000, "coercion"),
        (0xB006, "elements discarded"),
        (0x0105, "no such attribute"),
        (0x0112, "no such SOP instance"),
        (0x0119, "class-instance conflict"),
        (0x0122, "SOP class not supported"),
        (0x0124, "not authorized"),
        (0x0210, "duplicate invocation"),
        (0x0213, "resource limitation"),
        (0xFE00, "Cancel"),
        (0xFF01, "optional keys"),
        (0x7777, "unrecognized"),
    ],
)
def test_description(code: int, words: str) -> None:
    assert words.lower() in Status(code).description.lower()


def test_named_constants() -> None:
    expected = {
        "SUCCESS": 0x0000,
        "PENDING": 0xFF00,
        "PENDING_WARNING": 0xFF01,
        "CANCEL": 0xFE00,
        "OUT_OF_RESOURCES": 0xA700,
        "DATASET_MISMATCH": 0xA900,
        "CANNOT_UNDERSTAND": 0xC000,
        "PROCESSING_FAILURE": 0x0110,
        "NO_SUCH_SOP_CLASS": 0x0118,
        "NOT_AUTHORIZED": 0x0124,
        "SOP_CLASS_NOT_SUPPORTED": 0x0122,
        "DUPLICATE_SOP_INSTANCE": 0x0111,
        "INVALID_ATTRIBUTE_VALUE": 0x0106,
        "MOVE_DESTINATION_UNKNOWN": 0xA801,
    }
    for name, code in expected.items():
        value = getattr(Status, name)
        assert type(value) is Status
        assert value == code, name


def test_text_forms() -> None:
    assert repr(Status(0xA700)) == "Status(0xA700)"
    assert str(Status(0xA700)) == "0xA700 (Refused: out of resources)"
    assert Status.SUCCESS.is_success and not Status.PENDING.is_success
    assert Status.PENDING_WARNING.is_pending
    assert Status.CANNOT_UNDERSTAND.is_failure and not Status(0xB000).is_failure


@pytest.mark.parametrize("bad", [-1, 0x10000])
def test_out_of_range_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="16-bit"):
        Status(bad)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=0, max_value=0xFFFF))
def test_every_code_has_a_category_and_description(code: int) -> None:
    status = Status(code)
    assert isinstance(status.category, StatusCategory)
    assert status.description
    assert int(status) == code
