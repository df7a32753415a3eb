"""Consistency of the measures across settings (SPEC section 3): benchmark rankings with Kendall tau-b, and
SD vs agreement (does a setting with a larger SD have measures that agree more across bootstrap replicates?).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from instability.analysis.compute import HEADLINE
from instability.analysis.validity import correlation, flat


@dataclass(frozen=True)
class SettingPoint:
    """One analysed setting as the cross-setting analyses see it."""

    name: str
    setting: dict[str, Any]
    values: dict[str, float]  # HEADLINE measures (representation ones at the last layer)
    agreement: dict[str, float] | None = None  # from the bootstrap, when it ran


@dataclass
class Benchmark:
    """One group's ranking of its settings by every measure, and Kendall tau-b between the measures."""

    group: str
    settings: list[str]
    tau: np.ndarray  # [K, K] over HEADLINE
    p_value: np.ndarray

    def tau_rows(self) -> list[dict]:
        return [{"group": self.group, "measure_a": a, "measure_b": b, "kendall_tau_b": float(self.tau[i, j]),
                 "p_value": float(self.p_value[i, j]), "settings": len(self.settings)}
                for i, a in enumerate(HEADLINE) for j, b in enumerate(HEADLINE) if i < j]


def group_label(setting: dict[str, Any], keys: Sequence[str]) -> str:
    """A readable label of a setting's values at `keys` (dict values by their name), e.g. `rte / bert-large`."""
    parts = []
    for key in keys:
        value = setting.get(key)
        parts.append(str(value.get("name", value) if isinstance(value, dict) else value))
    return " / ".join(parts)


def group_points(points: Sequence[SettingPoint], keys: Sequence[str]) -> dict[str, list[SettingPoint]]:
    groups: dict[str, list[SettingPoint]] = {}
    for point in points:
        groups.setdefault(group_label(point.setting, keys), []).append(point)
    return groups


def benchmark(points: Sequence[SettingPoint], keys: Sequence[str]) -> tuple[list[Benchmark], list[dict], list[str]]:
    """Per group (same values at `keys`, e.g. task and model) with >= 2 settings: each measure's ranking of the
    settings (rank 1 = most stable) and Kendall tau-b (scipy) between every pair of measures.
    Returns the groups, rank rows for the CSV, and notes on groups left out."""
    results, ranks, notes = [], [], []
    for group, members in group_points(points, keys).items():
        if len(members) < 2:
            notes.append(f"{group}: 1 setting ({members[0].name}); ranking needs at least 2")
            continue
        table = np.array([[member.values[label] for label in HEADLINE] for member in members])  # [S, K]
        for k, label in enumerate(HEADLINE):
            column = table[:, k]
            order = stats.rankdata(column) if np.isfinite(column).all() else np.full(len(members), np.nan)
            ranks += [{"group": group, "setting": member.name, "measure": label, "value": float(value),
                       "rank": float(rank)} for member, value, rank in zip(members, column, order)]
        size = len(HEADLINE)
        tau, p_value = np.full((size, size), np.nan), np.full((size, size), np.nan)
        for i in range(size):
            for j in range(size):
                tau[i, j], p_value[i, j] = _kendall(table[:, i], table[:, j])
        results.append(Benchmark(group, [member.name for member in members], tau, p_value))
    return results, ranks, notes


def _kendall(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Kendall tau-b and its p-value; NaN when a measure is undefined or constant across the settings."""
    if not (np.isfinite(x).all() and np.isfinite(y).all()) or flat(x) or flat(y):
        return float("nan"), float("nan")
    result = stats.kendalltau(x, y)
    return float(result.statistic), float(result.pvalue)


def sd_vs_agreement(points: Sequence[SettingPoint], keys: Sequence[str]) -> tuple[list[dict], list[dict], list[str]]:
    """SPEC: per setting, each measure's mean bootstrap correlation with the others, z-scored across the
    settings of a group (per measure), against the setting's SD; Pearson r and p (scipy) over all
    (setting, measure) points of the group. Needs >= 3 settings with a bootstrap per group.
    Returns point rows, one result row per group, and notes."""
    point_rows, results, notes = [], [], []
    usable = [point for point in points if point.agreement is not None]
    for group, members in group_points(usable, keys).items():
        if len(members) < 3:
            notes.append(f"{group}: {len(members)} setting(s) with a bootstrap; SD vs agreement needs at least 3")
            continue
        sd = np.array([member.values["SD"] for member in members])
        xs, ys = [], []
        for label in HEADLINE:
            agreement = np.array([member.agreement[label] for member in members])
            known = agreement[np.isfinite(agreement)]
            spread = known.std() if known.size >= 2 else 0.0
            z = (agreement - known.mean()) / spread if spread > 0 else np.full_like(agreement, np.nan)
            for member, a, zk in zip(members, agreement, z):
                point_rows.append({"group": group, "setting": member.name, "measure": label, "sd": member.values["SD"],
                                   "agreement": float(a), "z_agreement": float(zk)})
            xs.append(sd)
            ys.append(z)
        r, p = correlation(np.concatenate(xs), np.concatenate(ys))
        points_used = int((np.isfinite(np.concatenate(xs)) & np.isfinite(np.concatenate(ys))).sum())
        results.append({"group": group, "pearson_r": r, "p_value": p, "points": points_used, "settings": len(members)})
    return point_rows, results, notes
