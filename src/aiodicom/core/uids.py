"""UID validation (PS3.5 §9.1), strict because a UID may become a file name.

A UID is 1-64 characters: components of the digits 0-9 separated by ".", no empty
component, and no leading zero in a component of more than one digit. Anything else,
including padding, is refused here; callers strip the single trailing NUL that
PS3.5 §6.2 allows on the wire before validating (see `strip_uid_padding`). Because a
valid UID holds only digits and dots, never a leading dot and never "..", it is safe
as one path component.
"""

from __future__ import annotations

import re

__all__ = ["MAX_UID_LENGTH", "is_valid_uid", "strip_uid_padding", "validate_uid"]

MAX_UID_LENGTH = 64
"""PS3.5 §9.1: a UID shall not exceed 64 total characters."""

_COMPONENT = r"(?:0|[1-9][0-9]*)"
_UID_RE = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})*")
_REPR_LIMIT = 80


def is_valid_uid(value: str) -> bool:
    """True if `value` is a UID as PS3.5 §9.1 defines it, with no padding."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and _UID_RE.fullmatch(value) is not None
    )


def strip_uid_padding(value: str) -> str:
    """Remove the trailing NUL (or space, from lenient writers) padding a UID value.

    PS3.5 §9.1 pads a UI value of odd length with one NUL; only trailing padding is
    removed, so a NUL or space inside the value still fails validation.
    """
    return value.rstrip("\x00 ")


def _shown(value: object) -> str:
    text = repr(value)
    if len(text) > _REPR_LIMIT:
        return text[: _REPR_LIMIT - 3] + "..."
    return text


def validate_uid(value: object, what: str) -> str:
    """Return `value` if it is a valid UID, else raise `ValueError` naming `what`.

    The message shows the offending value (repr, truncated) and the rule it broke.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a UID string, not {type(value).__name__}")
    if is_valid_uid(value):
        return value
    if not value:
        reason = "it is empty"
    elif len(value) > MAX_UID_LENGTH:
        reason = f"it is {len(value)} characters long (at most {MAX_UID_LENGTH})"
    else:
        reason = (
            "a UID is digits separated by single dots, with no leading zero in a "
            "multi-digit component (PS3.5 §9.1)"
        )
    raise ValueError(f"{what} {_shown(value)} is not a valid UID: {reason}")
