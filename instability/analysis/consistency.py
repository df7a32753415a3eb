"""Consistency of the measures across settings (SPEC section 3): benchmark rankings with Kendall tau-b, and
SD vs agreement (does a setting with a larger SD have measures that agree more across bootstrap replicates?).

Settings are grouped by their values at setting keys or aliases (`instability.setting.value`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from instability.analysis.setting_measures import HEADLINE
from instability.analysis.validity import correlation, flat
from instability.setting import value

STANDARD_IMM = "none"


@dataclass(frozen=True)
class SettingPoint:
    """One analysed setting as the cross-setting analyses see it."""

    name: str
    setting: dict[str, Any]
    values: dict[str, float]  # HEADLINE measures (representation ones at the last layer)
    agreement: dict[str, float] | None = None  # from the bootstrap, when it ran
    sd: float | None = None  # the SD that SD vs agreement plots (all seeds, or the first ones); default values["SD"]

    @property
    def plotted_sd(self) -> float:
        return self.values["SD"] if self.sd is None else self.sd


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
    """A readable label of a setting's values at `keys` (dotted keys or aliases), e.g. `rte / bert-large`."""
    return " / ".join(str(value(setting, key)) for key in keys)


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


def same_lr_as_standard(points: Sequence[SettingPoint]) -> tuple[list[SettingPoint], list[str]]:
    """Per task, the settings at the lr of that task's standard settings (imm none, measured at the best
    checkpoint): standard fine-tuning and the mitigation methods, not the failed-run setting at a higher lr.
    Returns the settings kept and notes on those left out."""
    kept, notes = [], []
    tasks: dict[str, list[SettingPoint]] = {}
    for point in points:
        tasks.setdefault(str(value(point.setting, "task")), []).append(point)
    for task, members in tasks.items():
        lrs = {value(p.setting, "lr") for p in members
               if value(p.setting, "imm") == STANDARD_IMM and value(p.setting, "checkpoint") == "best"}
        if not lrs:
            notes.append(f"task {task}: no standard setting (imm {STANDARD_IMM}, best checkpoint) to take the lr from; "
                         f"its {len(members)} setting(s) left out "
                         "(sd_vs_agreement.same_lr_as_standard=false keeps them)")
            continue
        for point in members:
            if value(point.setting, "lr") in lrs:
                kept.append(point)
            else:
                notes.append(f"{point.name} left out: lr {value(point.setting, 'lr')} is not the standard setting's "
                             f"({', '.join(map(str, sorted(lrs)))})")
    return kept, notes


def sd_vs_agreement(
    points: Sequence[SettingPoint], keys: Sequence[str], same_lr: bool = True,
) -> tuple[list[dict], list[dict], list[str]]:
    """SPEC: per setting, each bootstrap measure's mean correlation with the others, z-scored per measure across
    the settings of a group (ddof 0, as the notebook), against the setting's SD; Pearson r and p (scipy) over all
    (setting, measure) points of the group. The paper groups by model, pooling the tasks, over the same-lr
    settings (`same_lr`, see `same_lr_as_standard`). Needs >= 3 settings with a bootstrap per group.
    Returns point rows, one result row per group, and notes."""
    point_rows, results, notes = [], [], []
    usable = [point for point in points if point.agreement is not None]
    for group, members in group_points(usable, keys).items():
        if same_lr:
            members, left_out = same_lr_as_standard(members)
            notes += [f"{group}: {note}" for note in left_out]
        if len(members) < 3:
            notes.append(f"{group}: {len(members)} setting(s) with a bootstrap; SD vs agreement needs at least 3")
            continue
        sd = np.array([member.plotted_sd for member in members])
        xs, ys = [], []
        for label in members[0].agreement:
            agreement = np.array([member.agreement[label] for member in members])
            known = agreement[np.isfinite(agreement)]
            spread = known.std() if known.size >= 2 else 0.0
            z = (agreement - known.mean()) / spread if spread > 0 else np.full_like(agreement, np.nan)
            for member, a, zk, x in zip(members, agreement, z, sd):
                point_rows.append({"group": group, "setting": member.name, "measure": label, "sd": float(x),
                                   "agreement": float(a), "z_agreement": float(zk)})
            xs.append(sd)
            ys.append(z)
        x, y = np.concatenate(xs), np.concatenate(ys)
        r, p = correlation(x, y)
        points_used = int((np.isfinite(x) & np.isfinite(y)).sum())
        results.append({"group": group, "pearson_r": r, "p_value": p, "points": points_used, "settings": len(members),
                        "measures": len(xs)})
    return point_rows, results, notes
