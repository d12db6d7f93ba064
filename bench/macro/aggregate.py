"""Repetitions of the whole table: per cell the median of each number over the repetitions.

`bench/run.py` runs every measure once per repetition (servers interleaved, so a slow
minute of a busy machine lands on all of them), then reports the median of each field and
the ratio of medians; `ratio_ranges` gives the spread of the per-repetition ratios.
"""

from __future__ import annotations

import statistics
from typing import Any

from macro.report import PEERS, Row, with_ratios

__all__ = ["median_results", "ratio_ranges"]

_NUMERIC = ("value", "server_cpu_s", "per_server_cpu_s", "peak_rss_mb", "idle_rss_mb",
            "marginal_per_s", "p50_ms", "p99_ms", "client_cpu_s", "mb_per_s")


def median_results(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict (measure -> mode -> server -> cell) of medians over ``reps``.

    A cell keeps ``reps`` (every repetition's cell); a repetition that failed is left out of
    the medians and counted in ``failed_reps``; a cell where every repetition failed keeps
    the first error.
    """
    merged: dict[str, Any] = {}
    for rep in reps:
        for measure, modes in rep.items():
            for mode, servers in modes.items():
                for server, cell in servers.items():
                    merged.setdefault(measure, {}).setdefault(mode, {}).setdefault(
                        server, []).append(cell)
    out: dict[str, Any] = {}
    for measure, modes in merged.items():
        for mode, servers in modes.items():
            for server, cells in servers.items():
                out.setdefault(measure, {}).setdefault(mode, {})[server] = _median_cell(cells)
    return out


def _median_cell(cells: list[dict[str, Any]]) -> dict[str, Any]:
    good = [c for c in cells if "error" not in c]
    if not good:
        return {**cells[0], "failed_reps": len(cells)}
    cell: dict[str, Any] = {"unit": good[0].get("unit"), "reps": cells}
    for field in _NUMERIC:
        numbers = [c[field] for c in good if isinstance(c.get(field), int | float)]
        if numbers:
            cell[field] = round(statistics.median(numbers), 4)
    failed = sum(1 for c in good if c.get("failed")) + len(cells) - len(good)
    if failed:
        cell["failed_reps"] = len(cells) - len(good)
        cell["failed"] = sum(int(c.get("failed") or 0) for c in good)
        cell["errors"] = next((c.get("errors") for c in good if c.get("errors")), None)
    return cell


def ratio_ranges(reps: list[dict[str, Any]], rows: list[Row]) -> dict[tuple[str, str, str],
                                                                        dict[str, str]]:
    """(measure, mode, field) -> peer -> "min-max" of the per-repetition ratios."""
    spans: dict[tuple[str, str, str], dict[str, list[float]]] = {}
    for rep in reps:
        for entry in with_ratios(rep, rows):
            key = (entry["measure"], entry["mode"], entry["field"])
            for peer in PEERS:
                ratio = entry["ratios"][peer]
                if ratio is not None:
                    spans.setdefault(key, {}).setdefault(peer, []).append(ratio)
    return {key: {peer: f"{min(v):.3g}-{max(v):.3g}" for peer, v in peers.items()}
            for key, peers in spans.items()}
