"""Validity of the measures (SPEC section 3): layer trend and agreement, failed vs successful runs with a
permutation test, sub-sampling of the test half, and bootstrapping over seeds.

Every random choice draws from `generator(seed, setting key, purpose)`: the same seed gives the same numbers,
and one setting's draws do not depend on which other settings are in the sweep.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from instability.analysis.loading import SettingData
from instability.analysis.setting_measures import (
    ALL,
    PAPER,
    REPRESENTATION,
    MeasureOptions,
    PairMatrices,
    layer_means,
    measure_values,
    pair_matrices,
    subset_scores,
)

PURPOSES = ("permutation", "subsampling", "bootstrap")


def generator(seed: int, key: str, purpose: str) -> np.random.Generator:
    """A random stream for one analysis of one setting, derived from the config's seed."""
    return np.random.default_rng([int(seed), zlib.crc32(key.encode()), PURPOSES.index(purpose)])


def flat(values: np.ndarray) -> bool:
    """Constant up to floating-point rounding (a correlation with it would only measure rounding noise)."""
    return bool(np.ptp(values) <= 1e-12 * np.max(np.abs(values), initial=0.0))


def correlation(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson r and p over the positions where both are finite; NaN when undefined (< 3 points or constant)."""
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or flat(x) or flat(y):
        return float("nan"), float("nan")
    result = stats.pearsonr(x, y)
    return float(result.statistic), float(result.pvalue)


# --- layer trend and agreement among the representation measures -------------------------------------------


def layer_trend(values: dict[str, np.ndarray]) -> tuple[list[dict], list[dict]]:
    """Per representation measure its trend with depth (Spearman rho of value vs layer), and per pair of
    measures the Pearson correlation of their per-layer curves. Rows for the CSV."""
    trend, agreement = [], []
    for label in REPRESENTATION:
        curve = values[label]
        layers = np.arange(1, curve.size + 1)
        keep = np.isfinite(curve)
        rho, p = float("nan"), float("nan")
        if keep.sum() >= 3 and not flat(curve[keep]):
            result = stats.spearmanr(layers[keep], curve[keep])
            rho, p = float(result.statistic), float(result.pvalue)
        trend.append({"measure": label, "first_layer": float(curve[0]), "last_layer": float(curve[-1]),
                      "max_layer": int(layers[keep][np.argmax(curve[keep])]) if keep.any() else None,
                      "spearman_rho": rho, "p_value": p})
    labels = list(REPRESENTATION)
    for a, first in enumerate(labels):
        for second in labels[a + 1 :]:
            r, p = correlation(values[first], values[second])
            agreement.append({"measure_a": first, "measure_b": second, "pearson_r": r, "p_value": p,
                              "layers": int(np.isfinite(values[first] + values[second]).sum())})
    return trend, agreement


# --- successful vs failed runs -------------------------------------------------------------------------------


@dataclass
class FailedRuns:
    """Within-group mean distances per layer for failed and successful runs, and permutation p-values.
    Diverged runs count as failed but have no outputs, so they are counted, never in a mean."""

    checkpoint: str  # whose failure flags split the runs: the measured checkpoint
    failed_seeds: list[int]
    successful_seeds: list[int]
    diverged_seeds: list[int]
    failed_mean: dict[str, np.ndarray]  # per measure [L]
    successful_mean: dict[str, np.ndarray]
    p_value: dict[str, np.ndarray]
    permutations: int
    alpha: float  # layers with p < alpha are marked in the figure and counted in the summary

    def rows(self) -> list[dict]:
        rows = []
        for label in self.failed_mean:
            curves = zip(self.failed_mean[label], self.successful_mean[label], self.p_value[label])
            for layer, (f, s, p) in enumerate(curves):
                rows.append({"measure": label, "layer": layer + 1, "failed_mean": float(f), "successful_mean": float(s),
                             "difference": float(f - s), "p_value": float(p), "n_failed": len(self.failed_seeds),
                             "n_diverged": len(self.diverged_seeds), "n_successful": len(self.successful_seeds),
                             "checkpoint": self.checkpoint, "permutations": self.permutations})
        return rows


def failed_groups(
    failed: Sequence[bool], diverged: int, min_per_group: int,
) -> tuple[list[int], list[int], str | None]:
    """Positions of the failed and the successful runs with outputs (by the measured checkpoint's failure flag),
    or why the comparison is off; `diverged` runs are failed too but cannot enter a distance mean."""
    failed_at = [i for i, flag in enumerate(failed) if flag]
    successful_at = [i for i, flag in enumerate(failed) if not flag]
    if len(failed_at) < min_per_group or len(successful_at) < min_per_group:
        extra = f" (and {diverged} diverged, failed without outputs)" if diverged else ""
        return failed_at, successful_at, (f"{len(failed_at)} failed{extra} and {len(successful_at)} successful "
                                          f"run(s) with outputs; the comparison needs at least {min_per_group} of each")
    return failed_at, successful_at, None


def failed_vs_successful(
    pairs: PairMatrices, seeds: Sequence[int], failed_at: list[int], successful_at: list[int],
    permutations: int, rng: np.random.Generator, checkpoint: str = "final", diverged_seeds: Sequence[int] = (),
    alpha: float = 0.05,
) -> FailedRuns:
    """Per layer and representation measure: mean distance over failed-failed and over successful-successful
    pairs (cross pairs dropped), and a permutation test of their difference (runs shuffled between the groups,
    group sizes kept; two-sided p = (1 + #{|T*| >= |T|}) / (1 + permutations))."""
    pool = np.array(failed_at + successful_at)
    count = len(failed_at)

    def difference(stack: torch.Tensor, order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = layer_means(stack, torch.from_numpy(order[:count]), False).numpy()
        s = layer_means(stack, torch.from_numpy(order[count:]), False).numpy()
        return f, s

    shuffles = [rng.permutation(pool) for _ in range(permutations)]
    failed_mean, successful_mean, p_value = {}, {}, {}
    for label, stack in pairs.representation.items():
        f, s = difference(stack, pool)
        observed = np.abs(f - s)
        exceed = np.zeros_like(observed)
        for order in shuffles:
            pf, ps = difference(stack, order)
            exceed += np.abs(pf - ps) >= observed - 1e-12
        failed_mean[label], successful_mean[label] = f, s
        p_value[label] = np.where(np.isfinite(observed), (1 + exceed) / (1 + permutations), np.nan)
    return FailedRuns(checkpoint, [seeds[i] for i in failed_at], [seeds[i] for i in successful_at],
                      list(diverged_seeds), failed_mean, successful_mean, p_value, permutations, alpha)


# --- sub-sampling of the test half ----------------------------------------------------------------------------


def subsampling(
    data: SettingData, full: dict[str, np.ndarray], options: MeasureOptions, fractions: Sequence[float], draws: int,
    rng: np.random.Generator, advance: Callable[[int], None] = lambda steps: None,
) -> tuple[list[dict], list[str]]:
    """Every measure on `draws` random subsets of each fraction of the test half, against the full-data value:
    mean absolute change and relative change (mean absolute change / |full value|). Rows, and notes on
    measures undefined on some subset."""
    num_examples = data.gold.numel()
    rows, notes = [], []
    for fraction in fractions:
        size = max(2, int(round(fraction * num_examples)))
        drawn: dict[str, list[np.ndarray]] = {label: [] for label in ALL}
        for _ in range(draws):
            examples = torch.from_numpy(np.sort(rng.choice(num_examples, size=size, replace=False)))
            pairs = pair_matrices(data.logits, data.hidden, options, examples, data.runs, advance)
            scores = subset_scores(data.predictions[:, examples], data.gold[examples], data.metric)
            values, problems = measure_values(scores, data.predictions[:, examples], data.num_classes, pairs, options)
            where = f"fraction {fraction:g} ({size} examples)"
            notes += [f"{where}: {note}" for note in pairs.notes]
            notes += [f"{where}: {label} undefined: {why}" for label, why in problems.items()]
            for label in ALL:
                drawn[label].append(values[label])
        for label in ALL:
            stacked = np.stack([np.atleast_1d(v) for v in drawn[label]])  # [draws, L or 1]
            reference = np.atleast_1d(full[label])
            change = np.abs(stacked - reference)
            for layer in range(reference.size):
                mean_change = _nanmean(change[:, layer])
                rows.append({"measure": label, "layer": layer + 1 if label in REPRESENTATION else None,
                             "fraction": fraction, "examples": size, "draws": draws,
                             "defined_draws": int(np.isfinite(stacked[:, layer]).sum()),
                             "full_value": float(reference[layer]), "subset_mean": _nanmean(stacked[:, layer]),
                             "mean_abs_change": mean_change,
                             "relative_change": _relative(mean_change, float(reference[layer]))})
    return rows, notes


def _nanmean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if values.size else float("nan")


def _relative(change: float, reference: float) -> float:
    """change / |reference|; 0 when both are 0 (identical runs), NaN when only the reference is 0."""
    if reference != 0:
        return change / abs(reference)
    return 0.0 if change == 0 else float("nan")


# --- bootstrapping over seeds ----------------------------------------------------------------------------------


@dataclass
class Bootstrap:
    """Measures on resamples of the seeds, their percentile intervals and the correlation matrix of `measures`."""

    indices: np.ndarray  # [B, m] model positions of each replicate
    samples: dict[str, np.ndarray]  # per measure [B] or [B, L]
    low: dict[str, np.ndarray]
    high: dict[str, np.ndarray]
    measures: tuple[str, ...]  # those correlated (representation ones at the last layer)
    correlation: np.ndarray  # [K, K] over `measures`, across the replicates where all are defined
    used: int  # replicates in the correlation
    keep_self_pairs: bool
    confidence: float
    seeds: list[int]  # the seeds resampled

    def rows(self) -> list[dict]:
        return [{"measure_a": first, "measure_b": second, "pearson_r": float(self.correlation[a, b]),
                 "replicates": self.used} for a, first in enumerate(self.measures)
                for b, second in enumerate(self.measures)]

    def agreement(self) -> dict[str, float]:
        """Each measure's mean correlation with the others (SPEC: SD vs agreement). The released notebook's mean
        also counts the diagonal's 1, an affine change ((K-1) a + 1) / K that z-scoring across settings removes."""
        corr = self.correlation.copy()
        np.fill_diagonal(corr, np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return {label: float(np.nanmean(corr[k])) for k, label in enumerate(self.measures)}


def resampled_positions(seeds: Sequence[int], seeds_below: int | None) -> np.ndarray:
    """Positions of the runs a bootstrap resamples: all, or those with seed < `seeds_below` (the notebook: 10)."""
    positions = np.arange(len(seeds))
    return positions if seeds_below is None else positions[np.asarray(seeds) < seeds_below]


def bootstrap(
    data: SettingData, pairs: PairMatrices, options: MeasureOptions, replicates: int, keep_self_pairs: bool,
    confidence: float, rng: np.random.Generator, measures: Sequence[str] = PAPER, seeds_below: int | None = None,
) -> Bootstrap:
    """`replicates` resamples with replacement of the runs (all, or those with seed < `seeds_below`); every
    measure per replicate from the pair matrices, one self-pair convention for all (setting_measures' doc);
    percentile intervals; Pearson correlation of `measures` across the replicates."""
    pool = resampled_positions(data.seeds, seeds_below)
    if pool.size < 2:
        raise ValueError(f"{pool.size} run(s) with seed < {seeds_below}; a bootstrap needs at least 2")
    indices = rng.choice(pool, size=(replicates, pool.size), replace=True)
    predictions = data.predictions
    collected: dict[str, list[np.ndarray]] = {label: [] for label in ALL}
    for index in indices:
        values, _ = measure_values(data.scores, predictions, data.num_classes, pairs, options,
                                   torch.from_numpy(index), keep_self_pairs)
        for label in ALL:
            collected[label].append(values[label])
    samples = {label: np.stack(collected[label]) for label in ALL}
    tail = (1 - confidence) / 2 * 100
    low, high = {}, {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices (a measure undefined everywhere)
        for label, sample in samples.items():
            low[label] = np.nanpercentile(sample, tail, axis=0)
            high[label] = np.nanpercentile(sample, 100 - tail, axis=0)
    table = np.stack([samples[label] if samples[label].ndim == 1 else samples[label][:, -1] for label in measures], 1)
    table = table[np.isfinite(table).all(1)]
    corr = np.full((len(measures),) * 2, np.nan)
    if len(table) >= 3:
        varying = np.array([not flat(column) for column in table.T])
        corr[np.ix_(varying, varying)] = np.atleast_2d(np.corrcoef(table[:, varying], rowvar=False))
    return Bootstrap(indices, samples, low, high, tuple(measures), corr, len(table), keep_self_pairs, confidence,
                     [data.seeds[i] for i in pool])
