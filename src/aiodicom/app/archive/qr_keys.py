"""What a Q/R identifier must hold before the index sees it (PS3.4 C.4.1.2.1, C.4.2.2.1).

The information model fixes the levels (Study Root has no PATIENT level, C.6.2) and the
hierarchical search fixes the keys: a C-FIND names the unique key of every level above its
Query/Retrieve Level with a single value; a C-MOVE or C-GET names only unique keys, single
values above the level and a single value or a UID list at it (PS3.4 C.4.2.2.1,
C.4.3.2.1). A request that breaks a rule is refused (0xA900) with `IdentifierRefused`
rather than widened into "everything": a retrieve without a unique key would move the
archive. Also here: the character set a response needs (PS3.4 C.4.1.1.3.2, PS3.5 6.1).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiodicom.errors import DicomError

__all__ = [
    "MODEL_LEVELS",
    "UNIQUE_KEYS",
    "IdentifierRefused",
    "QueryKeys",
    "check_query",
    "check_retrieve",
    "levels_of",
    "read_keys",
    "response_charset",
]

MODEL_LEVELS: Mapping[str, tuple[str, ...]] = {
    "patient": ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    "study": ("STUDY", "SERIES", "IMAGE"),
}
"""The Query/Retrieve Levels of the Patient Root and Study Root models (PS3.4 C.6.1, C.6.2)."""

UNIQUE_KEYS: Mapping[str, str] = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
"""The unique key of each level (PS3.4 C.6.1.1, C.6.2.1)."""

_WILDCARDS = frozenset("*?")
_SKIP = frozenset({"QueryRetrieveLevel", "SpecificCharacterSet"})


class IdentifierRefused(DicomError, ValueError):
    """The identifier breaks the model's levels or the hierarchical key rules (0xA900)."""


def levels_of(model: str, level: str) -> tuple[str, ...]:
    """The levels from the model's top down to ``level``; refuses a level the model lacks."""
    levels = MODEL_LEVELS.get(model, MODEL_LEVELS["study"])
    if level not in levels:
        root = "Patient Root" if model == "patient" else "Study Root"
        raise IdentifierRefused(
            f"Query/Retrieve Level {level!r} is not a level of the {root} model "
            f"(use {', '.join(levels)}; PS3.4 C.6)")
    return levels[: levels.index(level) + 1]


def _single(keys: Mapping[str, str], keyword: str, why: str) -> None:
    value = keys.get(keyword, "")
    if not value or "\\" in value or _WILDCARDS & set(value):
        shown = "absent or empty" if not value else repr(value)
        raise IdentifierRefused(f"{keyword} is {shown}: {why} needs one value, no wildcard "
                                "or list (PS3.4 C.4.1.2.1, C.4.2.2.1)")


def check_query(keys: Mapping[str, str], model: str, level: str) -> None:
    """A C-FIND's hierarchical rule: every level above names its unique key, single value."""
    for above in levels_of(model, level)[:-1]:
        _single(keys, UNIQUE_KEYS[above], f"a {level} query below {above}")


def check_retrieve(keys: Mapping[str, str], model: str, level: str) -> dict[str, str]:
    """A C-MOVE/C-GET's unique keys (the only keys it matches on), or `IdentifierRefused`.

    Above the level: single values; at the level: a single value, or a list of UIDs
    (PatientID, not a UID, takes one value).
    """
    levels = levels_of(model, level)
    for above in levels[:-1]:
        _single(keys, UNIQUE_KEYS[above], f"a {level} retrieve below {above}")
    keyword = UNIQUE_KEYS[level]
    value = keys.get(keyword, "")
    values = value.split("\\")
    if level == "PATIENT":
        _single(keys, keyword, "a PATIENT retrieve")
    elif not value or any(not v or _WILDCARDS & set(v) for v in values):
        shown = "absent or empty" if not value else repr(value)
        raise IdentifierRefused(
            f"{keyword} is {shown}: a {level} retrieve needs a UID or a list of UIDs, no "
            "wildcard (PS3.4 C.4.2.2.1)")
    return {UNIQUE_KEYS[each]: keys[UNIQUE_KEYS[each]] for each in levels}


def _key_text(value: Any) -> str:
    """A key's value as index.query takes it; a multi-valued UID list is joined with "\\"
    (PS3.4 C.2.2.2.2)."""
    from pydicom.multival import MultiValue

    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip()
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class QueryKeys:
    """An identifier read once: the text of each key, and the elements to answer with."""

    texts: dict[str, str]
    requested: list[Any]


def read_keys(identifier: Any) -> QueryKeys:
    """Every key of the identifier as text; IdentifierRefused if a value does not convert."""
    texts: dict[str, str] = {}
    requested = []
    for elem in identifier:
        keyword = elem.keyword
        if keyword in _SKIP or elem.tag.group == 0x0002:
            continue
        requested.append(elem)
        if elem.VR == "SQ" or not keyword:
            texts[keyword or str(elem.tag)] = "" if not elem.value else "(sequence)"
            continue
        try:
            texts[keyword] = _key_text(elem.value)
        except (ValueError, TypeError) as exc:
            raise IdentifierRefused(f"{keyword}: {exc}") from None
    return QueryKeys(texts=texts, requested=requested)


def response_charset(texts: Iterable[str]) -> str | None:
    """The Specific Character Set that holds ``texts``: None (the default repertoire, ISO
    646) when all are ASCII, ISO_IR 100 when Latin-1 suffices, otherwise ISO_IR 192."""
    needed: str | None = None
    for text in texts:
        if text.isascii():
            continue
        if any(ord(c) > 0xFF or 0x80 <= ord(c) < 0xA0 for c in text):
            return "ISO_IR 192"  # beyond Latin-1, or its C1 controls (not in ISO_IR 100)
        needed = "ISO_IR 100"
    return needed
