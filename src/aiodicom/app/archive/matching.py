"""DICOM attribute matching as SQL over the index tables (PS3.4 C.2.2.2), built once per query.

Universal ("" or "*"), single value, wildcard ("*", "?"), UID list ("\\"-separated) and
DA/TM range ("A-B", "A-", "-B") matching, on the keys the index holds, plus the keys it
computes from the rows below a level (ModalitiesInStudy, the Number of ... Related ...
counts, PS3.4 C.6.1.1.2-C.6.1.1.4). Rules worth stating (docs/conformance.md):

- PN matching is case-insensitive (Unicode casefold); every other VR is case-sensitive.
- TM single values match by value: 120000 matches a stored 1200 (both mean 12:00:00),
  and a stored 12:00 (ACR-NEMA colons) too.
- Wildcards apply to the VRs PS3.4 C.2.2.2.4 allows them on; on DA, TM, UI and IS they are
  not wildcards, so "2024*" on StudyDate matches nothing rather than everything.
- A Required key of an entity whose value is empty (unknown) matches any single value,
  wildcard or range key on it: "all matching against the zero length Required Key shall be
  considered a successful match" (PS3.4 C.2.2.1.2, Required Keys), so a study without a
  StudyDate is never hidden by a date range, nor one without an AccessionNumber by "ACC*".

Queries are read a page at a time (keyset pagination on the levels' unique keys), so a
result of any size costs one page of memory.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiodicom.app.archive.index_schema import SQLITE, Dialect

__all__ = ["COMPUTED", "ORDER", "Query", "build_query", "condition", "fold"]

ORDER = ("PATIENT", "STUDY", "SERIES", "IMAGE")

VR: Mapping[str, str] = {
    "StudyInstanceUID": "UI",
    "SeriesInstanceUID": "UI",
    "SOPInstanceUID": "UI",
    "SOPClassUID": "UI",
    "TransferSyntaxUID": "UI",
    "StudyDate": "DA",
    "PatientBirthDate": "DA",
    "StudyTime": "TM",
    "ContentDate": "DA",
    "ContentTime": "TM",
    "AcquisitionDateTime": "DT",
    "PatientName": "PN",
    "ReferringPhysicianName": "PN",
    "SeriesNumber": "IS",
    "InstanceNumber": "IS",
    "ModalitiesInStudy": "CS",
}

REQUIRED: frozenset[str] = frozenset({
    "PatientName", "StudyDate", "StudyTime", "AccessionNumber", "StudyID", "Modality",
    "SeriesNumber", "InstanceNumber",
})
"""Required (R) keys of PS3.4 Tables C.6-1 to C.6-8 that are not unique keys: an entity
whose value is empty matches any single value, wildcard or range key on them (PS3.4
C.2.2.1.2, Required Keys)."""

_SERIES_OF_STUDY = 'series AS s WHERE s."StudyInstanceUID" = study."StudyInstanceUID"'
_INSTANCES_OF_STUDY = ('instance AS i JOIN series AS s ON i."SeriesInstanceUID" = '
                       's."SeriesInstanceUID" '
                       'WHERE s."StudyInstanceUID" = study."StudyInstanceUID"')
_STUDIES_OF_PATIENT = 'study AS t WHERE t."PatientID" = patient."PatientID"'

COMPUTED: Mapping[str, Mapping[str, str]] = {
    "PATIENT": {
        "NumberOfPatientRelatedStudies": f"(SELECT count(*) FROM {_STUDIES_OF_PATIENT})",
        "NumberOfPatientRelatedSeries": (
            '(SELECT count(*) FROM series AS s JOIN study AS t ON s."StudyInstanceUID" = '
            't."StudyInstanceUID" WHERE t."PatientID" = patient."PatientID")'),
        "NumberOfPatientRelatedInstances": (
            '(SELECT count(*) FROM instance AS i JOIN series AS s ON i."SeriesInstanceUID" = '
            's."SeriesInstanceUID" JOIN study AS t ON s."StudyInstanceUID" = '
            't."StudyInstanceUID" WHERE t."PatientID" = patient."PatientID")'),
    },
    "STUDY": {
        "ModalitiesInStudy": (
            '(SELECT {distinct} FROM ' + _SERIES_OF_STUDY + ')'),
        "NumberOfStudyRelatedSeries": f"(SELECT count(*) FROM {_SERIES_OF_STUDY})",
        "NumberOfStudyRelatedInstances": f"(SELECT count(*) FROM {_INSTANCES_OF_STUDY})",
    },
    "SERIES": {
        "NumberOfSeriesRelatedInstances": (
            '(SELECT count(*) FROM instance AS i '
            'WHERE i."SeriesInstanceUID" = series."SeriesInstanceUID")'),
    },
    "IMAGE": {},
}
"""Keys the index computes from the rows below a level: level -> keyword -> SQL expression."""

_MATCHABLE_COMPUTED = frozenset({"ModalitiesInStudy"})
"""Computed keys a value can be matched against (the counts are returned, not matched)."""


def fold(value: str | None) -> str | None:
    """Case folding for PN matching (SQLite's lower() knows ASCII only)."""
    return None if value is None else value.casefold()


def _glob(pattern: str) -> str:
    """A DICOM wildcard pattern as an SQLite GLOB ('[' is GLOB syntax, made literal)."""
    return pattern.replace("[", "[[]")


def _like(pattern: str) -> str:
    """A DICOM wildcard pattern as a LIKE pattern with `\\` escapes (`%`, `_` literal)."""
    escaped = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _wildcard(column: str, pattern: str, dialect: Dialect) -> tuple[str, str]:
    """`column` matches the DICOM wildcard `pattern` (case-sensitive on both backends)."""
    if dialect.wildcard_escape:
        return f"{column} LIKE ? ESCAPE '\\'", _like(pattern)
    return f"{column} GLOB ?", _glob(pattern)


def _time(column: str, dialect: Dialect = SQLITE) -> str:
    """A TM column as HHMMSS[.F]: ACR-NEMA colons dropped, missing minutes/seconds as 00."""
    bare = f"replace({column}, ':', '')"
    instr = dialect.instr
    fraction = f"rtrim(rtrim(substr({bare}, {instr}({bare} || '.', '.')), '0'), '.')"
    return (f"(substr(substr({bare}, 1, {instr}({bare} || '.', '.') - 1) || '000000', 1, 6)"
            f" || {fraction})")


def _time_value(value: str) -> str:
    """A TM value as `_time` spells a column: 12:00, 1200 and 120000.000 are 120000."""
    bare = value.replace(":", "")
    whole, _, fraction = bare.partition(".")
    fraction = fraction.rstrip("0")
    return (whole + "000000")[:6] + ("." + fraction if fraction else "")


_DT = r"\d{4}(?:\d{2}){0,5}(?:\.\d{1,6})?(?:[+-](?:0\d|1[0-4])(?:00|15|30|45))?"
"""A DT value (PS3.5 6.2): YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX], & being + or -."""
_DT_RANGE = re.compile(f"({_DT})?-({_DT})?")


def _bounds(value: str, vr: str) -> tuple[str, str] | None:
    """A range key's (low, high), either may be ""; None for a single value. A DT's "-"
    may be its UTC offset's sign: "20240102120000-0500" is one value, and a value that
    reads both ways (2024-1000) is taken as one value with its offset."""
    if "-" not in value:
        return None
    if vr == "DT":
        if re.fullmatch(_DT, value):
            return None
        if (found := _DT_RANGE.fullmatch(value)) is not None:
            return found.group(1) or "", found.group(2) or ""
    low, _, high = value.partition("-")
    return low, high


def condition(column: str, keyword: str, value: str,
              dialect: Dialect = SQLITE) -> tuple[str, list[str]] | None:
    """The SQL for one matching key (PS3.4 C.2.2.2), or None for universal matching.

    `column` is the key's column; a PN key is matched on its folded column beside it.
    """
    vr = VR.get(keyword, "")
    if value in ("", "*"):
        return None
    # PS3.4 C.2.2.1.2: an empty (unknown) Required Key matches any key value.
    unknown = f"{column} = '' OR " if keyword in REQUIRED else ""
    if vr == "UI":
        uids = value.split("\\")
        if dialect.wildcard_escape and len(uids) > 1:  # PostgreSQL: one value, any length
            return f"{column} = ANY(string_to_array(?, '\\'))", [value]
        return f"{column} IN ({', '.join('?' * len(uids))})", uids
    if keyword == "ModalitiesInStudy":
        modalities = [m for m in value.split("\\") if m]
        if not modalities:  # "\\": a list of empty values names no modality
            return None
        tests = [_wildcard('s."Modality"', m, dialect) for m in modalities]
        return (f'EXISTS (SELECT 1 FROM {_SERIES_OF_STUDY} AND '
                f'({" OR ".join(sql for sql, _ in tests)}))', [arg for _, arg in tests])
    if vr in ("DA", "TM", "DT") and (bounds := _bounds(value, vr)) is not None:
        low, high = bounds
        parts, args = [f"{column} != ''"], []  # "" is no time: _time would read 000000
        if vr == "TM":
            column = _time(column, dialect)
        if low:
            parts.append(f"{column} >= ?")
            args.append(_time_value(low) if vr == "TM" else low)
        if high:
            parts.append(f"{column} <= ?")
            # A partial time bound covers its whole span: 1200 includes 12:00:59, and a
            # DT bound 20240101 the whole day.
            args.append(high.replace(":", "") + "\U0010ffff" if vr in ("TM", "DT") else high)
        return f"({unknown}({' AND '.join(parts)}))", args
    if vr == "TM":
        return (f"({unknown}({column} != '' AND {_time(column, dialect)} = ?))",
                [_time_value(value)])
    if vr == "IS" and re.fullmatch(r"[+-]?[0-9]+", value.strip()):
        # An integer: 01 and +1 name what is stored as 1 (and as written, if it was so).
        return f"({unknown}{column} IN (?, ?))", [value, str(int(value))]
    if vr == "PN":
        column, value = f'{column[:-1]}_fold"', value.casefold()
    if vr not in ("DA", "TM", "DT", "IS") and ("*" in value or "?" in value):
        sql, arg = _wildcard(column, value, dialect)
        return f"({unknown}{sql})", [arg]
    return f"({unknown}{column} = ?)", [value]


@dataclass(frozen=True, slots=True, kw_only=True)
class Query:
    """One query's SQL, to run a page at a time: ``sql`` takes ``args``, then the keyset
    (the last row's ``order`` values, or None for the first page) and the page size."""

    select: str
    where: list[str]
    args: list[str]
    order: list[str]
    names: list[str]
    key_positions: list[int]

    def page(self, after: list[str] | None, size: int) -> tuple[str, list[object]]:
        where, args = list(self.where), list[object](self.args)
        if after is not None:
            where.append(f"({', '.join(self.order)}) > ({', '.join('?' * len(after))})")
            args += after
        sql = (f"{self.select}{' WHERE ' + ' AND '.join(where) if where else ''} "
               f"ORDER BY {', '.join(self.order)} LIMIT ?")
        return sql, [*args, size]


def build_query(level: str, filters: Mapping[str, str], tables: Mapping[str, str],
                keywords: Mapping[str, tuple[str, ...]], parent_key: Mapping[str, str],
                extra: tuple[str, ...] = (), computed: tuple[str, ...] = (),
                dialect: Dialect = SQLITE) -> Query:
    """The query of ``filters`` at ``level``: rows of the level joined with the levels above.

    Raises ValueError for a key the index neither holds nor computes at that level.
    """
    included = ORDER[: ORDER.index(level) + 1]
    columns: dict[str, str] = {}
    available: dict[str, str] = {}
    for each in included:
        table = tables[each]
        columns.update({k: f'{table}."{k}"' for k in keywords[each]})
        available.update(COMPUTED[each])
    joins = ["patient"]
    for parent, each in zip(included, included[1:], strict=False):
        table = tables[each]
        key = parent_key[table]
        joins.append(f'JOIN {table} ON {table}."{key}" = {tables[parent]}."{key}"')
    where, args = [], []
    for keyword, value in filters.items():
        if keyword not in columns and keyword not in _MATCHABLE_COMPUTED & set(available):
            raise ValueError(
                f"{keyword!r} is not a key at the {level} level: use one of "
                f"{', '.join(columns)}")
        found = condition(columns.get(keyword, ""), keyword, str(value), dialect)
        if found is not None:
            where.append(found[0])
            args += found[1]
    for keyword in computed:
        if keyword not in available:
            raise ValueError(f"{keyword!r} is not computed at the {level} level")
    selected = [*columns.values(), *(f"{tables['IMAGE']}.{c}" for c in extra),
                *(available[k].replace("{distinct}", dialect.distinct_list.format(
                    's."Modality"')) for k in computed)]
    order = [columns[keywords[each][0]] for each in included]
    names = [*columns, *extra, *computed]
    return Query(select=f"SELECT {', '.join(selected)} FROM {' '.join(joins)}", where=where,
                 args=args, order=order, names=names,
                 key_positions=[names.index(keywords[each][0]) for each in included])
