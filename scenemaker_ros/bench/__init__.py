"""Benchmarks: each prints a table and writes JSON (numbers for the README, not timed tests)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from scenemaker_ros.files import write_json_atomic


def machine_info() -> dict[str, object]:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "machine": platform.machine(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version()}


def print_table(rows: list[dict[str, object]], columns: list[str]) -> None:
    """A plain aligned text table; floats with 4 significant digits."""
    def cell(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    widths = [max(len(c), *(len(cell(r.get(c, ""))) for r in rows)) for c in columns]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(cell(row.get(c, "")).ljust(w) for c, w in zip(columns, widths)))


def write_results(path: str | Path, results: dict[str, object]) -> None:
    write_json_atomic(path, {"machine": machine_info(), **results})
    print(f"\nwrote {path}")

