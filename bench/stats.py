"""Result rows and the few statistics the benchmarks need. Pure."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MS = 1e3  # seconds -> milliseconds
NS_PER_MS = 1e6


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear interpolation between closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


@dataclass(slots=True)
class Row:
    """One line of the results table (and of results.json).

    `median` / `p99` describe the pooled samples of all trials; `trial_min` /
    `trial_max` the spread of the per-trial medians; `ratio` is median / baseline
    of the same quantity unless a row says otherwise.
    """

    name: str
    unit: str
    n: int
    median: float
    p99: float | None
    trial_min: float
    trial_max: float
    baseline: float | None
    baseline_name: str
    target: str
    met: bool | None
    note: str = ""
    detail: dict[str, Any] = field(default_factory=dict)
    ratio: float | None = None
    samples: list[float] = field(default_factory=list)  # the raw figures behind median/p99
    baseline_samples: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline and not math.isnan(self.baseline):
            self.ratio = self.median / self.baseline

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "unit": self.unit,
            "n": self.n,
            "median": _clean(self.median),
            "p99": _clean(self.p99),
            "trial_min": _clean(self.trial_min),
            "trial_max": _clean(self.trial_max),
            "baseline_median": _clean(self.baseline),
            "baseline": self.baseline_name,
            "ratio": _clean(self.ratio),
            "target": self.target,
            "met": self.met,
            "note": self.note,
            "detail": self.detail,
            "samples": [_clean(v) for v in self.samples],
            "baseline_samples": [_clean(v) for v in self.baseline_samples],
        }


def _clean(value: float | None) -> float | None:
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(value, 4)


def trials_row(
    name: str,
    unit: str,
    trials: Sequence[Sequence[float]],
    *,
    baseline: float | None,
    baseline_name: str,
    target: str = "-",
    met: bool | None = None,
    note: str = "",
    baseline_samples: Sequence[float] = (),
) -> Row:
    """A row from per-trial samples: pooled median and p99, spread of trial medians."""
    pooled = [v for trial in trials for v in trial]
    per_trial = [median(t) for t in trials if t]
    return Row(
        name=name,
        unit=unit,
        n=len(pooled),
        median=median(pooled),
        p99=percentile(pooled, 99),
        trial_min=min(per_trial, default=math.nan),
        trial_max=max(per_trial, default=math.nan),
        baseline=baseline,
        baseline_name=baseline_name,
        target=target,
        met=met,
        note=note,
        samples=list(pooled),
        baseline_samples=list(baseline_samples),
    )


def skipped_row(name: str, reason: str) -> Row:
    return Row(
        name=name,
        unit="-",
        n=0,
        median=math.nan,
        p99=None,
        trial_min=math.nan,
        trial_max=math.nan,
        baseline=None,
        baseline_name="-",
        target="-",
        met=None,
        note=f"skipped: {reason}",
    )
