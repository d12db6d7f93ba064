"""UIDs (PS3.5 §9.1): the one home of both UID rules, strict and wire.

The strict rule (`is_valid_uid`, `validate_uid`) is for anything that may become a file
name or is ours to send in configuration. The wire rule (`is_uid_syntax`, `uid_from_wire`)
is what the PDU codec accepts and sends: 1-64 digits and dots, because real peers send
UIDs with leading zeros (or worse) and refusing them would refuse the association.

A UID is 1-64 characters: components of the digits 0-9 separated by ".", no empty
component, and no leading zero in a component of more than one digit. Anything else,
including padding, is refused here; callers strip the single trailing NUL that
PS3.5 §6.2 allows on the wire before validating (see `strip_uid_padding`). Because a
valid UID holds only digits and dots, never a leading dot and never "..", it is safe
as one path component.
"""

from __future__ import annotations

import re

__all__ = [
    "MAX_UID_LENGTH",
    "is_uid_syntax",
    "is_valid_uid",
    "strip_uid_padding",
    "uid_from_wire",
    "validate_uid",
]

MAX_UID_LENGTH = 64
"""PS3.5 §9.1: a UID shall not exceed 64 total characters."""

_COMPONENT = r"(?:0|[1-9][0-9]*)"
_UID_RE = re.compile(rf"{_COMPONENT}(?:\.{_COMPONENT})*")
_REPR_LIMIT = 80
_UID_CHARS = b"0123456789."


def is_valid_uid(value: str) -> bool:
    """True if `value` is a UID as PS3.5 §9.1 defines it, with no padding."""
    return (
        isinstance(value, str)
        and 0 < len(value) <= MAX_UID_LENGTH
        and _UID_RE.fullmatch(value) is not None
    )


def is_uid_syntax(value: str | bytes) -> bool:
    """True if `value` is 1-64 digits and dots: the lenient wire rule, no padding.

    Empty components and leading zeros pass (PS3.5 §9.1 forbids them, peers send them);
    never use this for a value that becomes a path component: `validate_uid` is for that.
    """
    if isinstance(value, str):
        if not value.isascii():
            return False
        value = value.encode("ascii")
    return 0 < len(value) <= MAX_UID_LENGTH and not value.translate(None, _UID_CHARS)


def uid_from_wire(raw: bytes) -> str | None:
    """The UID in a received value: one trailing NUL pad removed, then `is_uid_syntax`.

    None when the value breaks the wire rule (PS3.5 §9.1 pads an odd-length UI value with
    a single NUL; anything else around it is refused).
    """
    if raw[-1:] == b"\0":
        raw = raw[:-1]
    return raw.decode("ascii") if is_uid_syntax(raw) else None


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
