"""The results table (rich) and bench/results.json."""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.stats import Row

RESULTS = Path(__file__).resolve().parent / "results.json"


def _num(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "-"
    magnitude = abs(value)
    if unit == "procs" or (magnitude >= 10 and value.is_integer()) or magnitude >= 1000:
        text = f"{value:,.0f}"
    elif magnitude >= 100:
        text = f"{value:.1f}"
    elif magnitude >= 1:
        text = f"{value:.2f}"
    else:
        text = f"{value:.3f}"
    return f"{text} {unit}".rstrip()


def table(rows: Sequence[Row], title: str) -> Table:
    out = Table(title=title, show_lines=False, header_style="bold")
    for column, justify in (
        ("benchmark", "left"),
        ("n", "right"),
        ("median", "right"),
        ("p99", "right"),
        ("trials min-max", "right"),
        ("baseline median", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("met", "center"),
    ):
        out.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        met = "-" if row.met is None else ("[green]yes[/]" if row.met else "[red]no[/]")
        spread = (
            "-" if math.isnan(row.trial_min) else f"{_num(row.trial_min)}-{_num(row.trial_max)}"
        )
        out.add_row(
            row.name,
            str(row.n),
            _num(row.median, row.unit),
            _num(row.p99),
            spread,
            _num(row.baseline),
            "-" if row.ratio is None else f"{row.ratio:.2f}x",
            row.target,
            met,
        )
    return out


def show(console: Console, rows: Sequence[Row], title: str, errors: dict[str, str]) -> None:
    console.print(table(rows, title))
    for row in rows:
        parts = [f"baseline: {row.baseline_name}"] if row.baseline_name != "-" else []
        if row.note:
            parts.append(row.note)
        if parts:
            console.print(f"  [dim]{row.name}: {'; '.join(parts)}[/]")
    for name, error in errors.items():
        console.print(f"[red]{name} crashed:[/] {error}")


def _python() -> str:
    """The interpreter as typed from the repo root (e.g. `.venv/bin/python`)."""
    exe = Path(sys.executable)
    try:
        return str(exe.relative_to(Path(__file__).resolve().parent.parent))
    except ValueError:
        return str(exe)


def source_state() -> dict[str, Any]:
    """The commit measured, and how many files outside bench/ differ from it."""
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(repo), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    changed = [line for line in git("status", "--porcelain").splitlines() if " bench/" not in line]
    return {"commit": git("rev-parse", "--short", "HEAD"), "uncommitted_files": len(changed)}


def write(
    rows: Sequence[Row],
    *,
    quick: bool,
    argv: Sequence[str],
    errors: dict[str, str],
    extra: dict[str, Any],
    path: Path = RESULTS,
) -> Path:
    payload = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": " ".join([_python(), "-m", "bench", *argv]),
        "mode": "quick" if quick else "full",
        "host": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "load_avg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "source": source_state(),
        "rows": [row.as_dict() for row in rows],
        "errors": errors,
        **extra,
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    return path
