"""AE titles (PS3.5 Table 6.2-1, VR AE; PS3.8 §9.3.2): the one rule every layer uses.

An AE title is 1-16 significant characters of the default repertoire, ISO 646 G0
(0x20-0x7E), without backslash (the value separator) and without control characters.
Leading and trailing spaces are not significant, so a title of spaces only is no title.

The functions here raise `ValueError` with a message that says what was wrong and what
to do; each layer wraps it into its own exception (`InvalidPDU` in the PDU codec,
`ConfigurationError` in negotiation, TLS and settings, `InvalidStorageRequest` in the
archive), so the rule is written once and every refusal reads the same.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "AE_TITLE_FIELD_LENGTH",
    "MAX_AE_TITLE_LENGTH",
    "decode_ae_title_field",
    "encode_ae_title_field",
    "is_valid_ae_title",
    "validate_ae_title",
]

MAX_AE_TITLE_LENGTH: Final = 16
"""PS3.5 Table 6.2-1: at most 16 significant characters."""

AE_TITLE_FIELD_LENGTH: Final = 16
"""The fixed called/calling AE title fields of A-ASSOCIATE-RQ/AC (PS3.8 Table 9-11)."""

_ALLOWED: Final = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"\\"}
_ALLOWED_BYTES: Final = bytes(c for c in range(0x20, 0x7F) if c != 0x5C)
_HOW: Final = "use printable ASCII (ISO 646) without backslash or control characters"
_REPR_LIMIT: Final = 40


def _problem(value: object) -> str | None:
    """Why `value` is not an AE title, or None if it is one."""
    if not isinstance(value, str):
        return "it is not a str"
    title = value.strip(" ")
    if not title:
        return "it is empty or all spaces; give 1-16 characters"
    if len(title) > MAX_AE_TITLE_LENGTH:
        return f"it has {len(title)} significant characters; the maximum is 16"
    for ch in title:
        if ch not in _ALLOWED:
            return f"it contains {ch!r}; {_HOW}"
    return None


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _REPR_LIMIT else text[: _REPR_LIMIT - 3] + "..."


def is_valid_ae_title(value: object) -> bool:
    """True if `value` is a str holding an AE title (padding spaces allowed)."""
    return _problem(value) is None


def validate_ae_title(value: object, what: str = "AE title") -> str:
    """Return `value` without its leading and trailing spaces, or raise `ValueError`.

    The message names `what`, shows the value (repr, truncated) and the rule it broke.
    """
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a str, got {type(value).__name__}")
    problem = _problem(value)
    if problem is not None:
        raise ValueError(f"{what} {_shown(value)} is not a valid AE title: {problem}")
    return value.strip(" ")


def encode_ae_title_field(title: str, what: str = "AE title") -> bytes:
    """The 16-byte AE title field of an A-ASSOCIATE-RQ/AC: `title` padded with spaces.

    The title is sent as given (its leading spaces too, which PS3.8 §9.3.2 calls not
    significant); `ValueError` if it is not an AE title or does not fit 16 bytes.
    """
    validate_ae_title(title, what)
    if len(title) > AE_TITLE_FIELD_LENGTH:
        raise ValueError(
            f"{what} {_shown(title)} is {len(title)} characters with its spaces; the field "
            f"holds {AE_TITLE_FIELD_LENGTH}: remove the padding"
        )
    return title.encode("ascii").ljust(AE_TITLE_FIELD_LENGTH, b" ")


def decode_ae_title_field(raw: bytes, what: str = "AE title") -> str:
    """The AE title in a received field, without its padding spaces; `ValueError` if none.

    Every byte must be ISO 646 G0 without backslash (so a NUL pad is refused: PS3.8 pads
    AE titles with spaces), then the title must pass `validate_ae_title`.
    """
    if raw.translate(None, _ALLOWED_BYTES):
        raise ValueError(
            f"{what} {_shown(raw)} has bytes outside ISO 646 G0 (or a backslash); "
            "the peer must send printable ASCII"
        )
    text = raw.decode("ascii")
    title = text.strip(" ")
    if title and len(title) <= MAX_AE_TITLE_LENGTH:
        return title  # every byte passed the repertoire check above: no per-character loop
    return validate_ae_title(text, what)  # words the refusal
