"""Results: a markdown table with aiodicom/DCMTK and aiodicom/pynetdicom ratios, JSON + .md."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "Row", "errors_markdown", "log_issues", "markdown", "rows_for", "with_ratios", "write",
]

PEERS = ("dcmtk", "pynetdicom")
_NOTEWORTHY = re.compile(
    r"traceback|error|exception|warning|abort|refus|fail|timed? ?out|File \".*aiodicom", re.I
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    measure: str
    mode: str
    field: str
    label: str
    unit: str
    higher_is_better: bool


def rows_for(ct_count: int, big_mb: int, echoes: int, clients: int) -> list[Row]:
    def row(measure: str, mode: str, field: str, label: str, unit: str, hib: bool) -> Row:
        return Row(measure=measure, mode=mode, field=field, label=label, unit=unit,
                   higher_is_better=hib)

    rows = []
    for mode, name in (("plain", "plain"), ("tls", "mutual TLS")):
        rows.append(row("store", mode, "value",
                        f"store {ct_count} x 512 KiB, one association, {name}", "s", False))
        rows.append(row("store", mode, "server_cpu_s",
                        f"store {ct_count} x 512 KiB, {name}: server CPU", "s", False))
    rows += [
        row("big", "plain", "value", f"store one {big_mb} MiB data set, plain", "s", False),
        row("big", "plain", "peak_rss_mb", f"server peak RSS, {big_mb} MiB data set", "MB",
            False),
    ]
    for mode, name in (("plain", "plain"), ("tls", "mutual TLS")):
        rows.append(row("echo", mode, "value",
                        f"C-ECHO rate, one association (--repeat {echoes}), {name}", "/s",
                        True))
        rows.append(row("echo", mode, "per_server_cpu_s",
                        f"C-ECHO, {name}: per server CPU-s", "/CPU-s", True))
    for mode, name in (("plain", "plain"), ("tls", "mutual TLS")):
        rows.append(row("assoc", mode, "value",
                        f"assoc+echo+release, {clients} clients, {name}: wall", "/s", True))
        rows.append(row("assoc", mode, "per_server_cpu_s",
                        f"assoc+echo+release, {clients} clients, {name}: per server CPU-s",
                        "/CPU-s", True))
    return rows


def _get(results: dict[str, Any], row: Row, server: str) -> float | None:
    cell = results.get(row.measure, {}).get(row.mode, {}).get(server)
    if not isinstance(cell, dict) or "error" in cell:
        return None
    value = cell.get(row.field)
    return float(value) if isinstance(value, int | float) else None


def with_ratios(results: dict[str, Any], rows: list[Row]) -> list[dict[str, Any]]:
    """One dict per row: the three values and aiodicom/peer ratios (None when missing)."""
    out = []
    for row in rows:
        values = {s: _get(results, row, s) for s in ("aiodicom", *PEERS)}
        if all(v is None for v in values.values()):
            continue
        ours = values["aiodicom"]
        ratios = {
            peer: round(ours / theirs, 3) if ours is not None and theirs else None
            for peer, theirs in ((p, values[p]) for p in PEERS)
        }
        out.append({"measure": row.measure, "mode": row.mode, "field": row.field,
                    "label": row.label, "unit": row.unit,
                    "better": "higher" if row.higher_is_better else "lower",
                    "values": values, "ratios": ratios})
    return out


def _fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 100:
        return f"{value:,.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}"


def _cell(results: dict[str, Any], entry: dict[str, Any], server: str) -> str:
    value = entry["values"][server]
    if value is not None:
        return _fmt(value)
    cell = results.get(entry["measure"], {}).get(entry["mode"], {}).get(server)
    return "error" if isinstance(cell, dict) and "error" in cell else "—"


def markdown(results: dict[str, Any], table: list[dict[str, Any]],
             ranges: dict[tuple[str, str, str], dict[str, str]] | None = None) -> str:
    """The table; with ``ranges`` (several repetitions: values are medians) a column with
    the spread of the per-repetition aiodicom/DCMTK ratios."""
    spread = ranges is not None
    lines = [
        "| measure | unit | aiodicom | DCMTK storescp | pynetdicom SCP "
        "| aiodicom/DCMTK | " + ("(per-rep range) | " if spread else "")
        + "aiodicom/pynetdicom | better |",
        "|---|---|---:|---:|---:|---:|" + ("---:|" if spread else "") + "---:|---|",
    ]
    for entry in table:
        ratios = entry["ratios"]
        key = (entry["measure"], entry["mode"], entry["field"])
        extra = f"{(ranges or {}).get(key, {}).get('dcmtk', '—')} | " if spread else ""
        lines.append(
            f"| {entry['label']} | {entry['unit']} | {_cell(results, entry, 'aiodicom')} "
            f"| {_cell(results, entry, 'dcmtk')} | {_cell(results, entry, 'pynetdicom')} "
            f"| {_fmt(ratios['dcmtk'])} | {extra}{_fmt(ratios['pynetdicom'])} "
            f"| {entry['better']} ratio |"
        )
    return "\n".join(lines)


def errors_markdown(results: dict[str, Any]) -> str:
    lines = []
    for measure, modes in results.items():
        for mode, servers in modes.items():
            for server, cell in servers.items():
                if isinstance(cell, dict) and "error" in cell:
                    first = str(cell["error"]).strip().splitlines()[:6]
                    lines.append(f"- {measure} {mode} {server}: " + " / ".join(first))
                elif isinstance(cell, dict) and cell.get("failed"):
                    lines.append(f"- {measure} {mode} {server}: {cell['failed']} failed "
                                 f"associations: {cell.get('errors')}")
    return "\n".join(lines)


def log_issues(workdir: Path, limit: int = 8) -> dict[str, list[str]]:
    """Noteworthy lines (errors, tracebacks, aborts) of each server log, first `limit`."""
    issues: dict[str, list[str]] = {}
    for log in sorted(workdir.glob("**/server.log")):
        hits = [line.strip()[:300] for line in log.read_text(errors="replace").splitlines()
                if _NOTEWORTHY.search(line)]
        if hits:
            tag = str(log.parent.relative_to(workdir))
            issues[tag] = [*hits[:limit], f"({len(hits)} such lines)"]
    return issues


def write(path_base: Path, document: dict[str, Any], md: str) -> tuple[Path, Path]:
    path_base.parent.mkdir(parents=True, exist_ok=True)
    json_path = path_base.parent / f"{path_base.name}.json"
    md_path = path_base.parent / f"{path_base.name}.md"
    json_path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n")
    md_path.write_text(md)
    return json_path, md_path
